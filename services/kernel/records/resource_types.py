"""The HACS resource types a record can hold, and what each one implies.

One row per type: its enum value, HACS/FHIR name, the collection id in
resource names, the `Record.resource` oneof field, the resource name in
permissions (`read:<permission>`), and where its patient reference lives.
Everything that varies by type is read from here, never spelled out in a
chain of ifs elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from hacs.records.v1 import record_pb2


@dataclass(frozen=True)
class ResourceTypeInfo:
    enum: int
    name: str  # HACS resource_type, e.g. "MedicationStatement"
    collection: str  # resource-name collection id, e.g. "medicationStatements"
    field: str  # Record.resource oneof member, e.g. "medication_statement"
    permission: str  # "read:<permission>" / "write:<permission>"
    # Field of the typed message holding the patient reference, if any.
    patient_field: str = ""
    # FHIR R4 has this resource type (HACS-only types export as Basic).
    fhir_native: bool = True

    @property
    def fhir_type(self) -> str:
        return self.name if self.fhir_native else "Basic"


RT = record_pb2.ResourceType

RESOURCE_TYPES: tuple[ResourceTypeInfo, ...] = (
    ResourceTypeInfo(RT.RESOURCE_TYPE_PATIENT, "Patient", "patients", "patient", "patient"),
    ResourceTypeInfo(
        RT.RESOURCE_TYPE_OBSERVATION,
        "Observation",
        "observations",
        "observation",
        "observation",
        "subject",
    ),
    ResourceTypeInfo(
        RT.RESOURCE_TYPE_ENCOUNTER, "Encounter", "encounters", "encounter", "encounter", "subject"
    ),
    ResourceTypeInfo(
        RT.RESOURCE_TYPE_CONDITION, "Condition", "conditions", "condition", "condition", "subject"
    ),
    ResourceTypeInfo(
        RT.RESOURCE_TYPE_PROCEDURE, "Procedure", "procedures", "procedure", "procedure", "subject"
    ),
    ResourceTypeInfo(
        RT.RESOURCE_TYPE_MEDICATION_STATEMENT,
        "MedicationStatement",
        "medicationStatements",
        "medication_statement",
        "medication",
        "subject",
    ),
    ResourceTypeInfo(
        RT.RESOURCE_TYPE_MEDICATION_REQUEST,
        "MedicationRequest",
        "medicationRequests",
        "medication_request",
        "medication",
        "subject",
    ),
    ResourceTypeInfo(
        RT.RESOURCE_TYPE_ALLERGY_INTOLERANCE,
        "AllergyIntolerance",
        "allergyIntolerances",
        "allergy_intolerance",
        "allergy",
        "patient",
    ),
    ResourceTypeInfo(
        RT.RESOURCE_TYPE_DIAGNOSTIC_REPORT,
        "DiagnosticReport",
        "diagnosticReports",
        "diagnostic_report",
        "diagnostic_report",
        "subject",
    ),
    ResourceTypeInfo(
        RT.RESOURCE_TYPE_CARE_PLAN, "CarePlan", "carePlans", "care_plan", "care_plan", "subject"
    ),
    ResourceTypeInfo(RT.RESOURCE_TYPE_GOAL, "Goal", "goals", "goal", "goal", "subject"),
    ResourceTypeInfo(
        RT.RESOURCE_TYPE_ORGANIZATION,
        "Organization",
        "organizations",
        "organization",
        "organization",
    ),
    ResourceTypeInfo(
        RT.RESOURCE_TYPE_PRACTITIONER,
        "Practitioner",
        "practitioners",
        "practitioner",
        "practitioner",
    ),
    ResourceTypeInfo(
        RT.RESOURCE_TYPE_EVIDENCE, "Evidence", "evidence", "evidence", "evidence", fhir_native=False
    ),
    ResourceTypeInfo(
        RT.RESOURCE_TYPE_MEMORY_BLOCK,
        "MemoryBlock",
        "memoryBlocks",
        "memory_block",
        "memory",
        "patient",
        fhir_native=False,
    ),
    ResourceTypeInfo(
        RT.RESOURCE_TYPE_AGENT_MESSAGE,
        "AgentMessage",
        "agentMessages",
        "agent_message",
        "message",
        fhir_native=False,
    ),
)

BY_ENUM = {t.enum: t for t in RESOURCE_TYPES}
BY_NAME = {t.name: t for t in RESOURCE_TYPES}
BY_COLLECTION = {t.collection: t for t in RESOURCE_TYPES}
BY_FIELD = {t.field: t for t in RESOURCE_TYPES}
# FHIR R4 resource types a bundle may carry (HACS-only types are not FHIR).
BY_FHIR_TYPE = {t.name: t for t in RESOURCE_TYPES if t.fhir_native}


def of_record(record: record_pb2.Record) -> ResourceTypeInfo | None:
    """The type of the record's typed resource (None when none is set)."""
    field = record.WhichOneof("resource")
    return BY_FIELD.get(field) if field else None
