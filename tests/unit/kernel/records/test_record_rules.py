"""Per-type rules of records: derived facts, content checks, names, list syntax."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hacs.records.v1 import memory_block_pb2, record_pb2

from services.common.errors import Invalid
from services.common.validation import Violations
from services.kernel.records import derive
from services.kernel.records.content import check_record
from services.kernel.records.names import new_record_id, parse_record_name
from services.kernel.records.reads import parse_code_token, parse_order_by
from services.kernel.records.resource_types import BY_FIELD, BY_NAME, RESOURCE_TYPES, of_record
from tests.support import clinical

PATIENT = "tenants/acme/patients/p-1"


def violations(record: record_pb2.Record, tenant: str = "acme") -> dict[str, str]:
    v = Violations()
    check_record(record, "record", v, tenant_id=tenant)
    return {x.field: x.description for x in v.items}


def test_registry_covers_every_oneof_member_once() -> None:
    members = {f.name for f in record_pb2.Record.DESCRIPTOR.oneofs_by_name["resource"].fields}
    assert members == set(BY_FIELD)
    assert len({t.collection for t in RESOURCE_TYPES}) == len(RESOURCE_TYPES)
    assert {t.enum for t in RESOURCE_TYPES} == set(record_pb2.ResourceType.values()) - {0}


def test_observation_facts() -> None:
    record = clinical.hba1c(PATIENT, 7.1, datetime(2024, 2, 3, 4, 5, tzinfo=UTC))
    info = of_record(record)
    assert info is BY_NAME["Observation"]
    assert derive.patient_id(record, info, "o-1") == "p-1"
    assert derive.clinical_time(record, info, datetime(2000, 1, 1, tzinfo=UTC)) == datetime(
        2024, 2, 3, 4, 5, tzinfo=UTC
    )
    comp = record.observation.component.add()
    comp.code.coding.add(system=clinical.LOINC, code="8480-6")
    assert derive.codes(record, info) == {(clinical.LOINC, "4548-4"), (clinical.LOINC, "8480-6")}


def test_clinical_time_falls_back_and_reads_fhir_dates() -> None:
    created = datetime(2025, 1, 1, tzinfo=UTC)
    patient = clinical.patient()
    assert derive.clinical_time(patient, BY_NAME["Patient"], created) == created
    goal = record_pb2.Record()
    goal.goal.start_date = "2024-07"
    assert derive.clinical_time(goal, BY_NAME["Goal"], created) == datetime(2024, 7, 1, tzinfo=UTC)


def test_a_foreign_or_odd_patient_reference_has_no_compartment() -> None:
    record = clinical.hba1c("Patient/123", 7.0)
    assert derive.patient_id(record, BY_NAME["Observation"], "o") is None


def test_valid_records_pass() -> None:
    assert violations(clinical.patient()) == {}
    assert violations(clinical.hba1c(PATIENT, 6.2)) == {}
    assert violations(clinical.condition(PATIENT)) == {}


def test_content_rules_name_each_field() -> None:
    record = clinical.hba1c(PATIENT, 7.0)
    record.observation.status = "done"
    record.observation.ClearField("code")
    record.labels["Bad Key"] = "x"
    found = violations(record)
    assert "record.observation.status" in found and "final" in found["record.observation.status"]
    assert found["record.observation.code"] == "is required for Observation"
    assert "record.labels['Bad Key']" in found


def test_references_must_stay_in_the_tenant() -> None:
    record = clinical.hba1c("tenants/other/patients/p-1", 7.0)
    found = violations(record)
    assert list(found) == ["record.observation.subject.reference"]
    record.observation.subject.reference = "tenants/acme/observations/o-2"
    assert "patient of this tenant" in violations(record)["record.observation.subject.reference"]


def test_scores_dates_and_codings_are_checked() -> None:
    memory = record_pb2.Record()
    memory.memory_block.memory_type = memory_block_pb2.MEMORY_TYPE_EPISODIC
    memory.memory_block.content = "Patient prefers morning appointments"
    memory.memory_block.importance_score = 1.5
    assert "record.memory_block.importance_score" in violations(memory)
    patient = clinical.patient(birth="12/04/1956")
    assert "record.patient.birth_date" in violations(patient)
    cond = clinical.condition(PATIENT)
    cond.condition.code.coding[0].system = "snomed"
    assert "record.condition.code.coding[0].system" in violations(cond)


def test_empty_record_is_refused() -> None:
    assert list(violations(record_pb2.Record())) == ["record.resource"]


def test_names() -> None:
    name = parse_record_name("tenants/acme/medicationStatements/ms-1")
    assert (name.tenant_id, name.info.name, name.id) == ("acme", "MedicationStatement", "ms-1")
    for bad in ("tenants/acme/claims/c-1", "acme/patients/p", "tenants/acme/patients/has space"):
        with pytest.raises(Invalid):
            parse_record_name(bad)
    assert new_record_id(BY_NAME["Patient"]).startswith("patient-")


def test_list_syntax() -> None:
    assert parse_order_by("") == ("update_time", True)
    assert parse_order_by("clinical_time") == ("clinical_time", False)
    assert parse_order_by("name desc") == ("name", True)
    for bad in ("weight", "name sideways", "name, update_time"):
        with pytest.raises(Invalid):
            parse_order_by(bad)
    assert parse_code_token("http://loinc.org|4548-4") == ("http://loinc.org", "4548-4")
    assert parse_code_token("|E11") == ("", "E11")
    assert parse_code_token("E11") == (None, "E11")
