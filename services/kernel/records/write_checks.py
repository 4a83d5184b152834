"""Checks every write makes before (and inside) its transaction.

Ids not taken, referenced patients alive, the plan's patient limit, update
masks that name mutable fields, idempotency keys used for one request only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timedelta

from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message
from hacs.records.v1 import record_pb2

from services.common.caller import Caller, current_call
from services.common.errors import (
    AlreadyExists,
    Conflict,
    FieldViolation,
    Invalid,
    NotFound,
    QuotaExceeded,
    QuotaViolation,
)
from services.common.validation import Violations
from services.kernel.records.access import require_access, require_owner, require_write
from services.kernel.records.content import check_record
from services.kernel.records.envelope import ENVELOPE_MUTABLE, OUTPUT_ONLY
from services.kernel.records.names import RecordName
from services.kernel.records.resource_types import BY_FIELD, ResourceTypeInfo, of_record
from services.kernel.records.store import RecordTx, Stored

IDEMPOTENCY_WINDOW = timedelta(hours=24)


def fingerprint(message: Message) -> str:
    """Digest of a request, to tell a true retry from a reused request_id."""
    return hashlib.sha256(message.SerializeToString(deterministic=True)).hexdigest()


async def check_patient_quota(tx: RecordTx, tenant_id: str, delta: int, limit: int) -> None:
    """Apply a change to the live-patient count, refusing growth past the plan's limit."""
    if not delta:
        return
    live = await tx.add_live_patients(delta)
    if delta > 0 and limit and live > limit:
        raise QuotaExceeded(
            f"tenant {tenant_id!r} would hold {live} patients; its plan allows {limit}",
            [QuotaViolation(f"tenants/{tenant_id}", f"max_patients={limit}")],
        )


def check_new(
    caller: Caller, tenant_id: str, records: Sequence[record_pb2.Record], prefix: str
) -> list[ResourceTypeInfo]:
    """Permission for every type first (a refused caller learns nothing more), then content."""
    kinds = {info.name: info for info in map(of_record, records) if info is not None}
    for info in kinds.values():
        require_write(caller, info, tenant_id, f"tenants/{tenant_id}")
    for i, record in enumerate(records):
        require_owner(caller, record, prefix.format(i=i))
    v = Violations()
    infos = [
        check_record(record, prefix.format(i=i), v, tenant_id=tenant_id)
        for i, record in enumerate(records)
    ]
    v.raise_if_any()
    return [info for info in infos if info is not None]


async def current_live(tx: RecordTx, name: RecordName, caller: Caller) -> record_pb2.Record:
    current = await tx.get(name.info.collection, name.id, for_update=True)
    if current is None:
        raise NotFound(name.info.name, str(name))
    require_access(caller, current, str(name))  # before saying anything about its state
    if current.HasField("delete_time"):
        raise Conflict(
            f"{name} is deleted; deleted records are kept for history but not changed",
            subject=str(name),
        )
    return current


async def check_new_ids(tx: RecordTx, stored: Sequence[Stored], prefix: str) -> None:
    keys = [(s.collection, s.id) for s in stored]
    seen: set[tuple[str, str]] = set()
    v = Violations()
    for i, key in enumerate(keys):
        if key in seen:
            v.add(
                f"{prefix.format(i=i).rsplit('.', 1)[0]}.record_id",
                f"{key[1]!r} appears twice in this batch",
            )
        seen.add(key)
    v.raise_if_any()
    taken = await tx.existing_ids(keys)
    if taken:
        first = next(s for s in stored if (s.collection, s.id) in taken)
        raise AlreadyExists(
            BY_FIELD[first.record.WhichOneof("resource") or ""].name, first.record.name
        )


async def check_patients_exist(
    tx: RecordTx, stored: Sequence[Stored], prefix: str, positions: Sequence[int] | None = None
) -> None:
    """A patient reference must name a live patient: in the database or this batch.

    Violations name `prefix` with {i} = the item's position (`positions[k]` for
    the k-th stored record when given).
    """
    batch_patients = {s.id for s in stored if s.collection == "patients"}
    wanted = {
        s.patient_id for s in stored if s.patient_id and s.collection != "patients"
    } - batch_patients
    if not wanted:
        return
    live = {
        pid for _, pid in await tx.existing_ids([("patients", p) for p in wanted], live_only=True)
    }
    v = Violations()
    for i, s in enumerate(stored):
        if (
            s.patient_id
            and s.collection != "patients"
            and s.patient_id not in live | batch_patients
        ):
            info = BY_FIELD[s.record.WhichOneof("resource") or ""]
            field = info.patient_field if info.field != "memory_block" else "patient"
            position = positions[i] if positions is not None else i
            v.add(
                f"{prefix.format(i=position)}.{info.field}.{field}",
                f"patient {s.record.patient_compartment!r} does not exist (or is deleted)",
            )
    v.raise_if_any()


def update_paths(changes: record_pb2.Record, mask: FieldMask, info: ResourceTypeInfo) -> list[str]:
    """The mask's paths, checked; an empty mask means every field set in `changes` (AIP-134)."""
    if not mask.paths:
        paths = [d.name for d, _ in changes.ListFields() if d.name not in OUTPUT_ONLY]
        if not paths:
            raise Invalid(
                FieldViolation(
                    "update_mask", "nothing to update: set fields or name them in the mask"
                )
            )
        return paths
    if list(mask.paths) == ["*"]:
        return [*ENVELOPE_MUTABLE, info.field]
    v = Violations()
    for path in mask.paths:
        top = path.split(".", 1)[0]
        if top in OUTPUT_ONLY:
            v.add("update_mask", f"{path!r} is output only")
        elif top not in ENVELOPE_MUTABLE and top != info.field:
            v.add("update_mask", f"{path!r} is not a field of this {info.name} record")
        elif not FieldMask(paths=[path]).IsValidForDescriptor(record_pb2.Record.DESCRIPTOR):
            v.add("update_mask", f"{path!r} names no field")
    v.raise_if_any()
    return list(mask.paths)


async def replayed(
    tx: RecordTx, request_id: str, method: str, request_hash: str, now: datetime
) -> bytes | None:
    if not request_id:
        return None
    found = await tx.remembered(request_id, not_before=now - IDEMPOTENCY_WINDOW)
    if found is None:
        return None
    earlier_method, earlier_hash, response = found
    if earlier_method != method or earlier_hash != request_hash:
        raise Invalid(
            FieldViolation(
                "request_id", "was already used for a different request; use a new id per request"
            )
        )
    return response


def note_resource(resource: str) -> None:
    state = current_call()
    if state is not None:
        state.resource = resource
