"""Several memory writes in one records transaction.

The record service's writer changes one record per call (or creates a
batch). Memory operations need more in one transaction: a new memory and an
importance bump of the memories it cites; a merged block and the supersession
of every source it replaces; the access bookkeeping of every recalled memory.
This writes them the way the record service writes anything — new versions
with the same envelope, history rows, filter rows and change-log entries
(CREATE / UPDATE / DELETE), content checked by the same rules — all or
nothing, then announces the change on the bus.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from hacs.records.v1 import record_pb2, record_service_pb2
from sqlalchemy.exc import IntegrityError

from services.common.caller import Caller
from services.common.change_bus import ChangeBus, ChangeNotice
from services.common.db.base import utcnow
from services.common.errors import AlreadyExists, Conflict, NotFound
from services.common.etags import concurrent_update
from services.common.validation import Violations
from services.kernel.records import derive
from services.kernel.records.access import require_write
from services.kernel.records.content import check_record
from services.kernel.records.envelope import change, envelope_new, envelope_next
from services.kernel.records.names import parse_record_name
from services.kernel.records.store import ChangeEntry, RecordStore, Stored
from services.kernel.records.write_checks import (
    IDEMPOTENCY_WINDOW,
    check_new,
    check_new_ids,
    check_patients_exist,
    replayed,
)
from services.kernel.records.writes import NewRecord

Reviser = Callable[[record_pb2.Record], record_pb2.Record | None]


@dataclass(frozen=True)
class Revision:
    """A change to one existing record, computed from its current version in the transaction.

    `revise` gets a copy of the current version and returns the new content
    (None: nothing to do). `expected_version` (0 = any) guards against
    changes made since the caller planned this one. `delete` soft-deletes
    the revised record.
    """

    name: str
    revise: Reviser
    paths: tuple[str, ...]
    expected_version: int = 0
    delete: bool = False


@dataclass
class Written:
    created: list[record_pb2.Record] = field(default_factory=list)
    revised: dict[str, record_pb2.Record] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


class MemoryWriter:
    def __init__(self, store: RecordStore, bus: ChangeBus | None) -> None:
        self._store = store
        self._bus = bus

    async def write(
        self,
        caller: Caller,
        tenant_id: str,
        *,
        creates: Sequence[NewRecord] = (),
        revisions: Sequence[Revision] = (),
        strict: bool = True,
        prefix: str = "memories[{i}]",
        request_id: str = "",
        request_hash: str = "",
        method: str = "",
        now: datetime | None = None,
    ) -> Written:
        """Create and revise records in one transaction.

        strict: a revision whose record is gone, deleted or at another
        version than expected fails the whole write (FAILED_PRECONDITION);
        otherwise it is skipped and reported in `Written.skipped`.
        """
        now = now or utcnow()
        infos = check_new(caller, tenant_id, [c.record for c in creates], prefix)
        names = [parse_record_name(r.name) for r in revisions]
        for name in {n.info.name: n for n in names}.values():
            require_write(caller, name.info, tenant_id, f"tenants/{tenant_id}")
        written = Written()
        async with self._store.transaction(tenant_id) as tx:
            replay = await replayed(tx, request_id, method, request_hash, now)
            if replay is not None:
                response = record_service_pb2.BatchCreateRecordsResponse.FromString(replay)
                return Written(created=list(response.records))
            stored = [
                envelope_new(caller, tenant_id, info, item.record_id, item.record, now)
                for info, item in zip(infos, creates, strict=True)
            ]
            await check_new_ids(tx, stored, prefix)
            keys = [(n.info.collection, n.id) for n in names]
            current = await tx.get_many(keys, for_update=True) if keys else {}
            replaced: list[tuple[Stored, int]] = []
            entries: list[ChangeEntry] = [change(s, "CREATE", caller, now) for s in stored]
            for revision, name in zip(revisions, names, strict=True):
                found = current.get((name.info.collection, name.id))
                problem = _problem(found, revision)
                if problem:
                    if strict and found is None:
                        raise NotFound(name.info.name, revision.name)
                    if strict:
                        raise Conflict(problem, subject=revision.name)
                    written.skipped.append(revision.name)
                    continue
                assert found is not None
                content = record_pb2.Record()
                content.CopyFrom(found)
                revised = revision.revise(content)
                if revised is None:
                    continue
                if revision.delete:
                    revised.delete_time.FromDatetime(now)
                v = Violations()
                check_record(revised, "memory", v, tenant_id=tenant_id)
                v.raise_if_any()
                item = envelope_next(caller, name, revised, now)
                replaced.append((item, found.version))
                previous = derive.patient_id(found, name.info, name.id)
                entries.append(
                    change(
                        item,
                        "DELETE" if revision.delete else "UPDATE",
                        caller,
                        now,
                        previous_patient=previous,
                        paths=revision.paths,
                    )
                )
                written.revised[revision.name] = item.record
            await check_patients_exist(tx, [*stored, *(s for s, _ in replaced)], prefix)
            try:
                await tx.insert_many(stored)
            except IntegrityError as exc:  # a concurrent create took one of the ids
                raise AlreadyExists("MemoryBlock", "one of the requested ids") from exc
            for item, version in replaced:
                if not await tx.replace(item, expected_version=version):
                    raise concurrent_update(item.record.name)
            sequences = await tx.append_changes(entries)
            written.created = [s.record for s in stored]
            if request_id:
                response = record_service_pb2.BatchCreateRecordsResponse(records=written.created)
                await tx.remember(
                    request_id,
                    method,
                    request_hash,
                    response.SerializeToString(),
                    now,
                    expire_before=now - IDEMPOTENCY_WINDOW,
                )
        if self._bus is not None and sequences:
            await self._bus.publish(ChangeNotice(tenant_id, max(sequences)))
        return written


def _problem(found: record_pb2.Record | None, revision: Revision) -> str:
    if found is None:
        return f"{revision.name} does not exist (any more)"
    if found.HasField("delete_time"):
        return f"{revision.name} is deleted (forgotten or merged)"
    if revision.expected_version and found.version != revision.expected_version:
        return (
            f"{revision.name} changed since it was read (version {found.version}, "
            f"expected {revision.expected_version})"
        )
    return ""
