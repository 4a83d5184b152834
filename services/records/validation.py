"""Validators for every RecordService request (registered on import).

These check the request's shape: names, ids, sizes, masks, filters. What a
record's content must satisfy depends on its tenant and is checked by the
domain (`content.py`) with the same field paths.
"""

from __future__ import annotations

from hacs.records.v1 import record_pb2
from hacs.records.v1 import record_service_pb2 as pb

from services.common import names
from services.common.validation import Violations, validates
from services.kernel.records.names import ID_PATTERN, ID_RULE, is_record_name
from services.kernel.records.reads import ORDER_FIELDS
from services.kernel.records.writes import MAX_BATCH

MAX_BUNDLE_BYTES = 16 * 1024 * 1024
RECORD_NAME_EXAMPLE = "tenants/{tenant}/{collection}/{id}"
TYPES = set(record_pb2.ResourceType.values()) - {0}


def _parent(v: Violations, parent: str, field: str = "parent") -> None:
    v.resource_name(field, parent, names.TENANT, "tenants/{tenant}")


def _record_name(v: Violations, field: str, value: str) -> None:
    if v.required(field, value) and not is_record_name(value):
        v.add(field, f"{value!r} is not a record name like {RECORD_NAME_EXAMPLE!r}")


def _record_id(v: Violations, field: str, value: str) -> None:
    if value and not ID_PATTERN.match(value):
        v.add(field, f"{value!r} is not a valid id ({ID_RULE})")


def _is_patient_name(value: str) -> bool:
    return is_record_name(value) and value.split("/")[2] == "patients"


def _request_id(v: Violations, value: str) -> None:
    v.max_length("request_id", value, 64)


def _types(v: Violations, field: str, values: list[int]) -> None:
    for i, value in enumerate(values):
        if value not in TYPES:
            v.add(f"{field}[{i}]", f"{value} is not a resource type")


@validates(pb.CreateRecordRequest)
def _create(r: pb.CreateRecordRequest, v: Violations) -> None:
    _parent(v, r.parent)
    _record_id(v, "record_id", r.record_id)
    _request_id(v, r.request_id)
    if r.record.WhichOneof("resource") is None:
        v.add("record.resource", "set exactly one typed resource (patient, observation, ...)")


@validates(pb.GetRecordRequest)
def _get(r: pb.GetRecordRequest, v: Violations) -> None:
    _record_name(v, "name", r.name)
    if r.version < 0:
        v.add("version", "must not be negative (0 = current)")


@validates(pb.UpdateRecordRequest)
def _update(r: pb.UpdateRecordRequest, v: Violations) -> None:
    _record_name(v, "record.name", r.record.name)
    _request_id(v, r.request_id)


@validates(pb.DeleteRecordRequest)
def _delete(r: pb.DeleteRecordRequest, v: Violations) -> None:
    _record_name(v, "name", r.name)
    v.max_length("reason", r.reason, 1000)


@validates(pb.ListRecordsRequest)
def _list(r: pb.ListRecordsRequest, v: Violations) -> None:
    _parent(v, r.parent)
    v.page(r.page_size)
    _types(v, "resource_types", list(r.resource_types))
    if r.patient and not _is_patient_name(r.patient):
        v.add("patient", f"{r.patient!r} is not a patient name like 'tenants/acme/patients/p-1'")
    for i, token in enumerate(r.codes):
        code = token.split("|", 1)[-1]
        if not code.strip():
            v.add(f"codes[{i}]", "use 'system|code', '|code' or 'code'")
    both = r.HasField("start_time") and r.HasField("end_time")
    if both and r.end_time.ToDatetime() <= r.start_time.ToDatetime():
        v.add("end_time", "must be after start_time")
    v.labels("labels", {k: val for k, val in r.labels.items()})
    fields = [p.strip().split()[0] for p in r.order_by.split(",") if p.strip()]
    for f in fields:
        if f not in ORDER_FIELDS:
            v.add("order_by", f"{f!r}: order by one of {', '.join(ORDER_FIELDS)}")


@validates(pb.ListRecordHistoryRequest)
def _history(r: pb.ListRecordHistoryRequest, v: Violations) -> None:
    _record_name(v, "name", r.name)
    v.page(r.page_size)


@validates(pb.BatchCreateRecordsRequest)
def _batch(r: pb.BatchCreateRecordsRequest, v: Violations) -> None:
    _parent(v, r.parent)
    _request_id(v, r.request_id)
    if not 1 <= len(r.requests) <= MAX_BATCH:
        v.add("requests", f"send between 1 and {MAX_BATCH} records (got {len(r.requests)})")
    for i, item in enumerate(r.requests):
        if item.parent and item.parent != r.parent:
            v.add(f"requests[{i}].parent", "must be empty or equal to the batch's parent")
        _record_id(v, f"requests[{i}].record_id", item.record_id)
        if item.record.WhichOneof("resource") is None:
            v.add(f"requests[{i}].record.resource", "set exactly one typed resource")


@validates(pb.ImportFhirBundleRequest)
def _import(r: pb.ImportFhirBundleRequest, v: Violations) -> None:
    _parent(v, r.parent)
    _request_id(v, r.request_id)
    if v.required("bundle_json", r.bundle_json) and len(r.bundle_json) > MAX_BUNDLE_BYTES:
        v.add("bundle_json", f"is larger than {MAX_BUNDLE_BYTES} bytes; split the bundle")
    v.labels("labels", dict(r.labels))


@validates(pb.ExportFhirRequest)
def _export(r: pb.ExportFhirRequest, v: Violations) -> None:
    target = r.WhichOneof("target")
    if target is None:
        v.add("target", "set `name` (one record) or `patient` (a compartment)")
    elif target == "name":
        _record_name(v, "name", r.name)
    elif not _is_patient_name(r.patient):
        v.add("patient", f"{r.patient!r} is not a patient name like 'tenants/acme/patients/p-1'")
    _types(v, "resource_types", list(r.resource_types))


@validates(pb.ListChangesRequest)
def _changes(r: pb.ListChangesRequest, v: Violations) -> None:
    _parent(v, r.parent)
    v.page(r.page_size)
    if r.after_sequence < 0:
        v.add("after_sequence", "must not be negative")
    _types(v, "resource_types", list(r.resource_types))
