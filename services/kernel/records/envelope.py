"""The envelope of a record version: name, version, etag, times, actors, derived facts.

Built the same way for every write path (create, update, delete, FHIR
upsert), so a record's envelope never depends on how it was written.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp
from hacs.common.v1 import provenance_pb2
from hacs.records.v1 import record_pb2

from services.common.caller import Caller
from services.common.etags import etag_for
from services.kernel.records import derive
from services.kernel.records.access import owner_of
from services.kernel.records.names import RecordName, record_name
from services.kernel.records.resource_types import ResourceTypeInfo
from services.kernel.records.store import ChangeEntry, Stored

OUTPUT_ONLY = (
    "name",
    "resource_type",
    "version",
    "etag",
    "create_time",
    "update_time",
    "delete_time",
    "created_by",
    "updated_by",
    "patient_compartment",
    "clinical_time",
)
ENVELOPE_MUTABLE = ("labels", "identifier", "agent_meta", "text", "extensions")


def envelope_new(
    caller: Caller,
    tenant_id: str,
    info: ResourceTypeInfo,
    record_id: str,
    content: record_pb2.Record,
    now: datetime,
) -> Stored:
    record = record_pb2.Record()
    record.CopyFrom(content)
    for field in OUTPUT_ONLY:
        record.ClearField(field)  # type: ignore[arg-type]
    name = record_name(tenant_id, info, record_id)
    record.name = name
    record.resource_type = info.enum  # type: ignore[assignment]
    record.version = 1
    record.etag = etag_for(name, 1)
    record.create_time.FromDatetime(now)
    record.update_time.FromDatetime(now)
    actor = actor_ref(caller)
    record.created_by.CopyFrom(actor)
    record.updated_by.CopyFrom(actor)
    return derived(record, info, record_id, tenant_id, now)


def envelope_next(
    caller: Caller, name: RecordName, record: record_pb2.Record, now: datetime
) -> Stored:
    record.version += 1
    record.etag = etag_for(str(name), record.version)
    record.update_time.FromDatetime(now)
    record.updated_by.CopyFrom(actor_ref(caller))
    return derived(
        record, name.info, name.id, name.tenant_id, record.create_time.ToDatetime(tzinfo=now.tzinfo)
    )


def derived(
    record: record_pb2.Record,
    info: ResourceTypeInfo,
    record_id: str,
    tenant_id: str,
    created: datetime,
) -> Stored:
    derive.computed_fields(record)
    patient = derive.patient_id(record, info, record_id)
    clinical = derive.clinical_time(record, info, created)
    record.patient_compartment = f"tenants/{tenant_id}/patients/{patient}" if patient else ""
    stamp = Timestamp()
    stamp.FromDatetime(clinical)
    record.clinical_time.CopyFrom(stamp)
    return Stored(
        record=record,
        collection=info.collection,
        id=record_id,
        patient_id=patient,
        clinical_time=clinical,
        codes=frozenset(derive.codes(record, info)),
        owner=owner_of(record) or None,
    )


def actor_ref(caller: Caller) -> provenance_pb2.ActorRef:
    return provenance_pb2.ActorRef(name=caller.actor_name, role=caller.role)


def change(
    stored: Stored,
    operation: str,
    caller: Caller,
    now: datetime,
    *,
    previous_patient: str | None = None,
    paths: Sequence[str] = (),
) -> ChangeEntry:
    return ChangeEntry(
        collection=stored.collection,
        record_id=stored.id,
        operation=operation,
        version=stored.record.version,
        commit_time=now,
        actor=caller.actor_name,
        patient_id=stored.patient_id,
        previous_patient_id=previous_patient if previous_patient != stored.patient_id else None,
        labels=dict(stored.record.labels),
        changed_paths=list(paths),
        owner=stored.owner,
    )
