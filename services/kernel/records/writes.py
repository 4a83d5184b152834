"""Writing records: create, batch create, update (field mask + etag), soft delete.

Every write is one transaction that writes the new version, its history row,
the filter rows and the change-log entry (the outbox). A write that fails any
check writes nothing. Idempotency keys (`request_id`) replay the first
result of a retried call instead of writing twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from google.protobuf.field_mask_pb2 import FieldMask
from hacs.records.v1 import record_pb2, record_service_pb2
from sqlalchemy.exc import IntegrityError

from services.common.caller import Caller, current_call
from services.common.change_bus import ChangeBus, ChangeNotice
from services.common.db.base import utcnow
from services.common.errors import AlreadyExists, Conflict, FieldViolation, Invalid, NotFound
from services.common.etags import check_etag, concurrent_update
from services.common.validation import Violations
from services.kernel.records import derive
from services.kernel.records.access import (
    may_access,
    require_access,
    require_delete,
    require_own_parent,
    require_owner,
    require_write,
)
from services.kernel.records.content import check_record
from services.kernel.records.envelope import ENVELOPE_MUTABLE, change, envelope_new, envelope_next
from services.kernel.records.names import RecordName, new_record_id, parse_record_name
from services.kernel.records.resource_types import of_record
from services.kernel.records.store import ChangeEntry, RecordStore, Stored
from services.kernel.records.write_checks import (
    IDEMPOTENCY_WINDOW,
    check_new,
    check_new_ids,
    check_patient_quota,
    check_patients_exist,
    current_live,
    note_resource,
    replayed,
    update_paths,
)
from services.kernel.records.write_plans import (
    NewRecord,
    PurgeOutcome,
    Revision,
    Upsert,
    UpsertOutcome,
    Written,
)
from services.kernel.tenancy.standing import PatientLimit

MAX_BATCH = 1000


class RecordWriter:
    def __init__(
        self, store: RecordStore, patient_limit: PatientLimit, bus: ChangeBus | None = None
    ) -> None:
        self._store = store
        self._patient_limit = patient_limit
        self._bus = bus

    async def _announce(self, tenant_id: str, sequences: list[int]) -> None:
        """After commit: tell readers the log grew (they re-read it; a lost notice costs a poll)."""
        if self._bus is not None and sequences:
            await self._bus.publish(ChangeNotice(tenant_id, max(sequences)))

    async def create(
        self,
        caller: Caller,
        tenant_id: str,
        item: NewRecord,
        *,
        request_id: str = "",
        request_hash: str = "",
    ) -> record_pb2.Record:
        created = await self._create_many(
            caller,
            tenant_id,
            [item],
            prefix="record",
            request_id=request_id,
            request_hash=request_hash,
            method="CreateRecord",
        )
        return created[0]

    async def batch_create(
        self,
        caller: Caller,
        tenant_id: str,
        items: Sequence[NewRecord],
        *,
        request_id: str = "",
        request_hash: str = "",
    ) -> list[record_pb2.Record]:
        if not 1 <= len(items) <= MAX_BATCH:
            raise Invalid(FieldViolation("requests", f"send between 1 and {MAX_BATCH} records"))
        return await self._create_many(
            caller,
            tenant_id,
            items,
            prefix="requests[{i}].record",
            request_id=request_id,
            request_hash=request_hash,
            method="BatchCreateRecords",
        )

    async def _create_many(
        self,
        caller: Caller,
        tenant_id: str,
        items: Sequence[NewRecord],
        *,
        prefix: str,
        request_id: str,
        request_hash: str,
        method: str,
    ) -> list[record_pb2.Record]:
        written = await self.write(
            caller,
            tenant_id,
            creates=items,
            prefix=prefix,
            request_id=request_id,
            request_hash=request_hash,
            method=method,
        )
        records = written.created
        if not written.replayed:
            note_resource(f"tenants/{tenant_id}" if len(records) > 1 else records[0].name)
        return records

    async def write(
        self,
        caller: Caller,
        tenant_id: str,
        *,
        creates: Sequence[NewRecord] = (),
        revisions: Sequence[Revision] = (),
        strict: bool = True,
        prefix: str = "records[{i}]",
        revised_field: str = "record",
        request_id: str = "",
        request_hash: str = "",
        method: str = "",
        now: datetime | None = None,
    ) -> Written:
        """Create and revise records of one tenant in one transaction, all or nothing.

        Each new version gets the same envelope, history row, filter rows and
        change-log entry as any other write, content checked by the same rules
        (creates under `prefix`, revisions under `revised_field`). strict: a
        revision whose record is gone, deleted or at another version than
        expected fails the whole write (NOT_FOUND / FAILED_PRECONDITION);
        otherwise it is skipped and reported in `Written.skipped`. A retried
        call with the same `request_id` gets the records first created.
        """
        now = now or utcnow()
        infos = check_new(caller, tenant_id, [c.record for c in creates], prefix)
        names = [parse_record_name(r.name) for r in revisions]
        for name in {n.info.name: n for n in names}.values():
            require_write(caller, name.info, tenant_id, f"tenants/{tenant_id}")
        # Read before the write transaction opens: on SQLite a second
        # transaction inside it would wait for it forever.
        adds_patients = any(info.field == "patient" for info in infos)
        patient_limit = await self._patient_limit(tenant_id) if adds_patients else 0
        written = Written()
        async with self._store.transaction(tenant_id) as tx:
            replay = await replayed(tx, request_id, method, request_hash, now)
            if replay is not None:
                response = record_service_pb2.BatchCreateRecordsResponse.FromString(replay)
                return Written(created=list(response.records), replayed=True)
            stored = [
                envelope_new(
                    caller, tenant_id, info, item.record_id or new_record_id(info), item.record, now
                )
                for info, item in zip(infos, creates, strict=True)
            ]
            await check_new_ids(tx, stored, prefix)
            keys = [(n.info.collection, n.id) for n in names]
            current = await tx.get_many(keys, for_update=True) if keys else {}
            replaced: list[tuple[Stored, int]] = []
            entries: list[ChangeEntry] = [change(s, "CREATE", caller, now) for s in stored]
            patient_delta = sum(1 for item in stored if item.collection == "patients")
            for revision, name in zip(revisions, names, strict=True):
                found = current.get((name.info.collection, name.id))
                if found is not None and not may_access(caller, found):
                    found = None  # another owner's: as if it did not exist
                problem = _revision_problem(found, revision)
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
                    patient_delta -= name.info.field == "patient"
                v = Violations()
                check_record(revised, revised_field, v, tenant_id=tenant_id)
                v.raise_if_any()
                require_owner(caller, revised, revised_field)
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
                kinds = {info.name for info in infos}
                raise AlreadyExists(
                    kinds.pop() if len(kinds) == 1 else "Record",
                    "one of the requested ids (created concurrently)",
                ) from exc
            for item, version in replaced:
                if not await tx.replace(item, expected_version=version):
                    raise concurrent_update(item.record.name)
            # Last, beside the change log: both lock the tenant's counter row until
            # commit, so concurrent writers queue only for the tail of the transaction.
            await check_patient_quota(tx, tenant_id, patient_delta, patient_limit)
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
        await self._announce(tenant_id, sequences)
        return written

    async def update(
        self,
        caller: Caller,
        changes: record_pb2.Record,
        mask: FieldMask,
        *,
        request_id: str = "",
        request_hash: str = "",
    ) -> record_pb2.Record:
        name = parse_record_name(changes.name, "record.name")
        require_write(caller, name.info, name.tenant_id, str(name))
        changed_info = of_record(changes)
        if changed_info is not None and changed_info is not name.info:
            raise Invalid(
                FieldViolation(
                    "record.resource", f"{name} is a {name.info.name}; its type cannot change"
                )
            )
        paths = update_paths(changes, mask, name.info)
        now = utcnow()
        async with self._store.transaction(name.tenant_id) as tx:
            replay = await replayed(tx, request_id, "UpdateRecord", request_hash, now)
            if replay is not None:
                return record_pb2.Record.FromString(replay)
            current = await current_live(tx, name, caller)
            check_etag(str(name), current.version, changes.etag)
            updated = record_pb2.Record()
            updated.CopyFrom(current)
            FieldMask(paths=paths).MergeMessage(
                changes, updated, replace_message_field=True, replace_repeated_field=True
            )
            v = Violations()
            check_record(updated, "record", v, tenant_id=name.tenant_id)
            v.raise_if_any()
            require_owner(caller, updated, "record")  # not handed to another owner
            stored = envelope_next(caller, name, updated, now)
            await check_patients_exist(tx, [stored], "record")
            old_patient = derive.patient_id(current, name.info, name.id)
            if not await tx.replace(stored, expected_version=current.version):
                raise concurrent_update(str(name))
            sequences = await tx.append_changes(
                [change(stored, "UPDATE", caller, now, previous_patient=old_patient, paths=paths)]
            )
            if request_id:
                await tx.remember(
                    request_id,
                    "UpdateRecord",
                    request_hash,
                    stored.record.SerializeToString(),
                    now,
                    expire_before=now - IDEMPOTENCY_WINDOW,
                )
        await self._announce(name.tenant_id, sequences)
        return stored.record

    async def delete(
        self, caller: Caller, name_text: str, etag: str, reason: str
    ) -> record_pb2.Record:
        name = parse_record_name(name_text)
        require_delete(caller, name.info, name.tenant_id, str(name))
        state = current_call()
        if state is not None and reason:
            state.details["reason"] = reason
        now = utcnow()
        async with self._store.transaction(name.tenant_id) as tx:
            current = await current_live(tx, name, caller)
            check_etag(str(name), current.version, etag)
            deleted = record_pb2.Record()
            deleted.CopyFrom(current)
            deleted.delete_time.FromDatetime(now)
            stored = envelope_next(caller, name, deleted, now)
            if not await tx.replace(stored, expected_version=current.version):
                raise concurrent_update(str(name))
            if name.info.field == "patient":
                await tx.add_live_patients(-1)
            sequences = await tx.append_changes([change(stored, "DELETE", caller, now)])
        await self._announce(name.tenant_id, sequences)
        return stored.record

    async def upsert_many(
        self, caller: Caller, tenant_id: str, items: Sequence[Upsert], labels: dict[str, str]
    ) -> list[UpsertOutcome]:
        """Create, replace or delete records by id in one transaction (FHIR PUT/POST/DELETE).

        A replaced record keeps its name, creation time and creator and gets a
        new version whose content is the given one (a deleted record written
        again comes back to life). Nothing is written if any check fails.
        """
        for info in {item.info.name: item.info for item in items}.values():
            require_write(caller, info, tenant_id, f"tenants/{tenant_id}")
        for info in {item.info.name: item.info for item in items if item.record is None}.values():
            require_delete(caller, info, tenant_id, f"tenants/{tenant_id}")
        now = utcnow()
        has_patients = any(i.info.field == "patient" and i.record is not None for i in items)
        patient_limit = await self._patient_limit(tenant_id) if has_patients else 0
        async with self._store.transaction(tenant_id) as tx:
            keys = [(i.info.collection, i.record_id) for i in items]
            existing = await tx.get_many(keys, for_update=True)
            creates: list[Stored] = []
            replaces: list[tuple[Stored, int]] = []
            changes: list[ChangeEntry] = []
            outcomes: list[UpsertOutcome] = []
            patient_delta = 0
            written: list[tuple[int, Stored]] = []  # (item position, record) for reference checks
            for position, (item, key) in enumerate(zip(items, keys, strict=True)):
                name = RecordName(tenant_id, item.info, item.record_id)
                current = existing.get(key)
                if current is not None:
                    require_access(caller, current, str(name))
                if item.record is not None:
                    require_owner(caller, item.record, f"entry[{position}].resource")
                live = current is not None and not current.HasField("delete_time")
                if item.record is None:
                    if current is None or not live:
                        outcomes.append(UpsertOutcome(str(name), "MISSING", 0))
                        continue
                    gone = record_pb2.Record()
                    gone.CopyFrom(current)
                    gone.delete_time.FromDatetime(now)
                    stored = envelope_next(caller, name, gone, now)
                    replaces.append((stored, current.version))
                    changes.append(change(stored, "DELETE", caller, now))
                    patient_delta -= item.info.field == "patient"
                    outcomes.append(UpsertOutcome(str(name), "DELETED", stored.record.version))
                    continue
                content = record_pb2.Record()
                content.CopyFrom(item.record)
                for key_, value in labels.items():
                    content.labels.setdefault(key_, value)
                if current is None:
                    stored = envelope_new(
                        caller, tenant_id, item.info, item.record_id, content, now
                    )
                    creates.append(stored)
                    written.append((position, stored))
                    changes.append(change(stored, "CREATE", caller, now))
                    patient_delta += item.info.field == "patient"
                    outcomes.append(UpsertOutcome(str(name), "CREATED", 1))
                    continue
                replaced = record_pb2.Record()
                replaced.CopyFrom(current)
                replaced.ClearField("delete_time")
                FieldMask(paths=[*ENVELOPE_MUTABLE, item.info.field]).MergeMessage(
                    content, replaced, replace_message_field=True, replace_repeated_field=True
                )
                stored = envelope_next(caller, name, replaced, now)
                replaces.append((stored, current.version))
                written.append((position, stored))
                old_patient = derive.patient_id(current, item.info, item.record_id)
                changes.append(
                    change(stored, "UPDATE", caller, now, previous_patient=old_patient, paths=["*"])
                )
                patient_delta += (not live) and item.info.field == "patient"
                outcomes.append(UpsertOutcome(str(name), "UPDATED", stored.record.version))
            await check_patients_exist(
                tx, [s for _, s in written], "entry[{i}].resource", [p for p, _ in written]
            )
            await tx.insert_many(creates)
            for stored, version in replaces:
                if not await tx.replace(stored, expected_version=version):
                    raise concurrent_update(stored.record.name)
            await check_patient_quota(tx, tenant_id, patient_delta, patient_limit)
            sequences = await tx.append_changes(changes)
        await self._announce(tenant_id, sequences)
        return outcomes

    async def purge(self, caller: Caller, names: Sequence[str], reason: str) -> PurgeOutcome:
        """Erase records for good (right to erasure): every version, filter row, replay.

        Unlike `delete`, nothing is kept: the current row, the history, the
        code and label rows and any remembered idempotent response holding the
        record go, in one transaction. Each erased record gets a PURGE entry
        in the change log so every consumer (indexes, sync) drops its copies.
        Needs `admin:<type>`. Names that do not exist are skipped.
        """
        parsed = [parse_record_name(name, f"names[{i}]") for i, name in enumerate(names)]
        if not parsed:
            return PurgeOutcome([], 0)
        tenant_id = parsed[0].tenant_id
        if any(name.tenant_id != tenant_id for name in parsed):
            raise Invalid(FieldViolation("names", "erase the records of one tenant at a time"))
        for info in {name.info.name: name.info for name in parsed}.values():
            require_own_parent(caller, tenant_id, f"admin:{info.permission}")
            caller.require(f"admin:{info.permission}", f"tenants/{tenant_id}")
        state = current_call()
        if state is not None and reason:
            state.details["reason"] = reason
        now = utcnow()
        async with self._store.transaction(tenant_id) as tx:
            keys = [(name.info.collection, name.id) for name in parsed]
            current = await tx.get_many(keys, for_update=True)
            entries: list[ChangeEntry] = []
            doomed: dict[str, list[str]] = {}
            erased: list[str] = []
            patient_delta = 0
            for name in dict.fromkeys(parsed):
                record = current.get((name.info.collection, name.id))
                if record is None:
                    continue
                doomed.setdefault(name.info.collection, []).append(name.id)
                erased.append(str(name))
                if name.info.field == "patient" and not record.HasField("delete_time"):
                    patient_delta -= 1
                entries.append(
                    ChangeEntry(
                        collection=name.info.collection,
                        record_id=name.id,
                        operation="PURGE",
                        version=record.version,
                        commit_time=now,
                        actor=caller.actor_name,
                        patient_id=derive.patient_id(record, name.info, name.id),
                        previous_patient_id=None,
                        labels=dict(record.labels),
                        changed_paths=[],
                    )
                )
            versions = 0
            for collection, ids in doomed.items():
                versions += await tx.purge(collection, ids)
            if patient_delta:
                await tx.add_live_patients(patient_delta)
            await tx.forget_responses_naming(erased)
            sequences = await tx.append_changes(entries)
        await self._announce(tenant_id, sequences)
        return PurgeOutcome(erased, versions)


def _revision_problem(found: record_pb2.Record | None, revision: Revision) -> str:
    if found is None:
        return f"{revision.name} does not exist (any more)"
    if found.HasField("delete_time"):
        return f"{revision.name} is deleted"
    if revision.expected_version and found.version != revision.expected_version:
        return (
            f"{revision.name} changed since it was read (version {found.version}, "
            f"expected {revision.expected_version})"
        )
    return ""
