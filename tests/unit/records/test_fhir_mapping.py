"""FHIR R4 resource JSON <-> Record: fields, references, dates, kept elements, Basic.

The examples under tests/data/fhir are small FHIR R4 bundles modelled on the
spec's examples; every exported resource is validated with fhir.resources.
"""

from __future__ import annotations

import copy
import json
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from google.protobuf import json_format
from hacs.common.v1 import datatypes_pb2
from hacs.records.v1 import (
    agent_message_pb2,
    evidence_pb2,
    memory_block_pb2,
    record_pb2,
)

from services.kernel.records import resource_types
from services.records.fhir import (
    FhirMappingError,
    dates,
    fhir_id,
    fhir_to_record,
    parse_bundle,
    record_to_fhir,
    reference_resolver,
    resource_type_of,
)
from services.records.fhir.bundle import ParsedBundle
from services.records.fhir.extensions import BASE, RESOURCE_TYPE_SYSTEM
from services.records.fhir.fields import GROUPED, WRAPPED_REFERENCES, Kind, fhir_fields
from services.records.fhir.validation import validate

DATA = Path(__file__).parents[2] / "data" / "fhir"
TENANT = "acme"
Json = dict[str, Any]


def load(name: str) -> Any:
    return json.loads((DATA / name).read_text())


def no_bundle(reference: str) -> str | None:
    return None


def named(bundle: ParsedBundle) -> dict[int, str]:
    """Names as the domain gives them: the FHIR id, else one derived from the index."""
    names = {}
    for entry in bundle.entries:
        info = resource_type_of(entry.resource) if entry.resource else None
        if info is not None:
            record_id = entry.fhir_id or f"{info.name.lower()}-{entry.index:04d}"
            names[entry.index] = f"tenants/{TENANT}/{info.collection}/{record_id}"
    return names


def imported(bundle_file: str) -> tuple[ParsedBundle, dict[int, str], list[record_pb2.Record]]:
    bundle = parse_bundle((DATA / bundle_file).read_text())
    names = named(bundle)
    resolve = reference_resolver(bundle, names, TENANT)
    records = []
    for entry in bundle.entries:
        assert entry.resource is not None
        record = fhir_to_record(entry.resource, tenant_id=TENANT, resolve_reference=resolve)
        record.name = names[entry.index]
        records.append(record)
    return bundle, names, records


def exported(record: record_pb2.Record) -> Json:
    info = resource_types.of_record(record)
    assert info is not None
    record.resource_type = record_pb2.ResourceType.ValueType(info.enum)  # set by import
    resource, warnings = record_to_fhir(record)
    assert warnings == []
    validate(resource)  # the export is itself valid FHIR
    return resource


def by_code(records: list[record_pb2.Record], code: str) -> record_pb2.Record:
    for record in records:
        typed = getattr(record, record.WhichOneof("resource") or "")
        concept = getattr(typed, "code", None) or getattr(
            typed, "medication_codeable_concept", None
        )
        if concept is not None and any(c.code == code for c in concept.coding):
            return record
    raise AssertionError(f"no record with code {code}")


# -- round trips -----------------------------------------------------------------------


def _as_exported(original: Json, resolve: Callable[[str], str | None]) -> Json:
    """What export should give for an imported resource: the same JSON with references
    as "Type/id" (their optional `type` is compared apart)."""

    def walk(value: Any) -> Any:
        if isinstance(value, list):
            return [walk(item) for item in value]
        if not isinstance(value, dict):
            return value
        out = {key: walk(item) for key, item in value.items() if key != "type"}
        if "type" in value and "reference" not in value:
            out["type"] = walk(value["type"])
        if isinstance(value.get("reference"), str):
            name = resolve(value["reference"])
            assert name is not None
            _, collection, record_id = name.rsplit("/", 2)
            info = resource_types.BY_COLLECTION[collection]
            out["reference"] = f"{info.fhir_type}/{record_id}"
        return out

    return typing.cast(Json, walk(original))


@pytest.mark.parametrize(
    "bundle_file", ["transaction-diabetes-visit.json", "collection-care-summary.json"]
)
def test_export_gives_back_the_imported_json_with_references_as_type_id(bundle_file: str) -> None:
    bundle, names, records = imported(bundle_file)
    resolve = reference_resolver(bundle, names, TENANT)
    for entry, record in zip(bundle.entries, records, strict=True):
        assert entry.resource is not None
        expected = _as_exported(entry.resource, resolve)
        expected["id"] = record.name.rsplit("/", 1)[-1]
        assert _as_exported(exported(record), resolve) == expected, entry.fhir_type


@pytest.mark.parametrize(
    "bundle_file",
    [
        "transaction-diabetes-visit.json",
        "collection-care-summary.json",
        "batch-follow-up-vitals.json",
    ],
)
def test_record_fhir_record_is_stable(bundle_file: str) -> None:
    bundle = parse_bundle((DATA / bundle_file).read_text())
    names = named(bundle)
    resolve = reference_resolver(bundle, names, TENANT)
    for entry in bundle.entries:
        if entry.resource is None:
            continue
        record = fhir_to_record(entry.resource, tenant_id=TENANT, resolve_reference=resolve)
        record.name = names[entry.index]
        again = fhir_to_record(exported(record), tenant_id=TENANT, resolve_reference=no_bundle)
        again.name = record.name
        assert again == record, entry.fhir_type


def test_hba1c_maps_code_value_unit_references_and_time() -> None:
    _, names, records = imported("transaction-diabetes-visit.json")
    record = by_code(records, "4548-4")
    observation = record.observation
    assert record.resource_type == record_pb2.RESOURCE_TYPE_OBSERVATION
    assert record.name == names[4] and record.name.startswith("tenants/acme/observations/")
    assert observation.status == "final"
    assert (observation.code.coding[0].system, observation.code.coding[0].code) == (
        "http://loinc.org",
        "4548-4",
    )
    assert observation.value_quantity == datatypes_pb2.Quantity(
        value=7.2, unit="%", system="http://unitsofmeasure.org", code="%"
    )
    assert observation.subject.reference == names[0]
    assert observation.subject.type == "Patient"
    assert observation.encounter.reference == names[3]
    # 09:30 at UTC-5 is 14:30 UTC.
    assert observation.effective_date_time.ToJsonString() == "2024-03-05T14:30:00Z"
    assert observation.issued.ToJsonString() == "2024-03-05T15:02:11.250Z"
    assert list(observation.note) == ["Above the 7 % target; review metformin dose."]
    assert observation.reference_range[0].text == "< 5.7 %"
    # The note's author and time are not in the contract: the full annotation is kept,
    # with its reference rewritten to the practitioner's name.
    kept = json_format.MessageToDict(record.extensions)
    assert kept["note"][0]["authorReference"] == {"reference": names[2]}


def test_blood_pressure_components_keep_loinc_codes_and_mm_hg() -> None:
    _, _, records = imported("transaction-diabetes-visit.json")
    panel = by_code(records, "85354-9").observation
    parts = {c.code.coding[0].code: c.value_quantity for c in panel.component}
    assert parts["8480-6"].value == 142 and parts["8480-6"].code == "mm[Hg]"
    assert parts["8462-4"].value == 88 and parts["8462-4"].unit == "mmHg"
    resource = exported(by_code(records, "85354-9"))
    assert resource["meta"]["profile"] == ["http://hl7.org/fhir/StructureDefinition/bp"]
    assert [c["valueQuantity"]["value"] for c in resource["component"]] == [142, 88]


def test_conditions_keep_snomed_and_icd10_and_status_codes() -> None:
    _, _, records = imported("transaction-diabetes-visit.json")
    diabetes = by_code(records, "44054006").condition
    assert [(c.system, c.code) for c in diabetes.code.coding] == [
        ("http://snomed.info/sct", "44054006"),
        ("http://hl7.org/fhir/sid/icd-10-cm", "E11.9"),
    ]
    assert (diabetes.clinical_status, diabetes.verification_status) == ("active", "confirmed")
    hypertension = by_code(records, "38341003")
    assert hypertension.condition.code.coding[1].code == "I10"
    resource = exported(hypertension)
    assert resource["clinicalStatus"] == {
        "coding": [
            {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}
        ]
    }


def test_partial_dates_are_stored_at_their_first_instant_and_exported_as_given() -> None:
    _, _, records = imported("transaction-diabetes-visit.json")
    diabetes = by_code(records, "44054006")
    assert diabetes.condition.onset_date_time.ToJsonString() == "2019-01-01T00:00:00Z"
    assert diabetes.condition.recorded_date.ToJsonString() == "2019-06-14T00:00:00Z"
    hypertension = by_code(records, "38341003")
    assert hypertension.condition.onset_date_time.ToJsonString() == "2016-03-01T00:00:00Z"
    assert exported(diabetes)["onsetDateTime"] == "2019"
    assert exported(hypertension)["onsetDateTime"] == "2016-03"
    # FHIR `date` fields the contract keeps as strings stay as given.
    _, _, summary = imported("collection-care-summary.json")
    assert summary[0].patient.birth_date == "1955-09"
    assert summary[4].goal.start_date == "2024-02-12"


def test_a_change_made_in_hacs_wins_over_the_kept_original() -> None:
    _, _, records = imported("transaction-diabetes-visit.json")
    diabetes = by_code(records, "44054006")
    diabetes.condition.onset_date_time.FromJsonString("2020-05-01T00:00:00Z")
    diabetes.condition.note.append("Diagnosed by OGTT.")
    resource, warnings = record_to_fhir(diabetes)
    assert resource["onsetDateTime"] == "2020-05-01T00:00:00Z"
    assert resource["note"] == [{"text": "Diagnosed by OGTT."}]
    assert any("Condition.onsetDateTime" in w for w in warnings)
    validate(resource)


def test_medication_and_dosage_map_rxnorm_ucum_and_context() -> None:
    _, names, records = imported("transaction-diabetes-visit.json")
    statement = by_code(records, "860975").medication_statement
    coding = statement.medication_codeable_concept.coding[0]
    assert (coding.system, coding.code) == ("http://www.nlm.nih.gov/research/umls/rxnorm", "860975")
    assert statement.encounter.reference == names[3]  # FHIR `context`
    assert statement.reason_reference[0].reference == names[6]
    dose = statement.dosage[0].dose_and_rate[0].dose_quantity
    assert (dose.value, dose.code) == (500, "mg")
    assert statement.dosage[0].timing.repeat.period_unit == "d"
    assert statement.effective_period.start.ToJsonString() == "2019-06-14T00:00:00Z"


def test_renamed_wrapped_and_flattened_elements() -> None:
    _, names, records = imported("transaction-diabetes-visit.json")
    encounter = records[3]
    assert encounter.encounter.encounter_class.code == "AMB"  # FHIR `class`
    assert encounter.encounter.length.ToSeconds() == 30 * 60
    assert records[0].patient.care_provider[0].reference == names[2]  # generalPractitioner

    location = {"reference": "urn:uuid:loc-1"}
    resource = {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"code": "AMB"},
        "location": [{"location": location, "status": "completed"}],
    }
    record = fhir_to_record(
        resource, tenant_id=TENANT, resolve_reference=lambda _: "tenants/acme/organizations/o-1"
    )
    assert record.encounter.location[0].reference == "tenants/acme/organizations/o-1"
    assert exported(record)["location"] == [
        {
            "location": {"reference": "Organization/o-1", "type": "Organization"},
            "status": "completed",
        }
    ]

    _, _, summary = imported("collection-care-summary.json")
    dispense = summary[3].medication_request.dispense_request
    assert dispense.initial_fill_quantity.value == 30
    assert dispense.initial_fill_duration.code == "d"
    assert exported(summary[3])["dispenseRequest"]["initialFill"]["duration"]["value"] == 30


def test_edited_duration_is_exported_in_minutes() -> None:
    _, _, records = imported("transaction-diabetes-visit.json")
    encounter = records[3]
    assert exported(encounter)["length"]["unit"] == "minutes"  # the original, unchanged
    encounter.encounter.length.FromSeconds(45 * 60)
    resource, warnings = record_to_fhir(encounter)
    assert resource["length"] == {
        "value": 45,
        "unit": "min",
        "system": "http://unitsofmeasure.org",
        "code": "min",
    }
    assert warnings


# -- elements the contract does not model ------------------------------------------------

UNMODELLED: Json = {
    "resourceType": "Observation",
    "id": "glucose-cgm",
    "meta": {"versionId": "7", "lastUpdated": "2024-01-01T00:00:00Z", "tag": [{"code": "cgm"}]},
    "language": "en-US",
    "contained": [
        {
            "resourceType": "Device",
            "id": "cgm",
            "deviceName": [{"name": "CGM", "type": "model-name"}],
        }
    ],
    "extension": [
        {
            "url": "http://example.org/fhir/StructureDefinition/sensor-site",
            "valueString": "left arm",
        }
    ],
    "modifierExtension": [
        {"url": "http://example.org/fhir/StructureDefinition/unverified", "valueBoolean": True}
    ],
    "identifier": [
        {
            "system": "urn:ietf:rfc:3986",
            "value": "urn:uuid:1f0c",
            "assigner": {"display": "Acme Lab"},
        }
    ],
    "status": "preliminary",
    "_status": {"extension": [{"url": "http://example.org/why", "valueString": "sensor warm-up"}]},
    "code": {
        "coding": [{"system": "http://loinc.org", "code": "2339-0", "userSelected": False}],
        "text": "Glucose",
    },
    "subject": {
        "reference": "Patient/pat-1",
        "extension": [{"url": "http://example.org/x", "valueInteger": 4}],
    },
    "device": {"reference": "#cgm"},
    "effectiveInstant": "2024-03-01T08:00:00.123Z",
    "valueSampledData": {
        "origin": {
            "value": 0,
            "unit": "mg/dL",
            "system": "http://unitsofmeasure.org",
            "code": "mg/dL",
        },
        "period": 300000,
        "dimensions": 1,
        "data": "112 118 131 140",
    },
    "component": [
        {
            "extension": [{"url": "http://example.org/trend", "valueCode": "rising"}],
            "code": {"text": "Trend"},
            "valueString": "rising",
        }
    ],
}


def test_unmodelled_elements_are_kept_under_their_fhir_names_and_exported_again() -> None:
    resource = copy.deepcopy(UNMODELLED)
    record = fhir_to_record(resource, tenant_id=TENANT, resolve_reference=no_bundle)
    kept = json_format.MessageToDict(record.extensions)
    assert set(kept) == {
        "meta",
        "language",
        "contained",
        "extension",
        "modifierExtension",
        "identifier[0].assigner",
        "_status",
        "code.coding[0].userSelected",
        "subject.extension",
        "device",
        "effectiveInstant",
        "valueSampledData",
        "component[0].extension",
    }
    assert kept["meta"] == {"tag": [{"code": "cgm"}]}  # version and time are the server's
    assert record.observation.subject.reference == "tenants/acme/patients/pat-1"
    assert record.observation.component[0].value_string == "rising"
    record.name, record.version = "tenants/acme/observations/glucose-cgm", 2
    out = exported(record)
    expected = {**resource, "meta": {"tag": [{"code": "cgm"}], "versionId": "2"}}
    expected["subject"] = {**resource["subject"], "reference": "Patient/pat-1", "type": "Patient"}
    assert out == expected


def test_elements_kept_for_a_removed_part_are_reported_not_lost_silently() -> None:
    resource = copy.deepcopy(UNMODELLED)
    record = fhir_to_record(resource, tenant_id=TENANT, resolve_reference=no_bundle)
    del record.observation.component[:]
    out, warnings = record_to_fhir(record)
    assert "component" not in out
    assert any("Observation.component[0].extension" in w for w in warnings)


def test_extensions_a_hacs_client_wrote_that_are_not_fhir_are_not_exported() -> None:
    record = record_pb2.Record(name="tenants/acme/goals/g-1")
    record.goal.lifecycle_status = "active"
    record.goal.description.text = "Walk 30 minutes a day"
    record.goal.subject.reference = "tenants/acme/patients/p-1"
    record.extensions.update({"favouriteColour": "blue", "language": "en"})
    out, warnings = record_to_fhir(record)
    assert "favouriteColour" not in out and out["language"] == "en"
    assert any("favouriteColour" in w for w in warnings)
    validate(out)


def test_narrative_becomes_plain_text_and_comes_back_as_xhtml() -> None:
    resource = {
        "resourceType": "Patient",
        "text": {
            "status": "additional",
            "div": '<div xmlns="http://www.w3.org/1999/xhtml"><p><b>Ana</b> Souza</p>'
            "<ul><li>MRN 00457812</li></ul></div>",
        },
    }
    record = fhir_to_record(resource, tenant_id=TENANT, resolve_reference=no_bundle)
    assert record.text == "Ana Souza\nMRN 00457812"
    assert exported(record)["text"] == resource["text"]  # unchanged: the original
    record.text = "Ana M. Souza"
    assert exported(record)["text"] == {
        "status": "generated",
        "div": '<div xmlns="http://www.w3.org/1999/xhtml"><p>Ana M. Souza</p></div>',
    }


# -- references ----------------------------------------------------------------------------


def test_type_id_references_become_names_and_come_back() -> None:
    resource = {
        "resourceType": "Condition",
        "subject": {"reference": "Patient/123", "display": "Ana Souza"},
        "encounter": {"reference": "Encounter/enc.7/_history/2"},
        "evidence": [{"detail": [{"reference": "Observation/obs-1"}]}],
    }
    record = fhir_to_record(resource, tenant_id="beta", resolve_reference=no_bundle)
    condition = record.condition
    assert condition.subject == datatypes_pb2.Reference(
        reference="tenants/beta/patients/123", type="Patient", display="Ana Souza"
    )
    assert condition.encounter.reference == "tenants/beta/encounters/enc.7"
    assert condition.evidence[0].detail[0].reference == "tenants/beta/observations/obs-1"
    out = exported(record)
    assert out["subject"] == {"reference": "Patient/123", "type": "Patient", "display": "Ana Souza"}
    assert out["evidence"][0]["detail"][0]["reference"] == "Observation/obs-1"


def test_urn_uuid_references_resolve_through_the_bundle() -> None:
    seen: list[str] = []

    def resolve(reference: str) -> str | None:
        seen.append(reference)
        return "tenants/acme/patients/p-9" if reference == "urn:uuid:abc" else None

    resource = {"resourceType": "AllergyIntolerance", "patient": {"reference": "urn:uuid:abc"}}
    record = fhir_to_record(resource, tenant_id=TENANT, resolve_reference=resolve)
    assert record.allergy_intolerance.patient.reference == "tenants/acme/patients/p-9"
    assert record.allergy_intolerance.patient.type == "Patient"
    assert seen == ["urn:uuid:abc"]


@pytest.mark.parametrize(
    "reference",
    [
        "urn:uuid:0f0e0d0c-0000-4000-8000-000000000000",
        "Location/1",
        "http://other.org/fhir/Patient/1",
    ],
)
def test_unresolvable_references_are_rejected_where_they_are(reference: str) -> None:
    resource = {
        "resourceType": "Procedure",
        "status": "completed",
        "subject": {"reference": "Patient/p-1"},
        "performer": [{"actor": {"reference": reference}}],
    }
    with pytest.raises(FhirMappingError) as caught:
        fhir_to_record(resource, tenant_id=TENANT, resolve_reference=no_bundle)
    assert caught.value.location == "Procedure.performer[0].actor.reference"
    assert reference in caught.value.reason
    assert (
        "does not resolve to an entry of this bundle or a HACS resource type" in caught.value.reason
    )


def test_references_to_hacs_only_types_stay_unambiguous() -> None:
    record = record_pb2.Record(name="tenants/acme/conditions/c-1")
    record.condition.code.text = "Chest pain"
    record.condition.subject.reference = "tenants/acme/patients/p-1"
    record.condition.evidence.add().detail.add(
        reference="tenants/acme/evidence/ev-1", type="Evidence"
    )
    out = exported(record)
    detail = out["evidence"][0]["detail"][0]
    assert detail["reference"] == "Basic/ev-1" and detail["type"] == "Basic"
    back = fhir_to_record(out, tenant_id=TENANT, resolve_reference=no_bundle)
    assert back.condition.evidence[0].detail[0] == record.condition.evidence[0].detail[0]


# -- HACS data in FHIR -----------------------------------------------------------------------


def test_labels_agent_meta_and_hacs_only_fields_travel_as_extensions() -> None:
    record = record_pb2.Record(name="tenants/acme/patients/p-1", version=4)
    record.update_time.FromJsonString("2024-03-05T10:00:00Z")
    record.labels.update({"source": "intake-agent", "cohort": "dm2"})
    record.agent_meta.model = "claude-sonnet"
    record.agent_meta.confidence = 0.82
    record.agent_meta.citations.append("tenants/acme/evidence/ev-1")
    record.identifier.add(system="http://hospital.example.org/mrn", value="00457812")
    patient = record.patient
    patient.full_name = "Dr. Ana Maria Souza"
    patient.age = 56
    patient.agent_context.update({"preferred_agent": "primary-care-assistant"})
    patient.gender = "female"
    patient.active = False  # presence matters: false is exported
    out = exported(record)
    assert out["meta"] == {"versionId": "4", "lastUpdated": "2024-03-05T10:00:00Z"}
    assert out["active"] is False
    urls = [extension["url"] for extension in out["extension"]]
    assert urls == [
        BASE + "labels",
        BASE + "agent-meta",
        BASE + "patient-full-name",
        BASE + "patient-age",
        BASE + "patient-agent-context",
    ]
    back = fhir_to_record(out, tenant_id=TENANT, resolve_reference=no_bundle)
    assert back.patient == record.patient
    assert back.labels == record.labels
    assert back.agent_meta == record.agent_meta
    assert list(back.identifier) == list(record.identifier)
    assert not back.HasField("extensions") or not back.extensions.fields


def test_medication_text_and_anonymous_practitioner_are_extensions() -> None:
    statement = record_pb2.Record(name="tenants/acme/medicationStatements/ms-1")
    statement.medication_statement.status = "active"
    statement.medication_statement.medication_text = "the blue pill for sugar"
    statement.medication_statement.subject.reference = "tenants/acme/patients/p-1"
    statement.medication_statement.subject.type = "Patient"
    practitioner = record_pb2.Record(name="tenants/acme/practitioners/pr-1")
    practitioner.practitioner.anonymous = True
    practitioner.practitioner.photo.append("data:image/png;base64,iVBORw0KGgo=")
    out = exported(statement)  # FHIR requires medication[x]: the text stands in for it
    assert out["medicationCodeableConcept"] == {"text": "the blue pill for sugar"}
    for record in (statement, practitioner):
        back = fhir_to_record(exported(record), tenant_id=TENANT, resolve_reference=no_bundle)
        back.name = record.name
        assert back == record


def _memory_block() -> record_pb2.Record:
    record = record_pb2.Record(name="tenants/acme/memoryBlocks/memoryblock-1a2b3c4d", version=2)
    memory = record.memory_block
    memory.memory_type = memory_block_pb2.MEMORY_TYPE_EPISODIC
    memory.content = "Patient reported dizziness after the metformin dose increase."
    memory.importance_score = 0.8
    memory.patient = "tenants/acme/patients/pat-ana-souza"
    memory.agent = "tenants/acme/actors/care-agent"
    memory.related_memories.append("tenants/acme/memoryBlocks/memoryblock-00000001")
    memory.participants.extend(["tenants/acme/practitioners/pr-1", "the patient's daughter"])
    memory.event_time.FromJsonString("2024-03-05T10:00:00Z")
    memory.context_metadata.update({"patient_id": "pat-ana-souza", "encounter_id": "enc-4"})
    record.labels["source"] = "triage"
    record.text = "Dizziness after dose increase"
    return record


def _evidence() -> record_pb2.Record:
    record = record_pb2.Record(name="tenants/acme/evidence/evidence-5e6f7a8b")
    evidence = record.evidence
    evidence.title = "Metformin and cardiovascular outcomes in type 2 diabetes"
    evidence.authors.add(full_name="Jane Q. Smith", affiliation="Example University")
    evidence.publication_year = 2016
    evidence.doi = "10.1056/NEJMoa1603827"
    evidence.evidence_type = evidence_pb2.EVIDENCE_TYPE_SYSTEMATIC_REVIEW
    evidence.evidence_level = evidence_pb2.EVIDENCE_LEVEL_HIGH
    evidence.confidence_score = 0.9
    evidence.linked_resources.append("tenants/acme/conditions/c-1")
    record.agent_meta.model = "claude-sonnet"
    return record


def _agent_message() -> record_pb2.Record:
    record = record_pb2.Record(name="tenants/acme/agentMessages/agentmessage-9c0d1e2f")
    message = record.agent_message
    message.role = agent_message_pb2.MESSAGE_ROLE_ASSISTANT
    message.content = "HbA1c is 7.2 %, above target."
    message.related_resources.add(reference="tenants/acme/observations/obs-a1c", type="Observation")
    message.in_reply_to = "tenants/acme/agentMessages/agentmessage-00000001"
    message.conversation = "conv-17"
    message.tool_calls.add().update({"name": "lookup_lab", "arguments": {"code": "4548-4"}})
    return record


@pytest.mark.parametrize("make", [_memory_block, _evidence, _agent_message])
def test_hacs_only_types_export_as_basic_and_come_back(
    make: Callable[[], record_pb2.Record],
) -> None:
    record = make()
    info = resource_types.of_record(record)
    assert info is not None
    out = exported(record)
    assert out["resourceType"] == "Basic"
    assert out["code"]["coding"][0]["system"] == RESOURCE_TYPE_SYSTEM
    assert out["code"]["coding"][0]["code"] == info.name
    assert "tenants/acme" not in json.dumps(out)  # names travel without the tenant
    assert resource_type_of(out) is info
    back = fhir_to_record(out, tenant_id=TENANT, resolve_reference=no_bundle)
    back.name, back.version = record.name, record.version
    assert back == record


def test_basic_payload_names_belong_to_the_importing_tenant() -> None:
    out = exported(_memory_block())
    assert out["subject"] == {"reference": "Patient/pat-ana-souza", "type": "Patient"}
    back = fhir_to_record(out, tenant_id="beta", resolve_reference=no_bundle)
    memory = back.memory_block
    assert memory.patient == "tenants/beta/patients/pat-ana-souza"
    assert memory.agent == "tenants/beta/actors/care-agent"
    assert list(memory.participants) == [
        "tenants/beta/practitioners/pr-1",
        "the patient's daughter",
    ]
    tampered = copy.deepcopy(out)
    payload = json.loads(tampered["extension"][0]["valueString"])
    payload["patient"] = "tenants/other/patients/p-1"
    tampered["extension"][0]["valueString"] = json.dumps(payload)
    with pytest.raises(FhirMappingError) as caught:
        fhir_to_record(tampered, tenant_id="beta", resolve_reference=no_bundle)
    assert caught.value.location == "Basic.extension[0].valueString"
    assert "another tenant" in caught.value.reason


def test_a_foreign_basic_is_not_a_hacs_resource() -> None:
    basic = {"resourceType": "Basic", "code": {"coding": [{"system": "http://x.org", "code": "y"}]}}
    with pytest.raises(FhirMappingError) as caught:
        fhir_to_record(basic, tenant_id=TENANT, resolve_reference=no_bundle)
    assert caught.value.location == "Basic.code"
    broken = exported(_evidence())
    broken["extension"][0]["valueString"] = '{"title": 42, "no_such_field": 1}'
    with pytest.raises(FhirMappingError) as caught:
        fhir_to_record(broken, tenant_id=TENANT, resolve_reference=no_bundle)
    assert caught.value.location == "Basic.extension[0].valueString"


# -- invalid input ------------------------------------------------------------------------------


def test_the_invalid_transaction_names_the_bad_status_and_the_missing_code() -> None:
    bundle = parse_bundle((DATA / "invalid-transaction-observations.json").read_text())
    resolve = reference_resolver(bundle, named(bundle), TENANT)
    outcomes: list[tuple[str, str] | None] = []
    for entry in bundle.entries:
        assert entry.resource is not None
        try:
            fhir_to_record(entry.resource, tenant_id=TENANT, resolve_reference=resolve)
            outcomes.append(None)
        except FhirMappingError as error:
            outcomes.append((error.location, error.reason))
    assert outcomes[0] is None
    assert outcomes[1] is not None and outcomes[1][0] == "Observation.status"
    assert "'done'" in outcomes[1][1] and "observation-status" in outcomes[1][1]
    assert outcomes[2] == ("Observation.code", "required element Observation.code is missing")


def test_unsupported_resource_types_are_rejected_by_name() -> None:
    claim = load("invalid-batch-unsupported-type.json")["entry"][1]["resource"]
    with pytest.raises(FhirMappingError) as caught:
        fhir_to_record(claim, tenant_id=TENANT, resolve_reference=no_bundle)
    assert caught.value.location == "Claim.resourceType"
    assert "'Claim' is not supported" in caught.value.reason


@pytest.mark.parametrize(
    ("resource", "location", "words"),
    [
        (load("invalid-patient-birthdate.json"), "Patient.birthDate", "'not-a-date'"),
        (
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": "x"},
                "effectiveDateTime": "2024-03-01T10:00:00",
            },
            "Observation.effectiveDateTime",
            "with a zone",
        ),
        (
            {"resourceType": "Patient", "gender": "femal"},
            "Patient.gender",
            "administrative-gender",
        ),
        (
            {"resourceType": "Patient", "telecom": [{"system": "telegram", "value": "@ana"}]},
            "Patient.telecom[0].system",
            "contact-point-system",
        ),
        (
            {
                "resourceType": "Condition",
                "subject": {"reference": "Patient/p"},
                "clinicalStatus": {
                    "coding": [{"system": "http://snomed.info/sct", "code": "55561003"}]
                },
            },
            "Condition.clinicalStatus",
            "condition-clinical",
        ),
        ({"resourceType": "Patient", "nickname": "Ana"}, "Patient.nickname", "not an element"),
        ({"status": "final"}, "resourceType", "no resourceType"),
    ],
)
def test_invalid_resources_are_rejected_with_location_and_reason(
    resource: Json, location: str, words: str
) -> None:
    with pytest.raises(FhirMappingError) as caught:
        fhir_to_record(resource, tenant_id=TENANT, resolve_reference=no_bundle)
    assert caught.value.location == location
    assert words in caught.value.reason


@pytest.mark.parametrize(
    ("text", "instant"),
    [
        ("2024", "2024-01-01T00:00:00Z"),
        ("2024-03", "2024-03-01T00:00:00Z"),
        ("2024-03-05", "2024-03-05T00:00:00Z"),
        ("2024-03-05T23:30:00-05:00", "2024-03-06T04:30:00Z"),
        ("2024-03-05T09:30:00.123456789+01:00", "2024-03-05T08:30:00.123456789Z"),
        ("2024-02-30", None),
        ("2024-12-31T23:59:60Z", None),
        ("0001-01-01T00:00:00+05:00", None),
        ("5 March 2024", None),
    ],
)
def test_fhir_date_times_are_read_as_their_first_instant_in_utc(
    text: str, instant: str | None
) -> None:
    parsed = dates.parse_date_time(text)
    assert (parsed.ToJsonString() if parsed else None) == instant


def test_fhir_id() -> None:
    assert fhir_id({"resourceType": "Patient", "id": "pat-1"}) == "pat-1"
    assert fhir_id({"resourceType": "Patient"}) == ""


# -- the contract against FHIR ----------------------------------------------------------------


def _model_of(annotation: Any) -> Any:
    """The fhir.resources model class inside a field annotation (Optional[List[XType]])."""
    if hasattr(annotation, "get_model_klass"):
        return annotation.get_model_klass()
    for argument in typing.get_args(annotation):
        found = _model_of(argument)
        if found is not None:
            return found
    return None


def _check(descriptor: Any, model: Any, path: str, problems: list[str]) -> None:
    aliases = {field.alias or name: field for name, field in model.model_fields.items()}
    for key, rule in fhir_fields(descriptor).items():
        if key not in aliases:
            problems.append(f"{path}.{key}")
            continue
        if rule.kind in (Kind.MESSAGE, Kind.REFERENCE, Kind.WRAPPED_REFERENCE):
            nested = _model_of(aliases[key].annotation)
            target = rule.field.message_type
            if rule.kind is Kind.WRAPPED_REFERENCE:
                wrapper = WRAPPED_REFERENCES[(descriptor.full_name, rule.field.name)]
                nested_fields = {f.alias or n: f for n, f in nested.model_fields.items()}
                nested = _model_of(nested_fields[wrapper].annotation)
            _check(target, nested, f"{path}.{key}", problems)
    for key, children in GROUPED.get(descriptor.full_name, {}).items():
        group = _model_of(aliases[key].annotation)
        for child in children:
            if child not in {f.alias or n for n, f in group.model_fields.items()}:
                problems.append(f"{path}.{key}.{child}")


def test_every_field_of_every_fhir_native_type_is_a_fhir_r4_element() -> None:
    problems: list[str] = []
    for info in resource_types.RESOURCE_TYPES:
        if info.fhir_native:
            descriptor = record_pb2.Record.DESCRIPTOR.fields_by_name[info.field].message_type
            _check(descriptor, get_fhir_model_class(info.fhir_type), info.fhir_type, problems)
    assert problems == []
