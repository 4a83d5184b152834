"""Records rendered to the text search sees: what a clinician would read.

Each type says what matters about it in words: a Patient with its name,
sex, age and active conditions; an Observation with its code's display,
value and unit, interpretation and date; a Condition with its display,
codes and status; and so on. Code displays carry the meaning, so both the
dense and the lexical retriever match them; the codes themselves go into
the index's `codes` field for exact filtering.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime
from typing import Any

from google.protobuf.message import Message
from hacs.common.v1 import datatypes_pb2
from hacs.records.v1 import evidence_pb2, memory_block_pb2, record_pb2

from services.kernel.records import derive
from services.kernel.records.derive import parse_fhir_date
from services.kernel.records.resource_types import ResourceTypeInfo


def concept_text(concept: datatypes_pb2.CodeableConcept) -> str:
    """The human words of a concept: its text, else its codings' displays."""
    if concept.text:
        return concept.text
    displays = [c.display for c in concept.coding if c.display]
    return "; ".join(dict.fromkeys(displays)) or "; ".join(c.code for c in concept.coding if c.code)


def quantity_text(q: datatypes_pb2.Quantity) -> str:
    value = f"{q.value:g}"
    return f"{q.comparator}{value} {q.unit or q.code}".strip()


def human_name(names: Iterable[datatypes_pb2.HumanName]) -> str:
    for name in names:
        if name.text:
            return name.text
        parts = [*name.prefix, *name.given, name.family, *name.suffix]
        text = " ".join(p for p in parts if p)
        if text:
            return text
    return ""


def age_on(birth: datetime | None, today: date) -> int | None:
    if birth is None:
        return None
    b = birth.date()
    return today.year - b.year - ((today.month, today.day) < (b.month, b.day))


def _day(message: Message, field: str) -> str:
    if not message.HasField(field):
        return ""
    value: datetime = getattr(message, field).ToDatetime(tzinfo=UTC)
    return value.date().isoformat()


def render(
    record: record_pb2.Record, info: ResourceTypeInfo, *, conditions: list[str] | None = None
) -> tuple[str, str]:
    """(title, text) of a record."""
    message = getattr(record, info.field)
    title, parts = _RENDERERS[info.field](message, conditions or [])
    codes = derive.codes(record, info)
    if codes:  # so an exact code ("I10", "4548-4") is found by the lexical retriever
        parts.append(
            "Codes: " + "; ".join(f"{_system_name(s)} {c}" for s, c in sorted(codes)) + "."
        )
    if record.text:
        parts.append(record.text)
    if record.labels:
        parts.append("Labels: " + ", ".join(f"{k} {v}" for k, v in sorted(record.labels.items())))
    return title, "\n".join(p for p in parts if p)


SYSTEM_NAMES = {
    "http://snomed.info/sct": "SNOMED CT",
    "http://hl7.org/fhir/sid/icd-10-cm": "ICD-10-CM",
    "http://hl7.org/fhir/sid/icd-10": "ICD-10",
    "http://loinc.org": "LOINC",
    "http://www.nlm.nih.gov/research/umls/rxnorm": "RxNorm",
}


def _system_name(system: str) -> str:
    return SYSTEM_NAMES.get(system, system.rstrip("/").rsplit("/", 1)[-1])


def _patient(m: Any, conditions: list[str]) -> tuple[str, list[str]]:
    name = m.full_name or human_name(m.name)
    birth = parse_fhir_date(m.birth_date)
    age = age_on(birth, datetime.now(UTC).date())
    facts = [f"Patient {name}".strip()]
    if m.gender:
        facts.append(m.gender)
    if age is not None:
        facts.append(f"age {age} (born {m.birth_date})")
    lines = [", ".join(facts) + "."]
    if conditions:
        lines.append("Conditions: " + "; ".join(conditions) + ".")
    return name or "Patient", lines


def _observation(m: Any, _: list[str]) -> tuple[str, list[str]]:
    title = concept_text(m.code)
    value = _observation_value(m)
    line = f"Observation: {title}" + (f" = {value}" if value else "")
    lines = [line]
    details = [concept_text(c) for c in m.interpretation]
    details += [concept_text(c) for c in m.category]
    if m.status:
        details.append(m.status)
    when = _day(m, "effective_date_time")
    if when:
        details.append(f"on {when}")
    if details:
        lines.append(", ".join(d for d in details if d) + ".")
    for component in m.component:
        value = _observation_value(component)
        lines.append(f"{concept_text(component.code)}" + (f" = {value}" if value else ""))
    lines += list(m.note)
    return title, lines


def _observation_value(m: Message) -> str:
    kind = m.WhichOneof("value")
    if kind is None:
        return ""
    value = getattr(m, kind)
    if kind == "value_quantity":
        return quantity_text(value)
    if kind == "value_codeable_concept":
        return concept_text(value)
    if kind in ("value_string", "value_boolean", "value_integer"):
        return str(value)
    return ""


def _condition(m: Any, _: list[str]) -> tuple[str, list[str]]:
    title = concept_text(m.code)
    facts = [f for f in (m.clinical_status, m.verification_status) if f]
    facts += [concept_text(c) for c in m.category]
    onset = _day(m, "onset_date_time")
    if onset:
        facts.append(f"onset {onset}")
    lines = [f"Condition: {title}.", ", ".join(facts) + "." if facts else ""]
    if m.HasField("severity"):
        lines.append(f"Severity: {concept_text(m.severity)}.")
    lines += list(m.note)
    return title, lines


def _medication(m: Any, _: list[str]) -> tuple[str, list[str]]:
    title = (
        concept_text(m.medication_codeable_concept)
        if m.HasField("medication_codeable_concept")
        else ""
    )
    title = title or getattr(m, "medication_text", "") or "Medication"
    dosages = getattr(m, "dosage", None) or getattr(m, "dosage_instruction", [])
    lines = [f"Medication: {title}.", f"Status: {m.status}." if m.status else ""]
    lines += [d.text for d in dosages if d.text]
    lines += [concept_text(c) for c in m.reason_code]
    lines += list(m.note)
    return title, lines


def _encounter(m: Any, _: list[str]) -> tuple[str, list[str]]:
    kinds = [concept_text(t) for t in m.type]
    title = ", ".join(k for k in kinds if k) or m.encounter_class.display or "Encounter"
    reasons = [concept_text(r) for r in m.reason_code]
    start = (
        m.period.start.ToDatetime(tzinfo=UTC).date().isoformat()
        if m.period.HasField("start")
        else ""
    )
    lines = [
        f"Encounter: {title}"
        + (f" ({m.encounter_class.display})" if m.encounter_class.display else "")
        + "."
    ]
    if reasons:
        lines.append("Reason: " + "; ".join(reasons) + ".")
    lines.append(", ".join(x for x in (m.status, f"on {start}" if start else "") if x))
    return title, lines


def _coded(label: str) -> Callable[[Any, list[str]], tuple[str, list[str]]]:
    def render_coded(m: Any, _: list[str]) -> tuple[str, list[str]]:
        title = concept_text(m.code) if m.HasField("code") else label
        lines = [f"{label}: {title}."]
        for field in ("status", "clinical_status", "criticality", "conclusion"):
            value = getattr(m, field, "")
            if value:
                lines.append(f"{field.replace('_', ' ').capitalize()}: {value}.")
        for reaction in getattr(m, "reaction", []):
            lines.append(
                "Reaction: " + "; ".join(concept_text(x) for x in reaction.manifestation) + "."
            )
        lines += list(getattr(m, "note", []))
        return title, lines

    return render_coded


def _care_plan(m: Any, _: list[str]) -> tuple[str, list[str]]:
    title = m.title or "Care plan"
    lines = [f"Care plan: {title}.", m.description]
    lines += [a.detail.description or concept_text(a.detail.code) for a in m.activity]
    lines += list(m.note)
    return title, lines


def _goal(m: Any, _: list[str]) -> tuple[str, list[str]]:
    title = concept_text(m.description)
    return title, [
        f"Goal: {title}.",
        f"Status: {m.lifecycle_status}." if m.lifecycle_status else "",
        *m.note,
    ]


def _evidence(m: Any, _: list[str]) -> tuple[str, list[str]]:
    assert isinstance(m, evidence_pb2.Evidence)
    lines = [m.title, m.abstract, m.content]
    if m.keywords:
        lines.append("Keywords: " + ", ".join(m.keywords) + ".")
    return m.title or "Evidence", lines


def _memory(m: Any, _: list[str]) -> tuple[str, list[str]]:
    assert isinstance(m, memory_block_pb2.MemoryBlock)
    lines = [m.content, m.summary]
    if m.tags:
        lines.append("Tags: " + ", ".join(m.tags) + ".")
    return m.summary or m.content[:80], lines


def _message(m: Any, _: list[str]) -> tuple[str, list[str]]:
    return (m.title or m.content[:80]), [m.title, m.content]


def _people(m: Any, _: list[str]) -> tuple[str, list[str]]:
    name = getattr(m, "name", "")
    title = name if isinstance(name, str) else human_name(name)
    return title, [title]


_RENDERERS = {
    "patient": _patient,
    "observation": _observation,
    "condition": _condition,
    "medication_statement": _medication,
    "medication_request": _medication,
    "encounter": _encounter,
    "procedure": _coded("Procedure"),
    "allergy_intolerance": _coded("Allergy"),
    "diagnostic_report": _coded("Diagnostic report"),
    "care_plan": _care_plan,
    "goal": _goal,
    "evidence": _evidence,
    "memory_block": _memory,
    "agent_message": _message,
    "organization": _people,
    "practitioner": _people,
}
