"""Small builders of clinical records for tests (real codes, real systems)."""

from __future__ import annotations

from datetime import UTC, datetime

from hacs.common.v1 import datatypes_pb2
from hacs.records.v1 import record_pb2

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"


def concept(system: str, code: str, display: str) -> datatypes_pb2.CodeableConcept:
    return datatypes_pb2.CodeableConcept(
        coding=[datatypes_pb2.Coding(system=system, code=code, display=display)], text=display
    )


def patient(
    family: str = "Garcia", given: str = "Maria", gender: str = "female", birth: str = "1956-04-12"
) -> record_pb2.Record:
    record = record_pb2.Record()
    record.patient.name.add(family=family, given=[given], use="official")
    record.patient.gender = gender
    record.patient.birth_date = birth
    return record


def hba1c(patient_name: str, percent: float, when: datetime | None = None) -> record_pb2.Record:
    record = record_pb2.Record()
    obs = record.observation
    obs.status = "final"
    obs.code.CopyFrom(concept(LOINC, "4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood"))
    obs.subject.reference = patient_name
    obs.subject.type = "Patient"
    obs.value_quantity.CopyFrom(
        datatypes_pb2.Quantity(value=percent, unit="%", system=UCUM, code="%")
    )
    obs.effective_date_time.FromDatetime(when or datetime(2024, 3, 5, 9, 30, tzinfo=UTC))
    return record


def condition(
    patient_name: str, code: str = "44054006", display: str = "Diabetes mellitus type 2"
) -> record_pb2.Record:
    record = record_pb2.Record()
    cond = record.condition
    cond.clinical_status = "active"
    cond.code.CopyFrom(concept(SNOMED, code, display))
    cond.code.coding.add(
        system=ICD10, code="E11.9", display="Type 2 diabetes mellitus without complications"
    )
    cond.subject.reference = patient_name
    return record
