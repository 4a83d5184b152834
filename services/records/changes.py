"""The change log as readers see it: every write of a tenant, in commit order."""

from __future__ import annotations

from dataclasses import dataclass

from services.common.caller import Caller
from services.common.errors import OutOfRange
from services.kernel.records.access import owned_only, require_own_parent
from services.kernel.records.resource_types import BY_ENUM
from services.kernel.records.store import ChangeEntry, RecordStore


@dataclass(frozen=True)
class ChangePage:
    changes: list[ChangeEntry]
    head_sequence: int
    earliest_sequence: int
    next_after_sequence: int


class ChangeFeed:
    def __init__(self, store: RecordStore) -> None:
        self._store = store

    async def read(
        self,
        caller: Caller,
        tenant_id: str,
        after_sequence: int,
        page_size: int,
        resource_types: list[int],
    ) -> ChangePage:
        require_own_parent(caller, tenant_id, "read:changes")
        caller.require("read:changes", f"tenants/{tenant_id}")
        collections = [BY_ENUM[t].collection for t in resource_types]
        async with self._store.transaction(tenant_id) as tx:
            # Read the head first: every change up to it is committed (sequences
            # are handed out under a lock held to commit), so the page has no gaps.
            head = await tx.head_sequence()
            earliest = await tx.earliest_sequence()
            if after_sequence > head:
                raise OutOfRange(
                    f"after_sequence {after_sequence} is beyond the head of the change log ({head})"
                )
            if earliest and after_sequence < earliest - 1:
                raise OutOfRange(
                    f"changes up to {earliest - 1} are no longer kept; restart from {earliest - 1} "
                    "after a full resync"
                )
            changes = await tx.changes(
                after=after_sequence,
                up_to=head,
                limit=page_size,
                collections=collections,
                owned_only=owned_only(caller),
            )
        if changes:
            next_after = changes[-1].sequence
            # A short page means everything up to the head was scanned (with a type or
            # owner filter, the last change returned may be older than the head).
            if len(changes) < page_size:
                next_after = head
        else:
            next_after = head
        return ChangePage(changes, head, earliest, next_after)
