"""Offline changes (PushChanges), and applying them one at a time.

Each change carries the version it was made on. An UPDATE is planned like a
live edit (see merge.py); a CREATE names its record with a client-chosen id,
so a retried push cannot create twice; a DELETE must be based on the current
version.

Retries: every version a push writes is stamped with the client id and the
change ids it applied (`stamps.py`). A change found there was applied
already: it comes back APPLIED with the version it produced then, and
nothing is written again. (Past the stamps' lifetime, a CREATE whose record
exists with the same content, from the same actor, still counts as applied.)

Within one push, the versions its earlier changes wrote are the client's own:
a later change to the same record, made on the same base, is not in conflict
with them — but still is with anybody else's change since that base.

A non-atomic push applies each change on its own (one version each), here;
an atomic one is planned whole and written in one transaction (`atomic.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from hacs.records.v1 import change_pb2, record_pb2
from hacs.sync.v1 import patch_pb2
from hacs.sync.v1 import sync_service_pb2 as pb

from services.common.caller import Caller
from services.common.errors import AlreadyExists, Conflict, HacsError
from services.kernel.records.names import RecordName, parse_record_name
from services.kernel.records.resource_types import of_record
from services.kernel.records.write_plans import NewRecord
from services.sync.edits import (
    MAX_ATTEMPTS,
    ConcurrentWrite,
    RecordEdits,
    Snapshot,
    author_of,
    same_content,
)
from services.sync.field_paths import PathError, resolve
from services.sync.merge import Author, Patch, UpdatePlan
from services.sync.stamps import Stamp
from services.sync.to_completion import to_completion

CREATE = change_pb2.CHANGE_OPERATION_CREATE
UPDATE = change_pb2.CHANGE_OPERATION_UPDATE
DELETE = change_pb2.CHANGE_OPERATION_DELETE

APPLIED = pb.PUSH_OUTCOME_APPLIED
MERGED = pb.PUSH_OUTCOME_MERGED
CONFLICT = pb.PUSH_OUTCOME_CONFLICT
REJECTED = pb.PUSH_OUTCOME_REJECTED
NOT_APPLIED = pb.PUSH_OUTCOME_NOT_APPLIED

Written = tuple[str, str, int]  # (collection, id, version) of a change-log entry we caused
CONTENDED = "the record kept changing while this change was applied; push it again"


@dataclass
class OfflineItem:
    """One change of a push, parsed; `problem` set means it is REJECTED as sent."""

    change: pb.OfflineChange
    name: RecordName | None
    patches: list[Patch]
    author: Author
    problem: str = ""

    @property
    def stamp(self) -> Stamp:
        return Stamp(self.author.time, self.author.client_id, (self.change.change_id,))

    def applied_in(self, stamps: dict[int, Stamp]) -> int | None:
        """The version that applied this very change before (a retried push), if any."""
        for version, stamp in sorted(stamps.items()):
            if stamp.applied(self.author.client_id, self.change.change_id):
                return version
        return None

    def result(
        self,
        outcome: int,
        *,
        record: record_pb2.Record | None = None,
        new_version: int = 0,
        conflicts: list[patch_pb2.FieldConflict] | None = None,
        reason: str = "",
    ) -> pb.PushResult:
        result = pb.PushResult(
            change_id=self.change.change_id,
            name=self.change.name,
            outcome=outcome,  # type: ignore[arg-type]
            new_version=new_version,
            conflicts=conflicts or [],
            reason=reason,
        )
        if record is not None:
            result.record.CopyFrom(record)
            result.current_version = record.version
        return result


class PushChain:
    """The versions this push has written (or found applied), per record."""

    def __init__(self) -> None:
        self._own: dict[str, set[int]] = {}

    def own(self, name: str) -> frozenset[int]:
        return frozenset(self._own.get(name, ()))

    def wrote(self, name: str, version: int) -> None:
        self._own.setdefault(name, set()).add(version)


def parse_items(
    caller: Caller, tenant_id: str, request: pb.PushChangesRequest, received: datetime
) -> list[OfflineItem]:
    items = []
    for change in request.changes:
        client_time = (
            change.client_time.ToDatetime(tzinfo=UTC) if change.HasField("client_time") else None
        )
        item = OfflineItem(
            change, None, [], author_of(caller, request.client_id, client_time, received)
        )
        items.append(item)
        name = parse_record_name(change.name)
        if name.tenant_id != tenant_id:
            item.problem = f"{change.name} is not a record of tenants/{tenant_id}"
            continue
        if not caller.can(f"write:{name.info.permission}"):
            item.problem = (
                f"actor {caller.actor_name!r} lacks permission 'write:{name.info.permission}'"
            )
            continue
        if change.operation == CREATE and of_record(change.record) is not name.info:
            item.problem = f"the record is not a {name.info.name}, as {change.name} names one"
            continue
        try:
            item.patches = [Patch.from_proto(p, resolve(p.path)) for p in change.patches]
        except PathError as error:
            item.problem = str(error)
            continue
        item.name = name
    return items


class SequentialPush:
    """Each change on its own: applied (one version), merged, or reported."""

    def __init__(self, edits: RecordEdits) -> None:
        self._edits = edits

    async def apply(
        self, caller: Caller, tenant_id: str, items: list[OfflineItem]
    ) -> tuple[list[pb.PushResult], set[Written]]:
        chain = PushChain()
        results: list[pb.PushResult] = []
        written: set[Written] = set()
        for item in items:
            if item.name is None:
                results.append(item.result(REJECTED, reason=item.problem))
                continue
            apply = {CREATE: self._create, UPDATE: self._update, DELETE: self._delete}
            own = chain.own(item.change.name)
            result, wrote = await apply[item.change.operation](
                caller, tenant_id, item, item.name, own
            )
            if result.outcome in (APPLIED, MERGED) and result.new_version:
                chain.wrote(item.change.name, result.new_version)
            if wrote:
                written.add((item.name.info.collection, item.name.id, result.new_version))
            results.append(result)
        return results, written

    async def _update(
        self,
        caller: Caller,
        tenant_id: str,
        item: OfflineItem,
        name: RecordName,
        own: frozenset[int],
    ) -> tuple[pb.PushResult, bool]:
        base = item.change.base_version
        for _ in range(MAX_ATTEMPTS):
            snapshot = await self._edits.snapshot(name, base, caller)
            verdict = update_verdict(item, snapshot, base)
            if verdict is not None:
                return verdict, False
            current = snapshot.current
            assert current is not None
            if (earlier := item.applied_in(snapshot.stamps)) is not None:
                return item.result(APPLIED, record=current, new_version=earlier), False
            try:
                plan = self._edits.plan(snapshot, item.patches, item.author, own)
            except PathError as error:
                return item.result(REJECTED, record=current, reason=str(error)), False
            if plan.rejected:
                return rejected_plan(item, current, plan, base), False
            if not plan.applied:  # already the server's values, or every patch lost
                return unwritten_plan(item, current, plan), False
            try:
                record = await self._edits.write(caller, plan, item.stamp)
            except ConcurrentWrite:
                continue
            except HacsError as error:
                return item.result(REJECTED, record=current, reason=error.message), False
            outcome = MERGED if plan.merged or plan.dropped else APPLIED
            result = item.result(
                outcome, record=record, new_version=record.version, conflicts=plan.dropped
            )
            return result, True
        return item.result(REJECTED, reason=CONTENDED), False

    async def _create(
        self,
        caller: Caller,
        tenant_id: str,
        item: OfflineItem,
        name: RecordName,
        own: frozenset[int],
    ) -> tuple[pb.PushResult, bool]:
        for _ in range(MAX_ATTEMPTS):
            existing = await self._edits.current(name, caller)
            if existing is not None:
                stamps = await self._edits.stamps.get(str(name), [1])
                return existing_on_create(item, existing, caller, stamps), False
            try:
                new = NewRecord(name.id, item.change.record)
                created = await to_completion(self._edits.writer.create(caller, tenant_id, new))
            except AlreadyExists:
                continue  # created concurrently: look again
            except HacsError as error:
                return item.result(REJECTED, reason=error.message), False
            await self._edits.stamps.put(created.name, created.version, item.stamp)
            return item.result(APPLIED, record=created, new_version=created.version), True
        return item.result(REJECTED, reason=CONTENDED), False

    async def _delete(
        self,
        caller: Caller,
        tenant_id: str,
        item: OfflineItem,
        name: RecordName,
        own: frozenset[int],
    ) -> tuple[pb.PushResult, bool]:
        for _ in range(MAX_ATTEMPTS):
            existing = await self._edits.current(name, caller)
            stamps = await self._edits.stamps.get(str(name), [existing.version]) if existing else {}
            verdict = delete_verdict(item, existing, own, stamps)
            if verdict is not None:
                return verdict, False
            assert existing is not None
            try:
                deleted = await to_completion(
                    self._edits.writer.delete(
                        caller, str(name), existing.etag, f"offline change {item.change.change_id}"
                    )
                )
            except Conflict:
                continue  # changed or deleted meanwhile: decide again
            except HacsError as error:
                return item.result(REJECTED, record=existing, reason=error.message), False
            await self._edits.stamps.put(deleted.name, deleted.version, item.stamp)
            return item.result(APPLIED, record=deleted, new_version=deleted.version), True
        return item.result(REJECTED, reason=CONTENDED), False


def update_verdict(item: OfflineItem, snapshot: Snapshot, base: int) -> pb.PushResult | None:
    """The result of an UPDATE decided before planning, or None to plan it."""
    current = snapshot.current
    if current is None:
        return item.result(REJECTED, reason=f"{item.change.name} does not exist")
    if snapshot.deleted:
        return item.result(
            CONFLICT, record=current, reason=f"record was deleted in version {current.version}"
        )
    if not snapshot.versions:
        return item.result(
            REJECTED,
            record=current,
            reason=f"base_version {base} is not a version of {item.change.name} "
            f"(the server holds version {current.version})",
        )
    return None


def rejected_plan(
    item: OfflineItem, current: record_pb2.Record, plan: UpdatePlan, base: int
) -> pb.PushResult:
    return item.result(
        CONFLICT,
        record=current,
        conflicts=plan.conflicts,
        reason=f"fields that are never merged silently changed since base_version {base}: "
        + ", ".join(c.path for c in plan.conflicts),
    )


def unwritten_plan(
    item: OfflineItem, current: record_pb2.Record, plan: UpdatePlan
) -> pb.PushResult:
    """Nothing to write: the server holds these values already, or every patch lost."""
    outcome = MERGED if plan.dropped else APPLIED
    return item.result(outcome, record=current, new_version=current.version, conflicts=plan.dropped)


def existing_on_create(
    item: OfflineItem, existing: record_pb2.Record, caller: Caller, stamps: dict[int, Stamp]
) -> pb.PushResult:
    """A CREATE whose id is taken: a retry of this very create, or a conflict."""
    retried = item.applied_in(stamps) is not None or (
        not existing.HasField("delete_time")
        and existing.created_by.name == caller.actor_name
        and same_content(existing, item.change.record)
    )
    if retried:
        return item.result(APPLIED, record=existing, new_version=1)
    state = "was deleted" if existing.HasField("delete_time") else "exists"
    return item.result(
        CONFLICT,
        record=existing,
        reason=f"{existing.name} already {state} (version {existing.version})",
    )


def delete_verdict(
    item: OfflineItem,
    existing: record_pb2.Record | None,
    own: frozenset[int],
    stamps: dict[int, Stamp],
) -> pb.PushResult | None:
    """The result of a DELETE decided without writing, or None when it may be written."""
    if existing is None:
        return item.result(REJECTED, reason=f"{item.change.name} does not exist")
    base = item.change.base_version
    if existing.HasField("delete_time"):
        if item.applied_in(stamps) is not None:
            return item.result(APPLIED, record=existing, new_version=existing.version)  # a retry
        return item.result(
            CONFLICT, record=existing, reason=f"record was deleted in version {existing.version}"
        )
    if not set(range(base + 1, existing.version + 1)) <= own:
        return item.result(
            CONFLICT,
            record=existing,
            reason=f"record changed since base_version {base} (now version {existing.version}); "
            "review the changes before deleting",
        )
    return None
