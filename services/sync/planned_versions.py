"""A record store that holds a batch write to the versions it was planned on.

An atomic PushChanges plans every change against the records it read, then
writes them all with `RecordWriter.upsert_many` (one transaction, one version
and one change-log entry per record). upsert_many replaces whatever it finds;
to keep a write that landed in between from being overwritten silently, the
writer is given this store: when upsert_many locks and reads the records, the
store checks each is still at its planned version (or still absent) and
otherwise aborts the transaction, so the batch is planned again. The check
runs on the locked rows inside the same transaction, so nothing slips between.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from hacs.records.v1 import record_pb2
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.db.engine import Database
from services.common.errors import Conflict
from services.kernel.records.store import RecordStore, RecordTx


class PlanOutdated(Conflict):
    def __init__(self, collection: str, record_id: str) -> None:
        super().__init__(
            f"{collection}/{record_id} changed while the batch was planned", kind="ETAG"
        )


class _PlannedTx(RecordTx):
    def __init__(
        self,
        session: AsyncSession,
        tenant_id: str,
        is_postgres: bool,
        planned: dict[tuple[str, str], int],
    ) -> None:
        super().__init__(session, tenant_id, is_postgres)
        self._planned = planned

    async def get_many(
        self, keys: Sequence[tuple[str, str]], *, for_update: bool = False
    ) -> dict[tuple[str, str], record_pb2.Record]:
        found = await super().get_many(keys, for_update=for_update)
        if for_update:
            for key in keys:
                expected = self._planned.get(key)
                actual = found[key].version if key in found else 0
                if expected is not None and actual != expected:
                    raise PlanOutdated(*key)
        return found


class PlannedVersionsStore(RecordStore):
    """`planned` maps (collection, id) to the version planned on; 0 means "must not exist"."""

    def __init__(self, db: Database, planned: dict[tuple[str, str], int]) -> None:
        super().__init__(db)
        self._planned = planned

    @asynccontextmanager
    async def transaction(self, tenant_id: str) -> AsyncIterator[RecordTx]:
        # As RecordStore.transaction, with the checking transaction object.
        async with self.db.transaction(tenant_id) as session:
            yield _PlannedTx(session, tenant_id, self.db.is_postgres, self._planned)
