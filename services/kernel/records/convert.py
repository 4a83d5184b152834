"""Change-log entries -> hacs.records.v1.Change. (Records are protos already.)"""

from __future__ import annotations

from hacs.common.v1 import provenance_pb2
from hacs.records.v1 import change_pb2

from services.common.etags import etag_for
from services.kernel.records.resource_types import BY_COLLECTION
from services.kernel.records.store import ChangeEntry

OPERATIONS = {
    "CREATE": change_pb2.CHANGE_OPERATION_CREATE,
    "UPDATE": change_pb2.CHANGE_OPERATION_UPDATE,
    "DELETE": change_pb2.CHANGE_OPERATION_DELETE,
    "PURGE": change_pb2.CHANGE_OPERATION_PURGE,
}


def change_to_proto(tenant_id: str, entry: ChangeEntry) -> change_pb2.Change:
    info = BY_COLLECTION[entry.collection]
    name = f"tenants/{tenant_id}/{entry.collection}/{entry.record_id}"
    change = change_pb2.Change(
        sequence=entry.sequence,
        name=name,
        resource_type=info.enum,  # type: ignore[arg-type]
        operation=OPERATIONS[entry.operation],
        version=entry.version,
        etag=etag_for(name, entry.version),
        actor=provenance_pb2.ActorRef(name=entry.actor),
        patient=f"tenants/{tenant_id}/patients/{entry.patient_id}" if entry.patient_id else "",
        previous_patient=f"tenants/{tenant_id}/patients/{entry.previous_patient_id}"
        if entry.previous_patient_id
        else "",
        labels=entry.labels,
        changed_paths=entry.changed_paths,
    )
    change.commit_time.FromDatetime(entry.commit_time)
    return change
