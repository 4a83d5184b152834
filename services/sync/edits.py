"""Applying one field-level edit to one record: read, plan, write through RecordWriter.

Every accepted edit is an ordinary `RecordWriter.update` (one new version,
one change-log entry) with the etag of the version it was planned on. If
another writer got there first, the write is refused and the edit is planned
again on the newer version, so an edit is never applied to a state it was
not checked against. Used by Collaborate (live sessions) and PushChanges.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from google.protobuf.field_mask_pb2 import FieldMask
from hacs.records.v1 import record_pb2

from services.common.caller import Caller
from services.common.errors import Conflict
from services.kernel.records.access import may_access
from services.kernel.records.envelope import OUTPUT_ONLY
from services.kernel.records.names import RecordName
from services.kernel.records.store import RecordStore
from services.kernel.records.writes import RecordWriter
from services.sync.merge import Author, Patch, UpdatePlan, plan_update
from services.sync.stamps import Stamp, WriteStamps
from services.sync.to_completion import to_completion

# How many versions back the merge looks for who changed a field.
MAX_LOOKBACK = 200
MAX_ATTEMPTS = 8


class ConcurrentWrite(Exception):
    """Another writer changed the record between our read and our write: plan again."""


@dataclass(frozen=True)
class Snapshot:
    """A record as the server holds it, with its versions since an edit's base."""

    current: record_pb2.Record | None  # None: no such record
    versions: list[record_pb2.Record]  # base .. current (empty when the base is unusable)
    stamps: dict[int, Stamp] = field(default_factory=dict)  # client times of those versions

    @property
    def deleted(self) -> bool:
        return self.current is not None and self.current.HasField("delete_time")


def author_of(
    caller: Caller, client_id: str, client_time: datetime | None, received: datetime
) -> Author:
    """The edit's author; the client's clock may not claim a time after the server's."""
    when = received if client_time is None else min(client_time, received)
    return Author(caller.actor_name, client_id, when)


def same_content(existing: record_pb2.Record, pushed: record_pb2.Record) -> bool:
    """Would writing `pushed` leave `existing` as it is? (output-only fields aside)"""
    left, right = record_pb2.Record(), record_pb2.Record()
    left.CopyFrom(existing)
    right.CopyFrom(pushed)
    for record in (left, right):
        for name in OUTPUT_ONLY:
            record.ClearField(name)  # type: ignore[arg-type]
    return left.SerializeToString(deterministic=True) == right.SerializeToString(deterministic=True)


class RecordEdits:
    def __init__(self, store: RecordStore, writer: RecordWriter, stamps: WriteStamps) -> None:
        self._store = store
        self.writer = writer
        self.stamps = stamps

    async def current(self, name: RecordName, caller: Caller | None) -> record_pb2.Record | None:
        """The record as it is now; None when there is none, or none this caller may see
        (caller None: the process itself, e.g. a session its participants share)."""
        return await to_completion(self._current(name, caller))

    async def _current(self, name: RecordName, caller: Caller | None) -> record_pb2.Record | None:
        async with self._store.transaction(name.tenant_id) as tx:
            current = await tx.get(name.info.collection, name.id)
        if current is None or caller is None or may_access(caller, current):
            return current
        return None

    async def snapshot(self, name: RecordName, base_version: int, caller: Caller) -> Snapshot:
        """The record now and its versions since `base_version` (empty for another owner's)."""
        return await to_completion(self._snapshot(name, base_version, caller))

    async def _snapshot(self, name: RecordName, base_version: int, caller: Caller) -> Snapshot:
        collection, record_id = name.info.collection, name.id
        async with self._store.transaction(name.tenant_id) as tx:
            current = await tx.get(collection, record_id)
            if current is not None and not may_access(caller, current):
                return Snapshot(None, [])  # another owner's record: as if there were none
            if current is None or not 1 <= base_version <= current.version:
                return Snapshot(current, [])
            span = current.version - base_version + 1
            history = await tx.history(
                collection, record_id, before_version=None, limit=min(span, MAX_LOOKBACK)
            )
            versions = list(reversed(history))
            if not versions or versions[0].version != base_version:
                base = await tx.get_version(collection, record_id, base_version)
                if base is None:  # history gone (erased): treat as based on the current one
                    return Snapshot(current, [])
                versions.insert(0, base)
        later = [v.version for v in versions[1:]]
        return Snapshot(current, versions, await self.stamps.get(str(name), later))

    def plan(
        self,
        snapshot: Snapshot,
        patches: list[Patch],
        author: Author,
        own: frozenset[int] = frozenset(),
    ) -> UpdatePlan:
        return plan_update(snapshot.versions, patches, author, snapshot.stamps, own)

    async def write(self, caller: Caller, plan: UpdatePlan, stamp: Stamp) -> record_pb2.Record:
        """Write a plan with the etag it was made on; ConcurrentWrite if that version moved."""
        assert plan.record is not None
        try:
            written = await to_completion(
                self.writer.update(caller, plan.record, FieldMask(paths=plan.mask))
            )
        except Conflict as error:  # stale etag, or deleted meanwhile: the next plan will tell
            raise ConcurrentWrite(error.message) from error
        # When (by its author's clock) this version was made, for later merges.
        await self.stamps.put(written.name, written.version, stamp)
        return written
