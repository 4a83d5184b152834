"""FHIR Bundles: structural parsing, entry problems, reference resolution, export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle

from services.records.fhir import (
    BundleError,
    FhirMappingError,
    collection_bundle,
    entry_field,
    entry_problem,
    fhir_to_record,
    parse_bundle,
    record_to_fhir,
    reference_resolver,
    resource_type_of,
)
from services.records.fhir.bundle import MAX_ENTRIES, ParsedBundle

DATA = Path(__file__).parents[2] / "data" / "fhir"
TENANT = "acme"


def read(name: str) -> str:
    return (DATA / name).read_text()


def bundle_text(bundle_type: str, entries: list[dict[str, Any]]) -> str:
    return json.dumps({"resourceType": "Bundle", "type": bundle_type, "entry": entries})


def names_for(bundle: ParsedBundle) -> dict[int, str]:
    names = {}
    for entry in bundle.entries:
        info = resource_type_of(entry.resource) if entry.resource else None
        if info is not None:
            names[entry.index] = f"tenants/{TENANT}/{info.collection}/e{entry.index}"
    return names


# -- parsing ---------------------------------------------------------------------------------


def test_a_transaction_bundle_parses_into_its_entries() -> None:
    bundle = parse_bundle(read("transaction-diabetes-visit.json"))
    assert bundle.bundle_type == "transaction"
    assert [e.fhir_type for e in bundle.entries] == [
        "Patient",
        "Organization",
        "Practitioner",
        "Encounter",
        "Observation",
        "Observation",
        "Condition",
        "Condition",
        "MedicationStatement",
        "AllergyIntolerance",
        "Procedure",
    ]
    first = bundle.entries[0]
    assert (first.index, first.method, first.url) == (0, "POST", "Patient")
    assert first.full_url == "urn:uuid:6f1c2d4e-8a3b-4c5d-9e0f-1a2b3c4d5e60"
    assert first.fhir_id == "" and first.resource is not None
    assert all(entry_problem(bundle, e) is None for e in bundle.entries)


def test_batch_entries_take_ids_from_the_resource_or_the_url() -> None:
    bundle = parse_bundle(read("batch-follow-up-vitals.json"))
    assert bundle.bundle_type == "batch"
    put, _, delete = bundle.entries
    assert (put.method, put.url, put.fhir_id) == (
        "PUT",
        "Observation/obs-weight-20240405",
        "obs-weight-20240405",
    )
    assert delete.resource is None
    assert (delete.method, delete.fhir_type, delete.fhir_id) == (
        "DELETE",
        "Observation",
        "obs-weight-duplicate",
    )
    assert all(entry_problem(bundle, e) is None for e in bundle.entries)


def test_collection_entries_have_no_method() -> None:
    bundle = parse_bundle(read("collection-care-summary.json"))
    assert bundle.bundle_type == "collection"
    assert {e.method for e in bundle.entries} == {""}
    assert bundle.entries[0].fhir_id == "pat-joao-lima"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("this is not JSON", "not JSON"),
        ("[1, 2, 3]", "not a JSON object"),
        (read("not-a-bundle.json"), "resourceType is 'Patient', not 'Bundle'"),
        ('{"resourceType": "Bundle", "type": "searchset", "entry": [{}]}', "'searchset'"),
        ('{"resourceType": "Bundle", "type": "batch"}', "no entries"),
        ('{"resourceType": "Bundle", "type": "batch", "entry": []}', "no entries"),
        (bundle_text("collection", [{}] * (MAX_ENTRIES + 1)), "at most 10,000"),
    ],
)
def test_text_that_is_no_usable_bundle_is_one_error(text: str, words: str) -> None:
    with pytest.raises(BundleError) as caught:
        parse_bundle(text)
    assert words in str(caught.value)


def test_ten_thousand_entries_are_accepted() -> None:
    bundle = parse_bundle(
        bundle_text("collection", [{"resource": {"resourceType": "Goal"}}] * MAX_ENTRIES)
    )
    assert len(bundle.entries) == MAX_ENTRIES


# -- per-entry problems ------------------------------------------------------------------------


PATIENT = {"resourceType": "Patient", "id": "p-1"}


@pytest.mark.parametrize(
    ("bundle_type", "entry", "location", "words"),
    [
        ("transaction", {"resource": PATIENT}, "Bundle.entry[1].request", "request.method"),
        (
            "batch",
            {"resource": PATIENT, "request": {"method": "GET", "url": "Patient/p-1"}},
            "Bundle.entry[1].request.method",
            "'GET' is not supported",
        ),
        (
            "transaction",
            {"request": {"method": "DELETE", "url": "Patient?identifier=123"}},
            "Bundle.entry[1].request.url",
            "conditional",
        ),
        (
            "transaction",
            {"request": {"method": "POST", "url": "Patient"}},
            "Bundle.entry[1].resource",
            "no resource",
        ),
        (
            "transaction",
            {"resource": PATIENT, "request": {"method": "PUT", "url": "Patient/p-2"}},
            "Bundle.entry[1].request.url",
            "does not match the resource id 'p-1'",
        ),
        (
            "batch",
            {"resource": PATIENT, "request": {"method": "POST", "url": "Observation"}},
            "Bundle.entry[1].request.url",
            "does not match the resource type 'Patient'",
        ),
        (
            "collection",
            {"fullUrl": "urn:uuid:same", "resource": PATIENT},
            "Bundle.entry[1].fullUrl",
            "also used by entry[0]",
        ),
        ("collection", {"fullUrl": "urn:uuid:other"}, "Bundle.entry[1].resource", "no resource"),
    ],
)
def test_unusable_entries_are_named_with_their_problem(
    bundle_type: str, entry: dict[str, Any], location: str, words: str
) -> None:
    first = {
        "fullUrl": "urn:uuid:same",
        "resource": {"resourceType": "Goal"},
        "request": {"method": "POST", "url": "Goal"},
    }
    bundle = parse_bundle(bundle_text(bundle_type, [first, entry]))
    assert entry_problem(bundle, bundle.entries[0]) is None
    problem = entry_problem(bundle, bundle.entries[1])
    assert problem is not None
    assert problem.location == location
    assert words in problem.reason
    assert entry_field(bundle.entries[1], problem) == location.removeprefix("Bundle.")


def test_entry_fields_for_bad_request_details() -> None:
    bundle = parse_bundle(read("invalid-transaction-observations.json"))
    entry = bundle.entries[1]
    error = FhirMappingError("Observation.status", "'done' is not allowed")
    assert entry_field(entry, error) == "entry[1].resource.status"
    assert entry_field(entry, FhirMappingError("Observation", "x")) == "entry[1].resource"


def test_every_problem_of_the_invalid_transaction_is_reported_per_entry() -> None:
    bundle = parse_bundle(read("invalid-transaction-observations.json"))
    resolve = reference_resolver(bundle, names_for(bundle), TENANT)
    fields = {}
    for entry in bundle.entries:
        assert entry.resource is not None
        try:
            fhir_to_record(entry.resource, tenant_id=TENANT, resolve_reference=resolve)
        except FhirMappingError as error:
            fields[entry_field(entry, error)] = error.reason
    assert set(fields) == {"entry[1].resource.status", "entry[2].resource.code"}
    assert "'done'" in fields["entry[1].resource.status"]


def test_the_unsupported_entry_of_a_batch_is_rejected_alone() -> None:
    bundle = parse_bundle(read("invalid-batch-unsupported-type.json"))
    resolve = reference_resolver(bundle, names_for(bundle), TENANT)
    patient, claim = bundle.entries
    assert patient.resource is not None and claim.resource is not None
    fhir_to_record(patient.resource, tenant_id=TENANT, resolve_reference=resolve)
    with pytest.raises(FhirMappingError) as caught:
        fhir_to_record(claim.resource, tenant_id=TENANT, resolve_reference=resolve)
    assert entry_field(claim, caught.value) == "entry[1].resource.resourceType"
    assert claim.fhir_type == "Claim" and resource_type_of(claim.resource) is None


# -- references within a bundle ---------------------------------------------------------------


def test_the_resolver_maps_full_urls_and_type_ids_to_entry_names() -> None:
    bundle = parse_bundle(read("collection-care-summary.json"))
    names = {0: "tenants/acme/patients/pat-joao-lima", 1: "tenants/acme/observations/renamed"}
    resolve = reference_resolver(bundle, names, TENANT)
    assert resolve("http://clinic.example.org/fhir/Patient/pat-joao-lima") == names[0]
    assert resolve("Observation/obs-glucose-1") == names[1]  # the name given, not the id
    assert resolve("Observation/obs-glucose-1/_history/3") == names[1]
    # Not in the bundle: "Type/id" of a supported type is still the tenant's record...
    assert resolve("Patient/someone-else") == "tenants/acme/patients/someone-else"
    # ...but an unknown urn:uuid, a type HACS does not store or an entry without a
    # name (a rejected one) resolve to nothing.
    assert resolve("urn:uuid:2b1e7d2a-0000-4000-8000-000000000000") is None
    assert resolve("Location/ward-3") is None
    assert resolve("http://clinic.example.org/fhir/DiagnosticReport/dr-metabolic-1") is None


def test_urn_uuid_references_of_a_transaction_become_entry_names() -> None:
    bundle = parse_bundle(read("transaction-diabetes-visit.json"))
    names = names_for(bundle)
    resolve = reference_resolver(bundle, names, TENANT)
    records = [
        fhir_to_record(e.resource, tenant_id=TENANT, resolve_reference=resolve)
        for e in bundle.entries
        if e.resource is not None
    ]
    patient, organization, practitioner, encounter = (names[i] for i in range(4))
    assert records[0].patient.managing_organization.reference == organization
    assert records[3].encounter.subject.reference == patient
    assert records[3].encounter.participant[0].individual.reference == practitioner
    assert records[4].observation.encounter.reference == encounter
    assert records[8].medication_statement.reason_reference[0].reference == names[6]
    assert records[9].allergy_intolerance.patient.reference == patient
    assert records[10].procedure.performer[0].actor.reference == practitioner


# -- export --------------------------------------------------------------------------------------


def test_an_exported_compartment_is_a_valid_collection_that_imports_again() -> None:
    source = parse_bundle(read("transaction-diabetes-visit.json"))
    names = names_for(source)
    resolve = reference_resolver(source, names, TENANT)
    records = []
    for entry in source.entries:
        assert entry.resource is not None
        record = fhir_to_record(entry.resource, tenant_id=TENANT, resolve_reference=resolve)
        record.name = names[entry.index]
        records.append(record)
    exported = [record_to_fhir(record)[0] for record in records]
    bundle = collection_bundle(exported)
    Bundle.model_validate(bundle)  # valid FHIR, every entry included

    again = parse_bundle(json.dumps(bundle))
    assert again.bundle_type == "collection"
    assert [e.fhir_id for e in again.entries] == [n.rsplit("/", 1)[-1] for n in names.values()]
    resolve_again = reference_resolver(
        again, {e.index: names[e.index] for e in again.entries}, TENANT
    )
    for entry, record in zip(again.entries, records, strict=True):
        assert entry.resource is not None
        reimported = fhir_to_record(
            entry.resource, tenant_id=TENANT, resolve_reference=resolve_again
        )
        reimported.name = record.name
        assert reimported == record


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"resourceType": "Bundle", "n": ' + "7" * 5000 + "}", "5000-digit number"),
        ('{"resourceType": "Bundle", "n": 1e999}', "too large a number"),
        ('{"resourceType": "Bundle", "n": NaN}', "NaN is not a JSON number"),
        ('{"resourceType": "Bundle", "n": -Infinity}', "-Infinity is not a JSON number"),
        ('{"resourceType": "Bundle", "extension": ' + '{"extension": [' * 200 + "]}" * 200 + "}",
         "nested deeper than 64"),
        ("[" * 100_000 + "]" * 100_000, "nested deeper than 64"),
    ],
)  # fmt: skip
def test_numbers_and_nesting_no_resource_has_are_refused_as_such(text: str, reason: str) -> None:
    with pytest.raises(BundleError, match=reason):
        parse_bundle(text)
