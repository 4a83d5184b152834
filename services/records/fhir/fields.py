"""Which FHIR JSON element each proto field is, and how it converts.

The mapping is descriptor-driven: a proto field `value_codeable_concept` is
the FHIR element `valueCodeableConcept`, and its kind follows from its proto
type (Reference messages have their references rewritten, Timestamps are
FHIR dateTimes, other messages are walked). The few places where the
contract's shape differs from FHIR R4's are listed here, once.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from functools import cache

from google.protobuf.descriptor import Descriptor, FieldDescriptor

_R = "hacs.records.v1."

# Proto fields whose FHIR element has another name.
RENAMED: dict[tuple[str, str], str] = {
    (_R + "Encounter", "encounter_class"): "class",  # `class` is a keyword
    (_R + "Patient", "care_provider"): "generalPractitioner",  # HACS name
    (_R + "MedicationStatement", "encounter"): "context",  # R4 name
}

# FHIR Annotation[] kept as the annotations' text (HACS keeps notes as strings).
ANNOTATION_TEXTS = frozenset(
    {
        (_R + message, field)
        for message, field in [
            ("Observation", "note"),
            ("Condition", "note"),
            ("Procedure", "note"),
            ("AllergyIntolerance", "note"),
            ("AllergyReaction", "note"),
            ("MedicationStatement", "note"),
            ("MedicationRequest", "note"),
            ("CarePlan", "note"),
            ("CarePlanActivity", "progress"),
            ("Goal", "note"),
        ]
    }
)

# FHIR Attachment[] kept as URLs (or data: URIs).
ATTACHMENT_URLS = frozenset({(_R + "Practitioner", "photo")})

# FHIR CodeableConcept with a required code system, kept as the bare code.
STATUS_CODE_SYSTEMS: dict[tuple[str, str], str] = {
    (_R + "Condition", "clinical_status"): (
        "http://terminology.hl7.org/CodeSystem/condition-clinical"
    ),
    (_R + "Condition", "verification_status"): (
        "http://terminology.hl7.org/CodeSystem/condition-ver-status"
    ),
    (_R + "AllergyIntolerance", "clinical_status"): (
        "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
    ),
    (_R + "AllergyIntolerance", "verification_status"): (
        "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"
    ),
}

# A repeated Reference that FHIR wraps in a backbone element:
# Encounter.location[i].location.
WRAPPED_REFERENCES: dict[tuple[str, str], str] = {(_R + "Encounter", "location"): "location"}

# FHIR backbone elements the contract flattens into fields of the parent:
# MedicationRequest.dispenseRequest.initialFill.{quantity, duration}.
GROUPED: dict[str, dict[str, dict[str, str]]] = {
    _R + "MedicationDispenseRequest": {
        "initialFill": {"quantity": "initial_fill_quantity", "duration": "initial_fill_duration"}
    }
}

# HACS-only fields of FHIR-native types: exported as HACS extensions.
HACS_ONLY = frozenset(
    {
        (_R + "Patient", "full_name"),
        (_R + "Patient", "age"),
        (_R + "Patient", "agent_context"),
        (_R + "MedicationStatement", "medication_text"),
        (_R + "MedicationStatement", "reason_text"),
        (_R + "Practitioner", "anonymous"),
    }
)

# HACS-only text standing in for a FHIR-required element it leaves empty:
# MedicationStatement.medication_text becomes medicationCodeableConcept.text
# when no medication is coded (and is read back from it).
TEXT_FALLBACKS: dict[tuple[str, str], str] = {
    (_R + "MedicationStatement", "medication_text"): "medicationCodeableConcept",
}


class Kind(Enum):
    SCALAR = "scalar"  # string, bool, number (repeated or not)
    MESSAGE = "message"  # a FHIR data type or backbone element, walked field by field
    REFERENCE = "reference"  # hacs.common.v1.Reference: reference rewritten
    WRAPPED_REFERENCE = "wrapped_reference"
    TIMESTAMP = "timestamp"  # FHIR dateTime / instant
    DURATION = "duration"  # FHIR Duration in a fixed-length UCUM unit
    ANNOTATION_TEXTS = "annotation_texts"
    ATTACHMENT_URLS = "attachment_urls"
    STATUS_CODE = "status_code"

    @property
    def is_leaf(self) -> bool:
        """Converted as a whole (and its original kept when conversion loses detail)."""
        return self not in (Kind.MESSAGE, Kind.REFERENCE, Kind.WRAPPED_REFERENCE)


@dataclass(frozen=True)
class FieldRule:
    fhir_key: str
    field: FieldDescriptor
    kind: Kind
    code_system: str = ""  # for STATUS_CODE


def camel_case(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _kind(message: str, field: FieldDescriptor) -> Kind:
    key = (message, field.name)
    if key in ANNOTATION_TEXTS:
        return Kind.ANNOTATION_TEXTS
    if key in ATTACHMENT_URLS:
        return Kind.ATTACHMENT_URLS
    if key in STATUS_CODE_SYSTEMS:
        return Kind.STATUS_CODE
    if key in WRAPPED_REFERENCES:
        return Kind.WRAPPED_REFERENCE
    if field.message_type is not None:
        name = field.message_type.full_name
        if name == "google.protobuf.Timestamp":
            return Kind.TIMESTAMP
        if name == "google.protobuf.Duration":
            return Kind.DURATION
        if name == "hacs.common.v1.Reference":
            return Kind.REFERENCE
        if name.startswith("google.protobuf."):
            raise TypeError(f"{message}.{field.name}: {name} has no FHIR mapping")
        return Kind.MESSAGE
    if field.enum_type is not None:
        raise TypeError(f"{message}.{field.name}: enums have no FHIR mapping")
    return Kind.SCALAR


def rule_for(descriptor: Descriptor, field: FieldDescriptor, fhir_key: str) -> FieldRule:
    message = descriptor.full_name
    return FieldRule(
        fhir_key,
        field,
        _kind(message, field),
        STATUS_CODE_SYSTEMS.get((message, field.name), ""),
    )


@cache
def fhir_fields(descriptor: Descriptor) -> dict[str, FieldRule]:
    """FHIR JSON key -> rule, for every field of the message FHIR also has."""
    message = descriptor.full_name
    grouped = {field for group in GROUPED.get(message, {}).values() for field in group.values()}
    rules: dict[str, FieldRule] = {}
    for field in descriptor.fields:
        if (message, field.name) in HACS_ONLY or field.name in grouped:
            continue
        key = RENAMED.get((message, field.name), camel_case(field.name))
        rules[key] = rule_for(descriptor, field, key)
    return rules


@cache
def grouped_fields(descriptor: Descriptor) -> dict[str, dict[str, FieldRule]]:
    """FHIR backbone key -> (its FHIR child key -> rule) for flattened groups."""
    groups = GROUPED.get(descriptor.full_name, {})
    return {
        key: {
            child: rule_for(descriptor, descriptor.fields_by_name[field], child)
            for child, field in children.items()
        }
        for key, children in groups.items()
    }


@cache
def hacs_only_fields(descriptor: Descriptor) -> tuple[FieldDescriptor, ...]:
    """The message's HACS-only fields (carried as HACS extensions in FHIR)."""
    message = descriptor.full_name
    return tuple(field for field in descriptor.fields if (message, field.name) in HACS_ONLY)
