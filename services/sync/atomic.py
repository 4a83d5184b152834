"""Atomic PushChanges: plan every change, then write all of them or none.

Changes are planned in order against a draft of each record: its versions
from the database, followed by the versions this push would add (its own,
never in conflict with it). Several changes to one record fold into one
write. If any change is a CONFLICT or REJECTED, nothing is written and every
other change is NOT_APPLIED. Otherwise the drafts are written by
`RecordWriter.upsert_many` in one transaction, held to the versions they were
planned on (`PlannedVersionsStore`); if a record moved meanwhile, the whole
push is planned again.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from hacs.records.v1 import record_pb2
from hacs.sync.v1 import sync_service_pb2 as pb
from sqlalchemy.exc import IntegrityError

from services.common.caller import Caller
from services.common.errors import Conflict, HacsError, Invalid
from services.common.validation import Violations
from services.kernel.records.access import may_access
from services.kernel.records.content import check_record
from services.kernel.records.names import RecordName
from services.kernel.records.store import RecordStore
from services.kernel.records.write_plans import Upsert, UpsertOutcome
from services.kernel.records.writes import RecordWriter
from services.sync.edits import MAX_ATTEMPTS, RecordEdits, Snapshot
from services.sync.field_paths import PathError
from services.sync.merge import plan_update
from services.sync.offline import (
    APPLIED,
    CONFLICT,
    CONTENDED,
    CREATE,
    DELETE,
    MERGED,
    NOT_APPLIED,
    REJECTED,
    OfflineItem,
    Written,
    delete_verdict,
    existing_on_create,
    rejected_plan,
    unwritten_plan,
    update_verdict,
)
from services.sync.stamps import Stamp
from services.sync.to_completion import to_completion

WriterFor = Callable[[dict[tuple[str, str], int]], RecordWriter]


class _Moved(Exception):
    """A record changed while the push was being planned: plan it again."""


@dataclass
class _Draft:
    """One record as this push would leave it."""

    name: RecordName
    real: record_pb2.Record | None  # as read from the database
    virtual: list[record_pb2.Record] = field(default_factory=list)  # what the push adds
    items: list[int] = field(default_factory=list)  # positions of the changes that wrote it

    @property
    def key(self) -> tuple[str, str]:
        return (self.name.info.collection, self.name.id)

    @property
    def latest(self) -> record_pb2.Record | None:
        return self.virtual[-1] if self.virtual else self.real

    @property
    def own(self) -> frozenset[int]:
        return frozenset(v.version for v in self.virtual)

    def add(self, record: record_pb2.Record, position: int) -> None:
        latest = self.latest
        record.version = (latest.version if latest else 0) + 1
        self.virtual.append(record)
        self.items.append(position)

    def upsert(self) -> Upsert | None:
        """The one write this record needs (None: created and deleted within the push)."""
        latest = self.latest
        if not self.virtual or latest is None:
            return None
        if latest.HasField("delete_time"):
            return Upsert(self.name.info, self.name.id, None) if self.real else None
        return Upsert(self.name.info, self.name.id, latest)


class AtomicPush:
    def __init__(self, edits: RecordEdits, store: RecordStore, writer_for: WriterFor) -> None:
        self._edits = edits
        self._store = store
        self._writer_for = writer_for

    async def apply(
        self, caller: Caller, tenant_id: str, items: list[OfflineItem]
    ) -> tuple[list[pb.PushResult], set[Written]]:
        for _ in range(MAX_ATTEMPTS):
            try:
                results, drafts = await self._plan(tenant_id, caller, items)
            except _Moved:
                continue
            if any(r.outcome in (CONFLICT, REJECTED) for r in results):
                return _not_applied(items, results), set()
            writes = [(d, u) for d in drafts.values() if (u := d.upsert()) is not None]
            if not writes:
                return results, set()
            planned = {d.key: d.real.version if d.real else 0 for d, _ in writes}
            try:
                outcomes = await to_completion(
                    self._writer_for(planned).upsert_many(
                        caller, tenant_id, [u for _, u in writes], labels={}
                    )
                )
            except (Conflict, IntegrityError):
                continue  # a record moved, or was created, since we read it: plan again
            except Invalid as error:
                return _rejected_by_write(items, results, [d for d, _ in writes], error), set()
            except HacsError as error:
                return [item.result(REJECTED, reason=error.message) for item in items], set()
            return await self._finish(tenant_id, caller, items, results, writes, outcomes)
        return [item.result(REJECTED, reason=CONTENDED) for item in items], set()

    async def _plan(
        self, tenant_id: str, caller: Caller, items: list[OfflineItem]
    ) -> tuple[list[pb.PushResult], dict[str, _Draft]]:
        results: list[pb.PushResult] = []
        drafts: dict[str, _Draft] = {}
        for position, item in enumerate(items):
            if item.name is None:
                results.append(item.result(REJECTED, reason=item.problem))
                continue
            snapshot = await self._edits.snapshot(item.name, item.change.base_version, caller)
            draft = drafts.get(item.change.name)
            if draft is None:
                draft = drafts[item.change.name] = _Draft(item.name, snapshot.current)
            elif _version(snapshot.current) != _version(draft.real):
                raise _Moved()
            results.append(self._plan_one(tenant_id, caller, item, draft, snapshot, position))
        return results, drafts

    def _plan_one(
        self,
        tenant_id: str,
        caller: Caller,
        item: OfflineItem,
        draft: _Draft,
        snapshot: Snapshot,
        position: int,
    ) -> pb.PushResult:
        """Plan one change on the draft (adding to it); the result says the outcome so far."""
        operation = item.change.operation
        latest = draft.latest
        if operation == CREATE:
            if latest is not None:
                return existing_on_create(item, latest, caller, snapshot.stamps)
            violations = Violations()
            where = f"changes[{position}].record"
            check_record(item.change.record, where, violations, tenant_id=tenant_id)
            if violations.items:
                return item.result(REJECTED, reason=Invalid(violations.items).message)
            draft.add(_copy(item.change.record), position)
            return item.result(APPLIED)
        if operation == DELETE:
            stamps = snapshot.stamps if draft.real is latest else {}
            verdict = delete_verdict(item, latest, draft.own, stamps)
            if verdict is not None:
                return verdict
            assert latest is not None
            gone = _copy(latest)
            gone.delete_time.GetCurrentTime()
            draft.add(gone, position)
            return item.result(APPLIED)
        versions = [*snapshot.versions, *draft.virtual] if snapshot.versions else draft.virtual
        view = Snapshot(latest, versions, snapshot.stamps)
        verdict = update_verdict(item, view, item.change.base_version)
        if verdict is not None:
            return verdict
        assert latest is not None
        if (earlier := item.applied_in(snapshot.stamps)) is not None:
            return item.result(APPLIED, record=latest, new_version=earlier)
        try:
            update = plan_update(versions, item.patches, item.author, snapshot.stamps, draft.own)
        except PathError as error:
            return item.result(REJECTED, record=latest, reason=str(error))
        if update.rejected:
            return rejected_plan(item, latest, update, item.change.base_version)
        if not update.applied:
            return unwritten_plan(item, latest, update)
        assert update.record is not None
        violations = Violations()
        check_record(update.record, f"changes[{position}]", violations, tenant_id=tenant_id)
        if violations.items:
            return item.result(REJECTED, record=latest, reason=Invalid(violations.items).message)
        draft.add(update.record, position)
        outcome = MERGED if update.merged or update.dropped else APPLIED
        return item.result(outcome, conflicts=update.dropped)

    async def _finish(
        self,
        tenant_id: str,
        caller: Caller,
        items: list[OfflineItem],
        results: list[pb.PushResult],
        writes: list[tuple[_Draft, Upsert]],
        outcomes: list[UpsertOutcome],
    ) -> tuple[list[pb.PushResult], set[Written]]:
        written: set[Written] = set()
        by_position: dict[int, int] = {}
        for (draft, _), outcome in zip(writes, outcomes, strict=True):
            written.add((*draft.key, outcome.version))
            by_position.update(dict.fromkeys(draft.items, outcome.version))
            last = items[draft.items[-1]].author
            change_ids = tuple(items[i].change.change_id for i in draft.items)
            await self._edits.stamps.put(
                str(draft.name), outcome.version, Stamp(last.time, last.client_id, change_ids)
            )
        keys = list({(i.name.info.collection, i.name.id) for i in items if i.name is not None})
        now = await to_completion(_read_current(self._store, tenant_id, keys))
        for position, (item, result) in enumerate(zip(items, results, strict=True)):
            assert item.name is not None
            record = now.get((item.name.info.collection, item.name.id))
            if record is not None and may_access(caller, record):
                result.record.CopyFrom(record)
                result.current_version = record.version
            if position in by_position:
                result.new_version = by_position[position]
        return results, written


async def _read_current(
    store: RecordStore, tenant_id: str, keys: list[tuple[str, str]]
) -> dict[tuple[str, str], record_pb2.Record]:
    async with store.transaction(tenant_id) as tx:
        return await tx.get_many(keys)


def _version(record: record_pb2.Record | None) -> int:
    return record.version if record is not None else 0


def _copy(record: record_pb2.Record) -> record_pb2.Record:
    copy = record_pb2.Record()
    copy.CopyFrom(record)
    return copy


def _not_applied(items: list[OfflineItem], results: list[pb.PushResult]) -> list[pb.PushResult]:
    final = []
    for item, result in zip(items, results, strict=True):
        if result.outcome not in (CONFLICT, REJECTED):
            kept = result.record if result.HasField("record") else None
            result = item.result(
                NOT_APPLIED, record=kept, reason="another change of this atomic push failed"
            )
        final.append(result)
    return final


_ENTRY = re.compile(r"^entry\[(\d+)\]")


def _rejected_by_write(
    items: list[OfflineItem],
    results: list[pb.PushResult],
    drafts: list[_Draft],
    error: Invalid,
) -> list[pb.PushResult]:
    """A check only the write could make failed (e.g. a referenced patient is gone)."""
    blamed: set[int] = set()
    for violation in error.violations:
        match = _ENTRY.match(violation.field)
        if match and int(match[1]) < len(drafts):
            blamed.update(drafts[int(match[1])].items)
    if not blamed:
        blamed = set(range(len(items)))
    marked = list(results)
    for position in blamed:
        marked[position] = items[position].result(REJECTED, reason=error.message)
    return _not_applied(items, marked)
