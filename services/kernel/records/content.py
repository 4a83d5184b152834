"""What a record's content must satisfy before it is written.

FHIR R4's required value sets and cardinalities for the fields HACS models,
plus HACS's own rules (scores in [0, 1], a MemoryBlock has content). Every
violation is reported with its field path; none is silently fixed.
"""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf.message import Message
from hacs.common.v1 import datatypes_pb2
from hacs.records.v1 import agent_message_pb2, memory_block_pb2, record_pb2

from services.common.validation import Violations
from services.kernel.records.derive import parse_fhir_date
from services.kernel.records.names import is_record_name
from services.kernel.records.resource_types import ResourceTypeInfo, of_record

# FHIR R4 required bindings: field -> allowed codes, per type.
VALUE_SETS: dict[str, dict[str, tuple[str, ...]]] = {
    "patient": {"gender": ("male", "female", "other", "unknown")},
    "practitioner": {"gender": ("male", "female", "other", "unknown")},
    "observation": {
        "status": (
            "registered",
            "preliminary",
            "final",
            "amended",
            "corrected",
            "cancelled",
            "entered-in-error",
            "unknown",
        ),
    },
    "diagnostic_report": {
        "status": (
            "registered",
            "partial",
            "preliminary",
            "final",
            "amended",
            "corrected",
            "appended",
            "cancelled",
            "entered-in-error",
            "unknown",
        ),
    },
    "encounter": {
        "status": (
            "planned",
            "arrived",
            "triaged",
            "in-progress",
            "onleave",
            "finished",
            "cancelled",
            "entered-in-error",
            "unknown",
        ),
    },
    "condition": {
        "clinical_status": ("active", "recurrence", "relapse", "inactive", "remission", "resolved"),
        "verification_status": (
            "unconfirmed",
            "provisional",
            "differential",
            "confirmed",
            "refuted",
            "entered-in-error",
        ),
    },
    "procedure": {
        "status": (
            "preparation",
            "in-progress",
            "not-done",
            "on-hold",
            "stopped",
            "completed",
            "entered-in-error",
            "unknown",
        ),
    },
    "medication_statement": {
        "status": (
            "active",
            "completed",
            "entered-in-error",
            "intended",
            "stopped",
            "on-hold",
            "unknown",
            "not-taken",
        ),
    },
    "medication_request": {
        "status": (
            "active",
            "on-hold",
            "cancelled",
            "completed",
            "entered-in-error",
            "stopped",
            "draft",
            "unknown",
        ),
        "intent": (
            "proposal",
            "plan",
            "order",
            "original-order",
            "reflex-order",
            "filler-order",
            "instance-order",
            "option",
        ),
    },
    "allergy_intolerance": {
        "clinical_status": ("active", "inactive", "resolved"),
        "verification_status": ("unconfirmed", "confirmed", "refuted", "entered-in-error"),
        "type": ("allergy", "intolerance"),
        "criticality": ("low", "high", "unable-to-assess"),
    },
    "care_plan": {
        "status": (
            "draft",
            "active",
            "on-hold",
            "revoked",
            "completed",
            "entered-in-error",
            "unknown",
        ),
        "intent": ("proposal", "plan", "order", "option"),
    },
    "goal": {
        "lifecycle_status": (
            "proposed",
            "planned",
            "accepted",
            "active",
            "on-hold",
            "completed",
            "cancelled",
            "entered-in-error",
            "rejected",
        ),
    },
}

# FHIR 1..1 elements (or oneofs, given by name) per type.
REQUIRED: dict[str, tuple[str, ...]] = {
    "observation": ("status", "code"),
    "diagnostic_report": ("status", "code"),
    "encounter": ("status", "encounter_class"),
    "condition": ("subject",),
    "procedure": ("status", "subject"),
    "medication_statement": ("status", "medication", "subject"),
    "medication_request": ("status", "intent", "medication", "subject"),
    "allergy_intolerance": ("patient",),
    "care_plan": ("status", "intent", "subject"),
    "goal": ("lifecycle_status", "description", "subject"),
    "memory_block": ("memory_type", "content"),
    "agent_message": ("role",),
}

_UNIT_INTERVAL = {
    "memory_block": ("importance_score", "confidence_score"),
    "evidence": ("confidence_score", "quality_score"),  # overall_reliability: computed
}
_FHIR_DATES = {
    "patient": ("birth_date",),
    "practitioner": ("birth_date",),
    "goal": ("start_date", "status_date"),
}


def check_record(
    record: record_pb2.Record, prefix: str, v: Violations, *, tenant_id: str
) -> ResourceTypeInfo | None:
    """Check a record to be written; returns its type (None when no resource is set)."""
    info = of_record(record)
    if info is None:
        v.add(f"{prefix}.resource", "set exactly one typed resource (patient, observation, ...)")
        return None
    message: Message = getattr(record, info.field)
    path = f"{prefix}.{info.field}"
    for field, allowed in VALUE_SETS.get(info.field, {}).items():
        v.one_of(f"{path}.{field}", getattr(message, field), allowed, allow_empty=True)
    for field in REQUIRED.get(info.field, ()):
        if not _present(message, field):
            v.add(f"{path}.{field}", f"is required for {info.name}")
    for field in _UNIT_INTERVAL.get(info.field, ()):
        if message.HasField(field) if _optional(message, field) else True:
            value = getattr(message, field)
            if not 0.0 <= value <= 1.0:
                v.add(f"{path}.{field}", f"{value} is outside [0, 1]")
    for field in _FHIR_DATES.get(info.field, ()):
        text = getattr(message, field)
        if text and parse_fhir_date(text) is None:
            v.add(f"{path}.{field}", f"{text!r} is not a FHIR date (YYYY, YYYY-MM or YYYY-MM-DD)")
    if isinstance(message, memory_block_pb2.MemoryBlock):
        if message.patient:
            _check_same_tenant_patient(f"{path}.patient", message.patient, v, tenant_id)
    elif info.patient_field:
        reference: datatypes_pb2.Reference = getattr(message, info.patient_field)
        # Another tenant's name is reported once, by _check_references below.
        target = reference.reference
        if target and not (
            target.startswith("tenants/") and not target.startswith(f"tenants/{tenant_id}/")
        ):
            _check_same_tenant_patient(
                f"{path}.{info.patient_field}.reference", reference.reference, v, tenant_id
            )
    if isinstance(message, agent_message_pb2.AgentMessage) and not (
        message.content or message.content_blocks
    ):
        v.add(f"{path}.content", "an AgentMessage needs content or content_blocks")
    _check_references(message, path, v, tenant_id)
    _check_codings(message, path, v)
    v.labels(f"{prefix}.labels", dict(record.labels))
    v.max_length(f"{prefix}.text", record.text, 100_000)
    if record.HasField("agent_meta") and not 0.0 <= record.agent_meta.confidence <= 1.0:
        v.add(f"{prefix}.agent_meta.confidence", "must be in [0, 1]")
    return info


def _present(message: Message, field: str) -> bool:
    if field in message.DESCRIPTOR.oneofs_by_name:
        return message.WhichOneof(field) is not None
    value = getattr(message, field)
    if isinstance(value, Message):
        return message.HasField(field)
    return bool(value)


def _optional(message: Message, field: str) -> bool:
    return message.DESCRIPTOR.fields_by_name[field].has_presence


def _check_same_tenant_patient(field: str, reference: str, v: Violations, tenant_id: str) -> None:
    expected = f"tenants/{tenant_id}/patients/"
    if not reference.startswith(expected) or "/" in reference[len(expected) :]:
        v.add(field, f"{reference!r} must name a patient of this tenant, like '{expected}p-1'")


def _check_references(message: Message, path: str, v: Violations, tenant_id: str) -> None:
    """Every Reference that names a HACS record must name one of this tenant."""
    for field_path, reference in _walk(message, path, datatypes_pb2.Reference):
        target = reference.reference  # type: ignore[attr-defined]
        if target.startswith("tenants/") and (
            not target.startswith(f"tenants/{tenant_id}/") or not is_record_name(target)
        ):
            v.add(f"{field_path}.reference", f"{target!r} is not a record of this tenant")


def _check_codings(message: Message, path: str, v: Violations) -> None:
    for field_path, coding in _walk(message, path, datatypes_pb2.Coding):
        system = coding.system  # type: ignore[attr-defined]
        if system and ":" not in system:
            v.add(f"{field_path}.system", f"{system!r} is not a URI (e.g. 'http://loinc.org')")
        if not coding.code and not coding.display:  # type: ignore[attr-defined]
            v.add(f"{field_path}", "a coding needs a code or a display")


def _walk(message: Message, path: str, kind: type[Message]) -> Iterable[tuple[str, Message]]:
    """(path, message) for every nested message of type `kind`, depth first."""
    for descriptor, value in message.ListFields():
        if descriptor.message_type is None or descriptor.message_type.GetOptions().map_entry:
            continue
        child = f"{path}.{descriptor.name}"
        items = (
            [(f"{child}[{i}]", item) for i, item in enumerate(value)]
            if descriptor.is_repeated
            else [(child, value)]
        )
        for item_path, item in items:
            if isinstance(item, kind):
                yield item_path, item
            elif item.DESCRIPTOR.full_name.startswith("hacs."):
                yield from _walk(item, item_path, kind)
