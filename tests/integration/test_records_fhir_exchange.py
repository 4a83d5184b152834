"""FHIR R4 import and export through RecordService, with the example bundles
in tests/data/fhir (written for these tests after the FHIR spec's examples)."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
from fhir.resources.R4B.bundle import Bundle
from hacs.client import error_details
from hacs.records.v1 import record_pb2, record_service_pb2_grpc
from hacs.records.v1 import record_service_pb2 as pb

from tests.support import clinical
from tests.support.harness import Harness, NewTenant, bearer

DATA = Path(__file__).resolve().parents[1] / "data" / "fhir"


def bundle(name: str) -> str:
    return (DATA / name).read_text()


class Fhir:
    def __init__(self, hacs: Harness, tenant: NewTenant) -> None:
        self.stub = record_service_pb2_grpc.RecordServiceStub(hacs.channel)
        self.tenant = tenant
        self.md = bearer(tenant.admin_token)

    async def load(self, text: str, **kw: object) -> pb.ImportFhirBundleResponse:
        return await self.stub.ImportFhirBundle(
            pb.ImportFhirBundleRequest(parent=self.tenant.name, bundle_json=text, **kw),  # type: ignore[arg-type]
            metadata=self.md,
        )

    async def names(self) -> list[str]:
        listed = await self.stub.ListRecords(
            pb.ListRecordsRequest(parent=self.tenant.name, page_size=100), metadata=self.md
        )
        return [r.name for r in listed.records]

    async def changes(self) -> int:
        log = await self.stub.ListChanges(
            pb.ListChangesRequest(parent=self.tenant.name), metadata=self.md
        )
        return len(log.changes)


async def test_transaction_bundle_lands_whole_with_references_resolved(hacs: Harness) -> None:
    fhir = Fhir(hacs, await hacs.new_tenant())
    reply = await fhir.load(
        bundle("transaction-diabetes-visit.json"), labels={"source": "ehr-import"}
    )
    assert reply.bundle_type == "transaction"
    assert (reply.created_count, reply.rejected_count) == (11, 0)
    assert all(e.status == pb.FHIR_ENTRY_STATUS_CREATED and e.version == 1 for e in reply.entries)
    patient = reply.entries[0].record
    assert patient.startswith(f"{fhir.tenant.name}/patients/")

    listed = await fhir.stub.ListRecords(
        pb.ListRecordsRequest(parent=fhir.tenant.name, patient=patient, page_size=100),
        metadata=fhir.md,
    )
    kinds = sorted(record_pb2.ResourceType.Name(r.resource_type) for r in listed.records)
    assert kinds.count("RESOURCE_TYPE_OBSERVATION") == 2 and "RESOURCE_TYPE_CONDITION" in kinds
    hba1c = await fhir.stub.ListRecords(
        pb.ListRecordsRequest(parent=fhir.tenant.name, codes=[f"{clinical.LOINC}|4548-4"]),
        metadata=fhir.md,
    )
    (observation,) = hba1c.records
    assert observation.observation.subject.reference == patient
    assert observation.observation.value_quantity.unit == "%"
    assert observation.labels["source"] == "ehr-import"
    assert await fhir.changes() == 11


async def test_a_transaction_with_bad_entries_writes_nothing_and_names_each(hacs: Harness) -> None:
    fhir = Fhir(hacs, await hacs.new_tenant())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await fhir.load(bundle("invalid-transaction-observations.json"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = {
        v.field: v.description for v in error_details(caught.value)["BadRequest"].field_violations
    }
    assert (
        "entry[1].resource.status" in violations
        and "done" in violations["entry[1].resource.status"]
    )
    assert any(field.startswith("entry[2]") and "code" in field for field in violations), violations
    assert await fhir.names() == [] and await fhir.changes() == 0

    checked = await fhir.load(bundle("invalid-transaction-observations.json"), validate_only=True)
    statuses = [e.status for e in checked.entries]
    assert statuses == [
        pb.FHIR_ENTRY_STATUS_NOT_APPLIED,
        pb.FHIR_ENTRY_STATUS_REJECTED,
        pb.FHIR_ENTRY_STATUS_REJECTED,
    ]
    assert await fhir.names() == []


async def test_batch_entries_stand_alone(hacs: Harness) -> None:
    fhir = Fhir(hacs, await hacs.new_tenant())
    reply = await fhir.load(bundle("invalid-batch-unsupported-type.json"))
    assert [e.status for e in reply.entries] == [
        pb.FHIR_ENTRY_STATUS_CREATED,
        pb.FHIR_ENTRY_STATUS_REJECTED,
    ]
    assert "Claim" in reply.entries[1].reason
    assert len(await fhir.names()) == 1


async def test_batch_put_updates_and_delete(hacs: Harness) -> None:
    fhir = Fhir(hacs, await hacs.new_tenant())
    patient = clinical.patient("Souza", "Ana")
    await fhir.stub.CreateRecord(
        pb.CreateRecordRequest(parent=fhir.tenant.name, record_id="pat-ana-souza", record=patient),
        metadata=fhir.md,
    )
    first = await fhir.load(bundle("batch-follow-up-vitals.json"))
    assert [e.status for e in first.entries[:2]] == [pb.FHIR_ENTRY_STATUS_CREATED] * 2
    assert first.entries[2].status == pb.FHIR_ENTRY_STATUS_REJECTED  # nothing to delete yet
    again = await fhir.load(bundle("batch-follow-up-vitals.json"))
    assert [(e.status, e.version) for e in again.entries[:2]] == [
        (pb.FHIR_ENTRY_STATUS_UPDATED, 2)
    ] * 2


async def test_not_a_bundle_is_refused(hacs: Harness) -> None:
    fhir = Fhir(hacs, await hacs.new_tenant())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await fhir.load(bundle("not-a-bundle.json"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(caught.value)["BadRequest"].field_violations[0].field == "bundle_json"


async def test_export_a_compartment_as_a_valid_bundle(hacs: Harness) -> None:
    fhir = Fhir(hacs, await hacs.new_tenant())
    reply = await fhir.load(bundle("collection-care-summary.json"))
    assert reply.rejected_count == 0, [e.reason for e in reply.entries]
    patient = f"{fhir.tenant.name}/patients/pat-joao-lima"
    exported = await fhir.stub.ExportFhir(pb.ExportFhirRequest(patient=patient), metadata=fhir.md)
    assert exported.fhir_resource_type == "Bundle" and exported.resource_count == 6
    document = json.loads(exported.fhir_json)
    Bundle.model_validate(document)  # valid FHIR
    types = [e["resource"]["resourceType"] for e in document["entry"]]
    assert types[0] == "Patient" and set(types[1:]) == {
        "Observation",
        "DiagnosticReport",
        "MedicationRequest",
        "Goal",
        "CarePlan",
    }
    observation = next(
        e["resource"] for e in document["entry"] if e["resource"]["resourceType"] == "Observation"
    )
    assert observation["subject"]["reference"] == "Patient/pat-joao-lima"

    one = await fhir.stub.ExportFhir(
        pb.ExportFhirRequest(name=f"{fhir.tenant.name}/observations/obs-glucose-1"),
        metadata=fhir.md,
    )
    resource = json.loads(one.fhir_json)
    assert (resource["resourceType"], resource["id"], resource["meta"]["versionId"]) == (
        "Observation",
        "obs-glucose-1",
        "1",
    )
