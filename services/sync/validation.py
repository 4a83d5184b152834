"""Validators for every SyncService request (registered on import).

Shape only: names under the request's tenant, cursors this service made for
that tenant, heartbeat bounds, field paths that exist in a Record. Whether
the caller may read or write, and what the log holds, is the domain's to say.
Collaborate's streamed messages are validated one by one as they arrive.
"""

from __future__ import annotations

import re

from hacs.records.v1 import change_pb2, record_pb2
from hacs.sync.v1 import patch_pb2
from hacs.sync.v1 import sync_service_pb2 as pb

from services.common.validation import Violations, validates
from services.kernel.records.names import is_record_name
from services.sync import cursors
from services.sync.field_paths import PathError, resolve

MAX_FILTER_VALUES = 1000
MAX_PATCHES = 200
MAX_PUSH = 1000
MIN_HEARTBEAT_SECONDS = 1
MAX_HEARTBEAT_SECONDS = 300
TYPES = set(record_pb2.ResourceType.values()) - {0}
OPERATIONS = {
    change_pb2.CHANGE_OPERATION_CREATE,
    change_pb2.CHANGE_OPERATION_UPDATE,
    change_pb2.CHANGE_OPERATION_DELETE,
}
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}\Z")
CLIENT_ID_RULE = "1-128 characters: letters, digits, '.', '_', ':', '-'"


@validates(pb.WatchRequest)
def _watch(r: pb.WatchRequest, v: Violations) -> None:
    tenant = v.parent_tenant(r.parent)
    f = r.filter
    for field, values in (("names", f.names), ("patients", f.patients)):
        if len(values) > MAX_FILTER_VALUES:
            v.add(f"filter.{field}", f"at most {MAX_FILTER_VALUES} values")
    for i, value in enumerate(f.resource_types):
        if value not in TYPES:
            v.add(f"filter.resource_types[{i}]", f"{value} is not a resource type")
    for i, name in enumerate(f.names):
        if not is_record_name(name):
            v.add(
                f"filter.names[{i}]",
                f"{name!r} is not a record name like 'tenants/acme/observations/obs-1'",
            )
        else:
            v.in_tenant(f"filter.names[{i}]", name, tenant)
    for i, name in enumerate(f.patients):
        if not (is_record_name(name) and name.split("/")[2] == "patients"):
            v.add(
                f"filter.patients[{i}]",
                f"{name!r} is not a patient name like 'tenants/acme/patients/p-1'",
            )
        else:
            v.in_tenant(f"filter.patients[{i}]", name, tenant)
    v.labels("filter.labels", dict(f.labels))
    if r.resume_cursor:
        if r.start_at_earliest:
            v.add("start_at_earliest", "set either resume_cursor or start_at_earliest, not both")
        position = cursors.try_decode(r.resume_cursor)
        if position is None:
            v.add("resume_cursor", "is not a sync cursor returned by this service")
        elif tenant and position.tenant_id != tenant:
            v.add("resume_cursor", f"is a cursor of another tenant, not of {tenant!r}")
    if r.HasField("heartbeat_interval"):
        seconds = r.heartbeat_interval.ToTimedelta().total_seconds()
        if not MIN_HEARTBEAT_SECONDS <= seconds <= MAX_HEARTBEAT_SECONDS:
            v.add(
                "heartbeat_interval",
                f"must be between {MIN_HEARTBEAT_SECONDS} s and {MAX_HEARTBEAT_SECONDS} s",
            )


@validates(pb.GetSyncCursorRequest)
def _get_cursor(r: pb.GetSyncCursorRequest, v: Violations) -> None:
    v.parent_tenant(r.parent)


def _patches(v: Violations, field: str, patches: list[patch_pb2.FieldPatch]) -> None:
    if len(patches) > MAX_PATCHES:
        v.add(field, f"at most {MAX_PATCHES} patches per edit")
    seen: list[str] = []
    for i, patch in enumerate(patches):
        where = f"{field}[{i}]"
        try:
            resolve(patch.path)
        except PathError as error:
            v.add(f"{where}.path", str(error))
            continue
        if patch.op not in (patch_pb2.PATCH_OP_SET, patch_pb2.PATCH_OP_REMOVE):
            v.add(f"{where}.op", "must be PATCH_OP_SET or PATCH_OP_REMOVE")
        elif patch.op == patch_pb2.PATCH_OP_SET and not patch.HasField("value"):
            v.add(f"{where}.value", "is required for PATCH_OP_SET (null removes the field)")
        for earlier in seen:
            if (
                patch.path == earlier
                or patch.path.startswith(earlier + ".")
                or earlier.startswith(patch.path + ".")
            ):
                v.add(f"{where}.path", f"{patch.path!r} overlaps {earlier!r} in the same edit")
        seen.append(patch.path)


@validates(pb.CollaborateRequest)
def _collaborate(r: pb.CollaborateRequest, v: Violations) -> None:
    kind = r.WhichOneof("payload")
    if kind is None:
        v.add("payload", "set join, presence, edit or leave")
    elif kind == "join":
        if v.required("join.record", r.join.record) and not is_record_name(r.join.record):
            v.add(
                "join.record",
                f"{r.join.record!r} is not a record name like 'tenants/acme/observations/obs-1'",
            )
        if v.required("join.client_id", r.join.client_id) and not _CLIENT_ID.match(
            r.join.client_id
        ):
            v.add("join.client_id", CLIENT_ID_RULE)
    elif kind == "presence":
        if r.presence.field:
            v.max_length("presence.field", r.presence.field, 300)
    elif kind == "edit":
        v.required("edit.edit_id", r.edit.edit_id)
        v.max_length("edit.edit_id", r.edit.edit_id, 128)
        if r.edit.base_version < 1:
            v.add("edit.base_version", "is required: the version the edit was made on")
        if not r.edit.patches:
            v.add("edit.patches", "an edit needs at least one patch")
        _patches(v, "edit.patches", list(r.edit.patches))


@validates(pb.PushChangesRequest)
def _push(r: pb.PushChangesRequest, v: Violations) -> None:
    tenant = v.parent_tenant(r.parent)
    if v.required("client_id", r.client_id) and not _CLIENT_ID.match(r.client_id):
        v.add("client_id", CLIENT_ID_RULE)
    if not 1 <= len(r.changes) <= MAX_PUSH:
        v.add("changes", f"send between 1 and {MAX_PUSH} changes")
    ids: set[str] = set()
    for i, change in enumerate(r.changes):
        where = f"changes[{i}]"
        if v.required(f"{where}.change_id", change.change_id):
            v.max_length(f"{where}.change_id", change.change_id, 128)
            if change.change_id in ids:
                v.add(f"{where}.change_id", f"{change.change_id!r} appears twice in this push")
            ids.add(change.change_id)
        if change.operation == change_pb2.CHANGE_OPERATION_PURGE:
            v.add(f"{where}.operation", "PURGE is not an offline change; erase with RecordService")
        elif change.operation not in OPERATIONS:
            v.add(f"{where}.operation", "must be CREATE, UPDATE or DELETE")
        if v.required(f"{where}.name", change.name):
            if not is_record_name(change.name):
                v.add(
                    f"{where}.name",
                    f"{change.name!r} is not a record name like 'tenants/acme/observations/obs-1'",
                )
            else:
                v.in_tenant(f"{where}.name", change.name, tenant)
        if change.operation == change_pb2.CHANGE_OPERATION_CREATE:
            if change.record.WhichOneof("resource") is None:
                v.add(f"{where}.record", "a CREATE needs the record, with its typed resource")
            if change.patches:
                v.add(f"{where}.patches", "a CREATE carries the record, not patches")
        elif change.operation == change_pb2.CHANGE_OPERATION_UPDATE:
            if change.base_version < 1:
                v.add(f"{where}.base_version", "is required: the version the change was made on")
            if not change.patches:
                v.add(f"{where}.patches", "an UPDATE needs at least one patch")
            _patches(v, f"{where}.patches", list(change.patches))
        elif change.operation == change_pb2.CHANGE_OPERATION_DELETE and change.base_version < 1:
            v.add(f"{where}.base_version", "is required: the version the change was made on")
