"""How far each index has read a tenant's change log (the `index_cursors` table).

Every consumer that keeps an index in step with the change log (the search
service's record indexer, the memory index) saves its cursor only after the
index accepted the documents, so a crash replays (idempotent upserts) rather
than skips.
"""

from __future__ import annotations

from datetime import datetime

from services.common.db.base import utcnow
from services.common.db.engine import Database
from services.kernel.retrieval.tables import IndexCursorRow


class IndexCursors:
    """The cursors of one index (by name), per tenant."""

    def __init__(self, db: Database, index_name: str) -> None:
        self._db = db
        self._name = index_name

    async def read(self, tenant_id: str) -> tuple[int, datetime | None]:
        """(last sequence applied, when) — (0, None) before the first."""
        async with self._db.read(tenant_id) as session:
            row = await session.get(IndexCursorRow, (tenant_id, self._name))
        return (row.last_sequence, row.update_time) if row else (0, None)

    async def save(self, tenant_id: str, sequence: int, *, only_forward: bool = True) -> None:
        """Record `sequence` as applied (a rebuild may move the cursor back: only_forward=False)."""
        async with self._db.transaction(tenant_id) as session:
            row = await session.get(IndexCursorRow, (tenant_id, self._name), with_for_update=True)
            if row is None:
                session.add(
                    IndexCursorRow(
                        tenant_id=tenant_id,
                        index_name=self._name,
                        last_sequence=sequence,
                        update_time=utcnow(),
                    )
                )
            elif sequence > row.last_sequence or not only_forward:
                row.last_sequence = sequence
                row.update_time = utcnow()
