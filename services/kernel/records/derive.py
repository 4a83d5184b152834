"""Facts derived from a record on every write, for filters and the change log.

* the patient compartment it belongs to,
* its clinical time (what date-range filters and charts order by),
* its primary codes (what the `codes` filter matches),
* the output-only fields computed from the rest (`computed_fields`).

The rules per type are the ones documented on `Record.patient_compartment`,
`Record.clinical_time` and `ListRecordsRequest.codes`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from hacs.common.v1 import datatypes_pb2
from hacs.records.v1 import record_pb2

from services.kernel.records.resource_types import ResourceTypeInfo

# Where each type's clinical time lives, in order of preference: (field, kind)
# with kind "ts" (a Timestamp), "period" (a Period's start) or "date" (a FHIR
# date string such as "2024-03-05").
_CLINICAL_TIME: dict[str, tuple[tuple[str, str], ...]] = {
    "observation": (
        ("effective_date_time", "ts"),
        ("effective_period", "period"),
        ("issued", "ts"),
    ),
    "diagnostic_report": (
        ("effective_date_time", "ts"),
        ("effective_period", "period"),
        ("issued", "ts"),
    ),
    "encounter": (("period", "period"),),
    "condition": (("onset_date_time", "ts"), ("onset_period", "period"), ("recorded_date", "ts")),
    "procedure": (("performed_date_time", "ts"), ("performed_period", "period")),
    "medication_statement": (
        ("effective_date_time", "ts"),
        ("effective_period", "period"),
        ("date_asserted", "ts"),
    ),
    "medication_request": (("authored_on", "ts"),),
    "allergy_intolerance": (("recorded_date", "ts"), ("onset_date_time", "ts")),
    "care_plan": (("period", "period"), ("created", "ts")),
    "goal": (("start_date", "date"),),
    "memory_block": (("event_time", "ts"),),
    "evidence": (("publication_date", "date"),),
}

# Where each type's primary codes live: CodeableConcept fields.
_CODE_FIELDS: dict[str, tuple[str, ...]] = {
    "observation": ("code",),
    "condition": ("code",),
    "procedure": ("code",),
    "allergy_intolerance": ("code",),
    "diagnostic_report": ("code",),
    "medication_statement": ("medication_codeable_concept",),
    "medication_request": ("medication_codeable_concept",),
    "goal": ("description",),
}


def typed(record: record_pb2.Record, info: ResourceTypeInfo) -> Message:
    message: Message = getattr(record, info.field)
    return message


def patient_id(record: record_pb2.Record, info: ResourceTypeInfo, record_id: str) -> str | None:
    """The id of the patient whose compartment holds this record, or None."""
    if info.field == "patient":
        return record_id
    if not info.patient_field:
        return None
    value = getattr(typed(record, info), info.patient_field)
    reference = value.reference if isinstance(value, datatypes_pb2.Reference) else str(value)
    parts = reference.split("/")
    if len(parts) == 4 and parts[0] == "tenants" and parts[2] == "patients":
        return parts[3]
    return None


def clinical_time(
    record: record_pb2.Record, info: ResourceTypeInfo, fallback: datetime
) -> datetime:
    message = typed(record, info)
    for field, kind in _CLINICAL_TIME.get(info.field, ()):
        found = _time_of(message, field, kind)
        if found is not None:
            return found
    return fallback


def codes(record: record_pb2.Record, info: ResourceTypeInfo) -> set[tuple[str, str]]:
    """(system, code) pairs of the record's primary codes; observation components count too."""
    message = typed(record, info)
    found: set[tuple[str, str]] = set()
    concepts: list[datatypes_pb2.CodeableConcept] = []
    for field in _CODE_FIELDS.get(info.field, ()):
        if message.HasField(field):
            concepts.append(getattr(message, field))
    if info.field == "observation":
        concepts.extend(c.code for c in message.component)  # type: ignore[attr-defined]
    for concept in concepts:
        found.update(_codings(concept.coding))
    return found


def _codings(codings: Iterable[datatypes_pb2.Coding]) -> set[tuple[str, str]]:
    return {(c.system, c.code) for c in codings if c.code}


def _time_of(message: Message, field: str, kind: str) -> datetime | None:
    if kind == "date":
        return parse_fhir_date(getattr(message, field))
    if not message.HasField(field):
        return None
    value = getattr(message, field)
    if kind == "period":
        if not value.HasField("start"):
            return None
        value = value.start
    return _from_timestamp(value)


def _from_timestamp(value: Timestamp) -> datetime:
    return value.ToDatetime(tzinfo=UTC)


def parse_fhir_date(text: str) -> datetime | None:
    """'2024', '2024-03' or '2024-03-05' (FHIR date) -> its first instant, UTC."""
    text = text.strip()
    for fmt in ("%Y-%m-%d", "%Y-%m", "%Y"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


HACS_DEFAULT_SCORE = 0.8  # an unset confidence or quality score, as the HACS library has it


def computed_fields(record: record_pb2.Record) -> None:
    """Set the output-only fields computed from the rest (what a client sent is replaced).

    Evidence.overall_reliability = (confidence_score + quality_score) / 2, each 0.8
    when unset, as in HACS.
    """
    if record.WhichOneof("resource") == "evidence":
        evidence = record.evidence
        confidence = (
            evidence.confidence_score
            if evidence.HasField("confidence_score")
            else HACS_DEFAULT_SCORE
        )
        quality = (
            evidence.quality_score if evidence.HasField("quality_score") else HACS_DEFAULT_SCORE
        )
        evidence.overall_reliability = (confidence + quality) / 2
