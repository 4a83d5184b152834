"""RecordService over real gRPC, on SQLite and PostgreSQL.

Versioned CRUD, filters and pages, history, all-or-nothing batches, the
change log (order and completeness under concurrent writers), optimistic
concurrency with etags, idempotent retries, permissions and tenant isolation
on every RPC.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from hacs.client import error_details
from hacs.records.v1 import record_pb2, record_service_pb2_grpc
from hacs.records.v1 import record_service_pb2 as pb

from tests.support import clinical
from tests.support.harness import Harness, NewTenant, bearer

RT = record_pb2.ResourceType


class Records:
    """The record stub bound to one caller."""

    def __init__(self, hacs: Harness, tenant: NewTenant, token: str | None = None) -> None:
        self.stub = record_service_pb2_grpc.RecordServiceStub(hacs.channel)
        self.tenant = tenant
        self.md = bearer(token or tenant.admin_token)

    async def create(
        self, record: record_pb2.Record, record_id: str = "", **kw: object
    ) -> record_pb2.Record:
        reply = await self.stub.CreateRecord(
            pb.CreateRecordRequest(
                parent=self.tenant.name, record_id=record_id, record=record, **kw
            ),  # type: ignore[arg-type]
            metadata=self.md,
        )
        return reply.record

    async def get(self, name: str, version: int = 0) -> record_pb2.Record:
        return (
            await self.stub.GetRecord(
                pb.GetRecordRequest(name=name, version=version), metadata=self.md
            )
        ).record

    async def list(self, **kw: object) -> pb.ListRecordsResponse:
        return await self.stub.ListRecords(
            pb.ListRecordsRequest(parent=self.tenant.name, **kw), metadata=self.md
        )  # type: ignore[arg-type]

    async def changes(self, after: int = 0, **kw: object) -> pb.ListChangesResponse:
        return await self.stub.ListChanges(
            pb.ListChangesRequest(parent=self.tenant.name, after_sequence=after, **kw),
            metadata=self.md,  # type: ignore[arg-type]
        )


async def code_of(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value


async def test_create_get_update_history_delete(hacs: Harness) -> None:
    tenant = await hacs.new_tenant()
    records = Records(hacs, tenant)
    created = await records.create(clinical.patient())
    assert created.name.startswith(f"{tenant.name}/patients/patient-")
    assert created.version == 1 and created.resource_type == RT.RESOURCE_TYPE_PATIENT
    assert created.created_by.name == f"{tenant.name}/actors/admin"
    assert created.patient_compartment == created.name

    change = record_pb2.Record(name=created.name, etag=created.etag)
    change.patient.telecom.add(system="phone", value="+1-555-0100", use="mobile")
    updated = (
        await records.stub.UpdateRecord(
            pb.UpdateRecordRequest(record=change, update_mask=FieldMask(paths=["patient.telecom"])),
            metadata=records.md,
        )
    ).record
    assert updated.version == 2 and updated.etag != created.etag
    assert updated.patient.telecom[0].value == "+1-555-0100"
    assert updated.patient.name[0].family == "Garcia"  # untouched by the mask

    assert (await records.get(created.name, version=1)).patient.telecom == []
    history = await records.stub.ListRecordHistory(
        pb.ListRecordHistoryRequest(name=created.name), metadata=records.md
    )
    assert [r.version for r in history.records] == [2, 1]

    deleted = (
        await records.stub.DeleteRecord(
            pb.DeleteRecordRequest(name=created.name, etag=updated.etag, reason="duplicate"),
            metadata=records.md,
        )
    ).record
    assert deleted.version == 3 and deleted.HasField("delete_time")
    assert (await records.get(created.name)).HasField("delete_time")
    assert [r.name for r in (await records.list()).records] == []
    assert [r.name for r in (await records.list(show_deleted=True)).records] == [created.name]
    error = await code_of(
        records.stub.UpdateRecord(pb.UpdateRecordRequest(record=change), metadata=records.md)
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_observations_are_filed_under_their_patient_and_filterable(hacs: Harness) -> None:
    tenant = await hacs.new_tenant()
    records = Records(hacs, tenant)
    maria = await records.create(clinical.patient(), "maria")
    john = await records.create(clinical.patient("Smith", "John", "male", "1948-01-02"), "john")
    early = await records.create(clinical.hba1c(maria.name, 8.1, datetime(2023, 1, 10, tzinfo=UTC)))
    late = await records.create(clinical.hba1c(maria.name, 7.2, datetime(2024, 6, 1, tzinfo=UTC)))
    other = await records.create(clinical.hba1c(john.name, 6.1))
    diabetes = await records.create(clinical.condition(maria.name))
    assert late.patient_compartment == maria.name
    assert late.clinical_time.ToDatetime(tzinfo=UTC) == datetime(2024, 6, 1, tzinfo=UTC)

    by_patient = await records.list(
        patient=maria.name, resource_types=[RT.RESOURCE_TYPE_OBSERVATION]
    )
    assert {r.name for r in by_patient.records} == {early.name, late.name}
    by_code = await records.list(codes=["http://loinc.org|4548-4"])
    assert {r.name for r in by_code.records} == {early.name, late.name, other.name}
    by_icd = await records.list(codes=["E11.9"])  # any system
    assert [r.name for r in by_icd.records] == [diabetes.name]
    assert (await records.list(codes=["http://snomed.info/sct|4548-4"])).records == []
    window = await records.list(
        resource_types=[RT.RESOURCE_TYPE_OBSERVATION],
        start_time=datetime(2024, 1, 1, tzinfo=UTC),
        end_time=datetime(2025, 1, 1, tzinfo=UTC),
        order_by="clinical_time",
    )
    assert [r.name for r in window.records] == [
        other.name,
        late.name,
    ]  # 2024-03-05, then 2024-06-01


async def test_pages_cover_everything_once_and_are_bound_to_their_filters(hacs: Harness) -> None:
    tenant = await hacs.new_tenant()
    records = Records(hacs, tenant)
    batch = pb.BatchCreateRecordsRequest(
        parent=tenant.name,
        requests=[pb.CreateRecordRequest(record=clinical.patient(f"Family{i}")) for i in range(25)],
    )
    await records.stub.BatchCreateRecords(batch, metadata=records.md)
    seen: list[str] = []
    token = ""
    while True:
        page = await records.list(page_size=10, page_token=token, order_by="name")
        seen += [r.name for r in page.records]
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)) == 25 and seen == sorted(seen)
    first = await records.list(page_size=10)
    error = await code_of(
        records.list(page_size=10, page_token=first.next_page_token, order_by="name")
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_two_writers_with_one_etag_one_wins_and_nothing_is_lost(hacs: Harness) -> None:
    tenant = await hacs.new_tenant()
    records = Records(hacs, tenant)
    original = await records.create(clinical.patient())

    async def set_gender(gender: str) -> object:
        change = record_pb2.Record(name=original.name, etag=original.etag)
        change.patient.gender = gender
        try:
            return await records.stub.UpdateRecord(
                pb.UpdateRecordRequest(
                    record=change, update_mask=FieldMask(paths=["patient.gender"])
                ),
                metadata=records.md,
            )
        except grpc.aio.AioRpcError as error:
            return error

    results = await asyncio.gather(set_gender("other"), set_gender("unknown"))
    errors = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    wins = [r for r in results if not isinstance(r, grpc.aio.AioRpcError)]
    assert len(errors) == 1 and len(wins) == 1
    assert errors[0].code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_details(errors[0])["ErrorInfo"].reason == "ERROR_REASON_ETAG_MISMATCH"
    final = await records.get(original.name)
    assert final.version == 2 and final.patient.gender == wins[0].record.patient.gender  # type: ignore[attr-defined]

    # Unconditional writers to different fields both land: no lost update.
    async def set_field(path: str, value: str) -> None:
        change = record_pb2.Record(name=original.name)
        setattr(change.patient, path, value)
        await records.stub.UpdateRecord(
            pb.UpdateRecordRequest(record=change, update_mask=FieldMask(paths=[f"patient.{path}"])),
            metadata=records.md,
        )

    await asyncio.gather(
        set_field("full_name", "Maria Garcia"), set_field("birth_date", "1956-04-13")
    )
    final = await records.get(original.name)
    assert final.version == 4
    assert (final.patient.full_name, final.patient.birth_date) == ("Maria Garcia", "1956-04-13")


async def test_batch_create_is_all_or_nothing(hacs: Harness) -> None:
    tenant = await hacs.new_tenant()
    records = Records(hacs, tenant)
    patient = await records.create(clinical.patient(), "p-1")
    bad = clinical.hba1c(patient.name, 7.0)
    bad.observation.status = "done"
    batch = pb.BatchCreateRecordsRequest(
        parent=tenant.name,
        requests=[
            pb.CreateRecordRequest(record=clinical.hba1c(patient.name, 6.5)),
            pb.CreateRecordRequest(record=bad),
        ],
    )
    error = await code_of(records.stub.BatchCreateRecords(batch, metadata=records.md))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = [v.field for v in error_details(error)["BadRequest"].field_violations]
    assert fields == ["requests[1].record.observation.status"]
    duplicate = pb.BatchCreateRecordsRequest(
        parent=tenant.name,
        requests=[
            pb.CreateRecordRequest(record=clinical.hba1c(patient.name, 6.5)),
            pb.CreateRecordRequest(record_id="p-1", record=clinical.patient()),
        ],
    )
    error = await code_of(records.stub.BatchCreateRecords(duplicate, metadata=records.md))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert [r.name for r in (await records.list()).records] == [patient.name]
    assert [c.name for c in (await records.changes()).changes] == [patient.name]


async def test_change_log_is_complete_and_ordered_after_concurrent_writers(hacs: Harness) -> None:
    tenant = await hacs.new_tenant(limits={"calls_per_minute": 100_000})  # type: ignore[arg-type]
    records = Records(hacs, tenant)

    async def writer(n: int) -> list[str]:
        return [(await records.create(clinical.patient(f"W{n}-{i}"))).name for i in range(5)]

    written = [
        name for names in await asyncio.gather(*(writer(n) for n in range(12))) for name in names
    ]
    log = await records.changes()
    assert [c.sequence for c in log.changes] == list(range(1, 61))
    assert sorted(c.name for c in log.changes) == sorted(written)
    assert {c.operation for c in log.changes} == {1}  # CREATE
    assert log.head_sequence == 60 and log.next_after_sequence == 60
    # Commit order: each record's change precedes nothing it depends on, and
    # reading after any sequence yields exactly the rest.
    rest = await records.changes(after=42)
    assert [c.sequence for c in rest.changes] == list(range(43, 61))
    error = await code_of(records.changes(after=61))
    assert error.code() == grpc.StatusCode.OUT_OF_RANGE


async def test_changes_record_updates_deletes_and_patient_moves(hacs: Harness) -> None:
    tenant = await hacs.new_tenant()
    records = Records(hacs, tenant)
    a = await records.create(clinical.patient(), "a")
    b = await records.create(clinical.patient("B"), "b")
    obs = await records.create(clinical.hba1c(a.name, 7.0))
    move = record_pb2.Record(name=obs.name)
    move.observation.subject.reference = b.name
    await records.stub.UpdateRecord(
        pb.UpdateRecordRequest(record=move, update_mask=FieldMask(paths=["observation.subject"])),
        metadata=records.md,
    )
    await records.stub.DeleteRecord(pb.DeleteRecordRequest(name=obs.name), metadata=records.md)
    log = (await records.changes(after=2, resource_types=[RT.RESOURCE_TYPE_OBSERVATION])).changes
    assert [(c.operation, c.version) for c in log] == [(1, 1), (2, 2), (3, 3)]
    assert log[1].patient == b.name and log[1].previous_patient == a.name
    assert list(log[1].changed_paths) == ["observation.subject"]


async def test_idempotent_retries_write_once(hacs: Harness) -> None:
    tenant = await hacs.new_tenant()
    records = Records(hacs, tenant)
    request_id = str(uuid.uuid4())
    first = await records.create(clinical.patient(), request_id=request_id)
    again = await records.create(clinical.patient(), request_id=request_id)
    assert again.name == first.name and again.etag == first.etag
    assert len((await records.changes()).changes) == 1
    error = await code_of(records.create(clinical.patient("Other"), request_id=request_id))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_bad_references_masks_and_types_are_refused(hacs: Harness) -> None:
    tenant = await hacs.new_tenant()
    records = Records(hacs, tenant)
    error = await code_of(records.create(clinical.hba1c(f"{tenant.name}/patients/ghost", 7.0)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (
        error_details(error)["BadRequest"].field_violations[0].field == "record.observation.subject"
    )
    patient = await records.create(clinical.patient())
    for paths, change in (
        (["version"], record_pb2.Record(name=patient.name)),
        (["observation.status"], record_pb2.Record(name=patient.name)),
        (["patient.no_such_field"], record_pb2.Record(name=patient.name)),
    ):
        error = await code_of(
            records.stub.UpdateRecord(
                pb.UpdateRecordRequest(record=change, update_mask=FieldMask(paths=paths)),
                metadata=records.md,
            )
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, paths
    retype = record_pb2.Record(name=patient.name)
    retype.observation.status = "final"
    error = await code_of(
        records.stub.UpdateRecord(pb.UpdateRecordRequest(record=retype), metadata=records.md)
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (await records.get(patient.name)).version == 1


async def test_permissions_follow_the_record_type(hacs: Harness) -> None:
    tenant = await hacs.new_tenant()
    admin = Records(hacs, tenant)
    patient = await admin.create(clinical.patient())
    await admin.create(clinical.hba1c(patient.name, 7.0))
    _, nurse_token = await hacs.new_actor(tenant, "nurse-joy", "nurse")
    nurse = Records(hacs, tenant, nurse_token)
    assert (await nurse.create(clinical.hba1c(patient.name, 6.9))).version == 1  # write:observation
    error = await code_of(nurse.create(clinical.patient()))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_details(error)["ErrorInfo"].metadata["permission"] == "write:patient"
    _, tech_token = await hacs.new_actor(tenant, "tech", "technician", ["read:observation"])
    tech = Records(hacs, tenant, tech_token)
    listed = await tech.list()  # only the types it may read
    assert {r.resource_type for r in listed.records} == {RT.RESOURCE_TYPE_OBSERVATION}
    assert (await code_of(tech.get(patient.name))).code() == grpc.StatusCode.PERMISSION_DENIED
    assert (await code_of(tech.changes())).code() == grpc.StatusCode.PERMISSION_DENIED


async def test_cross_tenant_access_is_refused_on_every_rpc(hacs: Harness) -> None:
    a_tenant = await hacs.new_tenant("north")
    b_tenant = await hacs.new_tenant("south")
    a = Records(hacs, a_tenant)
    b = Records(hacs, b_tenant)
    b_patient = await b.create(clinical.patient(), "p-1")
    b_obs = await b.create(clinical.hba1c(b_patient.name, 7.0), "o-1")
    stub, md = a.stub, a.md
    change = record_pb2.Record(name=b_patient.name)
    change.patient.gender = "other"
    attempts = {
        "CreateRecord": stub.CreateRecord(
            pb.CreateRecordRequest(parent=b_tenant.name, record=clinical.patient()), metadata=md
        ),
        "GetRecord": stub.GetRecord(pb.GetRecordRequest(name=b_patient.name), metadata=md),
        "UpdateRecord": stub.UpdateRecord(pb.UpdateRecordRequest(record=change), metadata=md),
        "DeleteRecord": stub.DeleteRecord(pb.DeleteRecordRequest(name=b_obs.name), metadata=md),
        "ListRecords": stub.ListRecords(pb.ListRecordsRequest(parent=b_tenant.name), metadata=md),
        "ListRecordHistory": stub.ListRecordHistory(
            pb.ListRecordHistoryRequest(name=b_patient.name), metadata=md
        ),
        "BatchCreateRecords": stub.BatchCreateRecords(
            pb.BatchCreateRecordsRequest(
                parent=b_tenant.name, requests=[pb.CreateRecordRequest(record=clinical.patient())]
            ),
            metadata=md,
        ),
        "ImportFhirBundle": stub.ImportFhirBundle(
            pb.ImportFhirBundleRequest(
                parent=b_tenant.name,
                bundle_json='{"resourceType": "Bundle", "type": "batch", "entry": []}',
            ),
            metadata=md,
        ),
        "ExportFhir": stub.ExportFhir(pb.ExportFhirRequest(patient=b_patient.name), metadata=md),
        "ListChanges": stub.ListChanges(pb.ListChangesRequest(parent=b_tenant.name), metadata=md),
    }
    for rpc, call in attempts.items():
        error = await code_of(call)
        assert error.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND), (
            f"{rpc}: {error.code()} {error.details()}"
        )
    # A's record pointing at B's patient is refused too.
    error = await code_of(a.create(clinical.hba1c(b_patient.name, 7.0)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    # B is untouched.
    assert (await b.get(b_patient.name)).version == 1
    assert (await b.get(b_obs.name)).version == 1
    assert len((await b.list()).records) == 2
    assert [c.sequence for c in (await b.changes()).changes] == [1, 2]
    assert (await a.list()).records == []


async def test_patient_quota_counts_live_patients(hacs: Harness) -> None:
    tenant = await hacs.new_tenant(limits={"max_patients": 2})  # type: ignore[arg-type]
    records = Records(hacs, tenant)
    first = await records.create(clinical.patient("One"))
    await records.create(clinical.patient("Two"))
    error = await code_of(records.create(clinical.patient("Three")))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    await records.stub.DeleteRecord(pb.DeleteRecordRequest(name=first.name), metadata=records.md)
    assert (await records.create(clinical.patient("Three"))).version == 1


async def test_record_calls_are_audited(hacs: Harness) -> None:
    from hacs.tenant.v1 import tenant_service_pb2

    tenant = await hacs.new_tenant()
    records = Records(hacs, tenant)
    patient = await records.create(clinical.patient())
    await records.get(patient.name)
    events = await hacs.tenant.ListAuditEvents(
        tenant_service_pb2.ListAuditEventsRequest(parent=tenant.name, resource=patient.name),
        metadata=bearer(tenant.admin_token),
    )
    assert {(e.method.rsplit("/", 1)[1], e.permission, e.outcome) for e in events.audit_events} == {
        ("CreateRecord", "write:patient", "OK"),
        ("GetRecord", "read:patient", "OK"),
    }


async def test_evidence_reliability_is_computed_on_every_write(hacs: Harness) -> None:
    # evidence.proto: output only, (confidence_score + quality_score) / 2, each 0.8 unset.
    records = Records(hacs, await hacs.new_tenant())
    evidence = record_pb2.Record()
    evidence.evidence.title = "Metformin in type 2 diabetes"
    evidence.evidence.confidence_score = 0.6
    evidence.evidence.overall_reliability = 0.99  # what a client sends is not kept
    created = await records.create(evidence)
    assert created.evidence.overall_reliability == pytest.approx(0.7)
    changes = record_pb2.Record(name=created.name)
    changes.evidence.quality_score = 1.0
    updated = (
        await records.stub.UpdateRecord(
            pb.UpdateRecordRequest(
                record=changes, update_mask=FieldMask(paths=["evidence.quality_score"])
            ),
            metadata=records.md,
        )
    ).record
    assert updated.evidence.overall_reliability == pytest.approx(0.8)
    assert (await records.get(created.name)).evidence.overall_reliability == pytest.approx(0.8)


async def test_deleting_takes_delete_permission_not_write(hacs: Harness) -> None:
    # Issue 20, finding 9: write:<type> used to be enough to soft-delete.
    tenant = await hacs.new_tenant()
    admin = Records(hacs, tenant)
    _, physician_token = await hacs.new_actor(tenant, "dr-who", "physician")
    _, clerk_token = await hacs.new_actor(
        tenant, "records-clerk", "administrator", ["read:observation", "delete:observation"]
    )
    physician, clerk = Records(hacs, tenant, physician_token), Records(hacs, tenant, clerk_token)
    patient = await admin.create(clinical.patient())
    obs = await physician.create(clinical.hba1c(patient.name, 6.1))  # write:observation: fine
    refused = await code_of(
        physician.stub.DeleteRecord(pb.DeleteRecordRequest(name=obs.name), metadata=physician.md)
    )
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "delete:observation" in (refused.details() or "")
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "DELETE", "url": f"Observation/{obs.name.rsplit('/', 1)[1]}"}}
        ],
    }
    reply = await physician.stub.ImportFhirBundle(
        pb.ImportFhirBundleRequest(parent=tenant.name, bundle_json=json.dumps(bundle)),
        metadata=physician.md,
    )
    (entry,) = reply.entries  # a batch: each entry is answered on its own
    assert entry.status == pb.FHIR_ENTRY_STATUS_REJECTED and "delete:observation" in entry.reason
    assert not (await admin.get(obs.name)).HasField("delete_time")
    deleted = await clerk.stub.DeleteRecord(
        pb.DeleteRecordRequest(name=obs.name), metadata=clerk.md
    )
    assert deleted.record.HasField("delete_time")
