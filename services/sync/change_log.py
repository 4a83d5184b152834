"""The records change log as the sync service reads it: pages of `LogEvent`s.

One reader serves both replay (a stream catching up from its cursor) and the
live tail (one reader per tenant per process), so both deliver exactly the
same events. Every read takes the head first: sequences are handed out under
a per-tenant lock held to commit, so every change up to the head is visible
and a page never has a gap.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from hacs.records.v1 import change_pb2, record_pb2
from hacs.sync.v1 import sync_service_pb2 as pb

from services.common.errors import OutOfRange
from services.kernel.records.convert import change_to_proto
from services.kernel.records.store import ChangeEntry, RecordStore
from services.sync import cursors
from services.sync.to_completion import to_completion


@dataclass(eq=False)
class LogEvent:
    """One change, shared (read-only) by every stream it is delivered to."""

    sequence: int
    collection: str
    name: str
    operation: str
    version: int
    # The compartments the change touches: the record's patient now and before.
    patients: tuple[str, ...]
    labels: dict[str, str]
    change: change_pb2.Change
    cursor: str
    owner: str | None = None  # the record's owner then, for types with owners
    # The record version written, loaded when some reader asked for records.
    record: record_pb2.Record | None = None
    _responses: dict[bool, pb.WatchResponse] = field(default_factory=dict)

    def response(self, with_record: bool) -> pb.WatchResponse:
        """The Watch message for this event, built once for every stream that sends it."""
        message = self._responses.get(with_record)
        if message is None:
            event = pb.ChangeEvent(cursor=self.cursor, change=self.change)
            if with_record and self.record is not None:
                event.record.CopyFrom(self.record)
            message = self._responses[with_record] = pb.WatchResponse(change=event)
        return message


@dataclass(frozen=True)
class LogPage:
    events: list[LogEvent]
    # Every change up to here was looked at (matching or not).
    scanned_to: int
    head: int


@dataclass(frozen=True)
class LogBounds:
    earliest: int
    head: int
    head_commit_time: datetime | None


def to_event(tenant_id: str, entry: ChangeEntry) -> LogEvent:
    change = change_to_proto(tenant_id, entry)
    patients = tuple(p for p in (change.patient, change.previous_patient) if p)
    return LogEvent(
        sequence=entry.sequence,
        collection=entry.collection,
        name=change.name,
        operation=entry.operation,
        version=entry.version,
        patients=patients,
        labels=dict(entry.labels),
        change=change,
        cursor=cursors.encode(tenant_id, entry.sequence),
        owner=entry.owner,
    )


class ChangeLogReader:
    """Reads for Watch and the tail; each runs to completion (see to_completion.py)."""

    def __init__(self, store: RecordStore) -> None:
        self._store = store

    async def bounds(self, tenant_id: str) -> LogBounds:
        return await to_completion(self._bounds(tenant_id))

    async def _bounds(self, tenant_id: str) -> LogBounds:
        async with self._store.transaction(tenant_id) as tx:
            head = await tx.head_sequence()
            earliest = await tx.earliest_sequence()
            last = await tx.changes(after=head - 1, up_to=head, limit=1, collections=None)
        return LogBounds(earliest, head, last[0].commit_time if last else None)

    async def head(self, tenant_id: str) -> int:
        return await to_completion(self._head(tenant_id))

    async def _head(self, tenant_id: str) -> int:
        async with self._store.transaction(tenant_id) as tx:
            return await tx.head_sequence()

    async def last_sequence_of(
        self, tenant_id: str, after: int, written: set[tuple[str, str, int]]
    ) -> int | None:
        """The newest sequence, after `after`, of the (collection, id, version) writes given."""
        return await to_completion(self._last_sequence_of(tenant_id, after, written))

    async def _last_sequence_of(
        self, tenant_id: str, after: int, written: set[tuple[str, str, int]]
    ) -> int | None:
        wanted = set(written)
        found: int | None = None
        while wanted:
            async with self._store.transaction(tenant_id) as tx:
                head = await tx.head_sequence()
                entries = await tx.changes(after=after, up_to=head, limit=1000, collections=None)
            for entry in entries:
                key = (entry.collection, entry.record_id, entry.version)
                if key in wanted:
                    wanted.discard(key)
                    found = entry.sequence
            if len(entries) < 1000:
                break
            after = entries[-1].sequence
        return found

    async def check_resumable(self, tenant_id: str, after: int, field_name: str) -> LogBounds:
        """OUT_OF_RANGE for a position beyond the head or older than the retained log."""
        bounds = await self.bounds(tenant_id)
        if after > bounds.head:
            raise OutOfRange(
                f"{field_name} is at sequence {after}, beyond the head of the change log "
                f"({bounds.head}); start again from GetSyncCursor"
            )
        if bounds.earliest and after < bounds.earliest - 1:
            raise OutOfRange(
                f"{field_name} is at sequence {after}, but changes up to {bounds.earliest - 1} "
                "are no longer kept; resync the records, then watch from GetSyncCursor"
            )
        return bounds

    async def read(
        self,
        tenant_id: str,
        *,
        after: int,
        limit: int,
        up_to: int | None = None,
        collections: Sequence[str] | None = None,
        wants_record: Callable[[LogEvent], bool] | None = None,
    ) -> LogPage:
        """Changes after `after` (up to `up_to` or the head), with records where wanted."""
        page = self._read(
            tenant_id,
            after=after,
            limit=limit,
            up_to=up_to,
            collections=collections,
            wants_record=wants_record,
        )
        return await to_completion(page)

    async def _read(
        self,
        tenant_id: str,
        *,
        after: int,
        limit: int,
        up_to: int | None = None,
        collections: Sequence[str] | None = None,
        wants_record: Callable[[LogEvent], bool] | None = None,
    ) -> LogPage:
        async with self._store.transaction(tenant_id) as tx:
            head = await tx.head_sequence()
            end = head if up_to is None else min(up_to, head)
            if end <= after:
                return LogPage([], after, head)
            entries = await tx.changes(
                after=after, up_to=end, limit=limit, collections=list(collections or ()) or None
            )
            events = [to_event(tenant_id, entry) for entry in entries]
            if wants_record is not None:
                for event in events:
                    if event.operation != "PURGE" and wants_record(event):
                        event.record = await tx.get_version(
                            event.collection, event.name.rsplit("/", 1)[1], event.version
                        )
        scanned_to = events[-1].sequence if len(entries) == limit else end
        return LogPage(events, scanned_to, head)

    async def record_of(self, tenant_id: str, event: LogEvent) -> record_pb2.Record | None:
        """The version an event wrote (None for PURGE or a version no longer kept)."""
        return await to_completion(self._record_of(tenant_id, event))

    async def _record_of(self, tenant_id: str, event: LogEvent) -> record_pb2.Record | None:
        if event.operation == "PURGE":
            return None
        async with self._store.transaction(tenant_id) as tx:
            return await tx.get_version(
                event.collection, event.name.rsplit("/", 1)[1], event.version
            )
