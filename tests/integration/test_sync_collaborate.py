"""SyncService.Collaborate over real gRPC, on SQLite and PostgreSQL.

Joining and presence, concurrent field edits that every client applies to the
same state, last-writer-wins with its deterministic tie-break, a dose change
that is reported instead of merged, writes made outside the session, the end
of a session when its record is deleted, and the errors a stream can end with.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import grpc
from hacs.records.v1 import change_pb2
from hacs.records.v1 import record_service_pb2 as records_pb
from hacs.sync.v1 import patch_pb2
from hacs.sync.v1 import sync_service_pb2 as pb

from services.common.caller import Caller
from services.kernel.records.store import RecordStore
from services.kernel.records.writes import RecordWriter
from tests.support import clinical
from tests.support.harness import Harness, NewTenant
from tests.support.sync import (
    Collab,
    SyncClient,
    WatchLog,
    dose,
    fails_with,
    metformin_order,
    read_until,
    server_view,
    set_field,
)

REJECT = patch_pb2.MERGE_POLICY_REJECT_AND_REPORT
LWW = patch_pb2.MERGE_POLICY_LAST_WRITER_WINS
DOSE = "medication_request.dosage_instruction"
NOTE = "medication_request.note"


async def _ward(hacs: Harness) -> tuple[NewTenant, SyncClient, SyncClient, str]:
    """A tenant with two physicians and a metformin order to edit together."""
    tenant = await hacs.new_tenant()
    _, lee = await hacs.new_actor(tenant, "dr-lee", "physician")
    _, ode = await hacs.new_actor(tenant, "dr-ode", "physician")
    admin = SyncClient(hacs.channel, tenant, tenant.admin_token)
    patient = await admin.create(clinical.patient())
    order = await admin.create(metformin_order(patient.name))
    return (
        tenant,
        SyncClient(hacs.channel, tenant, lee),
        SyncClient(hacs.channel, tenant, ode),
        order.name,
    )


async def _current(sync: SyncClient, name: str) -> records_pb.GetRecordResponse:
    return await sync.records.GetRecord(records_pb.GetRecordRequest(name=name), metadata=sync.md)


async def test_joining_shows_the_record_policies_and_who_is_there(hacs: Harness) -> None:
    tenant, lee, ode, order = await _ward(hacs)
    a, b = Collab(lee), Collab(ode)
    joined = await a.join(order, "lee-tab")
    assert joined.record.name == order and joined.record.version == 1
    assert joined.session_id.startswith("sessions/")
    assert (DOSE, REJECT) in [(p.path, p.policy) for p in joined.field_policies]
    assert joined.default_policy == LWW
    assert [p.actor.name for p in joined.participants] == [f"{tenant.name}/actors/dr-lee"]

    joined_b = await b.join(order, "ode-tab", pb.PRESENCE_STATE_EDITING)
    assert joined_b.session_id == joined.session_id
    assert {p.client_id for p in joined_b.participants} == {"lee-tab", "ode-tab"}
    seen = await a.expect("presence", lambda m: len(m.presence.participants) == 2)
    ode_seen = next(p for p in seen.presence.participants if p.client_id == "ode-tab")
    assert ode_seen.state == pb.PRESENCE_STATE_EDITING

    await b.call.write(
        pb.CollaborateRequest(
            presence=pb.PresenceUpdate(state=pb.PRESENCE_STATE_EDITING, field=DOSE)
        )
    )
    await a.expect("presence", lambda m: any(p.field == DOSE for p in m.presence.participants))
    await b.call.write(pb.CollaborateRequest(leave=pb.LeaveSession()))
    assert await b.finish() == grpc.StatusCode.OK
    left = await a.expect("presence", lambda m: len(m.presence.participants) == 1)
    assert left.presence.participants[0].client_id == "lee-tab"
    a.call.cancel()


async def test_concurrent_edits_of_different_fields_converge_on_every_client(
    hacs: Harness,
) -> None:
    _, lee, ode, order = await _ward(hacs)
    a, b = Collab(lee), Collab(ode)
    await a.join(order, "lee-tab")
    await b.join(order, "ode-tab")
    # Both edit version 1 at the same moment, different fields.
    await asyncio.gather(
        a.edit("a1", 1, [set_field(NOTE, ["take with meals", "check eGFR first"])]),
        b.edit("b1", 1, [set_field("labels.ward", "renal")]),
    )
    for client in (a, b):
        for edit_id in ("a1", "b1"):
            await client.expect("applied", lambda m, e=edit_id: m.applied.edit_id == e)  # type: ignore[misc]
    server = (await _current(lee, order)).record
    assert server.version == 3
    assert a.version == b.version == 3
    assert a.view() == b.view() == server_view(server)  # everyone holds the server's state
    assert list(server.medication_request.note) == ["take with meals", "check eGFR first"]
    assert server.labels["ward"] == "renal"
    a.call.cancel()
    b.call.cancel()


async def test_last_writer_wins_by_client_time_then_actor_and_client_id(hacs: Harness) -> None:
    _, lee, ode, order = await _ward(hacs)
    a, b = Collab(lee), Collab(ode)
    await a.join(order, "lee-tab")
    await b.join(order, "ode-tab")
    now = datetime.now(UTC)

    await a.edit("a1", 1, [set_field(NOTE, ["from lee"])], client_time=now - timedelta(seconds=1))
    await b.expect("applied", lambda m: m.applied.edit_id == "a1")
    # Made on version 1, a little *before* Lee's edit: it loses and is reported.
    await b.edit("b1", 1, [set_field(NOTE, ["from ode"])], client_time=now - timedelta(seconds=2))
    lost = (await b.expect("applied", lambda m: m.applied.edit_id == "b1")).applied
    assert not lost.patches and lost.version == 2
    assert lost.dropped[0].path == NOTE and lost.dropped[0].policy == LWW
    assert [v.string_value for v in lost.dropped[0].server_value.list_value.values] == ["from lee"]
    assert "last writer wins" in lost.dropped[0].reason
    # Made on version 1 but later than Lee's: it wins, merged onto version 2.
    await b.edit("b2", 1, [set_field(NOTE, ["ode, later"])])
    won = (await a.expect("applied", lambda m: m.applied.edit_id == "b2")).applied
    assert won.version == 3 and won.merged and not won.dropped

    # Same client time: the greater (actor, client_id) wins, whoever came first.
    tie = now - timedelta(milliseconds=1)
    c = Collab(lee)
    await c.join(order, "lee-tab-2")
    await c.edit("c1", 3, [set_field("labels.shift", "night")], client_time=tie)
    await a.expect("applied", lambda m: m.applied.edit_id == "c1")
    await a.edit(
        "a2", 3, [set_field("labels.shift", "day")], client_time=tie
    )  # "lee-tab" < "lee-tab-2"
    assert (await a.expect("applied", lambda m: m.applied.edit_id == "a2")).applied.dropped
    server = (await _current(lee, order)).record
    assert list(server.medication_request.note) == ["ode, later"]
    assert server.labels["shift"] == "night"
    for client in (b, c):
        await client.expect("applied", lambda m: m.applied.edit_id == "c1")
    assert a.view() == b.view() == c.view() == server_view(server)
    for client in (a, b, c):
        client.call.cancel()


async def test_a_concurrent_dose_change_is_reported_not_merged(hacs: Harness) -> None:
    tenant, lee, ode, order = await _ward(hacs)
    a, b = Collab(lee), Collab(ode)
    await a.join(order, "lee-tab")
    await b.join(order, "ode-tab")
    await a.edit("lee-dose", 1, [set_field(DOSE, dose(1000))])
    await b.expect("applied", lambda m: m.applied.edit_id == "lee-dose")
    # Ode changes the dose too, on version 1 and later by the clock: still refused.
    await b.edit("ode-dose", 1, [set_field(DOSE, dose(850)), set_field(NOTE, ["ode was here"])])
    conflict = (await b.expect("conflict")).conflict
    assert conflict.edit_id == "ode-dose" and conflict.current_version == 2
    [field] = conflict.conflicts
    assert field.path == DOSE and field.policy == REJECT
    assert field.server_version == 2
    assert field.server_actor.name == f"{tenant.name}/actors/dr-lee"
    server_dose = field.server_value.list_value.values[0].struct_value
    assert server_dose.fields["text"].string_value == "1000 mg twice daily"
    client_dose = field.client_value.list_value.values[0].struct_value
    assert client_dose.fields["text"].string_value == "850 mg twice daily"
    record = (await _current(lee, order)).record
    assert record.version == 2  # nothing of Ode's edit was written, not even the note
    assert record.medication_request.dosage_instruction[0].text == "1000 mg twice daily"
    assert list(record.medication_request.note) == ["take with meals"]
    # Rebased on version 2, the same change goes through.
    await b.edit("ode-dose-2", 2, [set_field(DOSE, dose(850))])
    await a.expect("applied", lambda m: m.applied.edit_id == "ode-dose-2")
    assert (await _current(lee, order)).record.medication_request.dosage_instruction[0].text == (
        "850 mg twice daily"
    )
    a.call.cancel()
    b.call.cancel()


async def test_writes_outside_the_session_reach_it_and_a_delete_closes_it(hacs: Harness) -> None:
    tenant, lee, _, order = await _ward(hacs)
    a = Collab(lee)
    await a.join(order, "lee-tab")
    changed = (await _current(lee, order)).record
    changed.medication_request.note[:] = ["changed through RecordService"]
    await lee.records.UpdateRecord(
        records_pb.UpdateRecordRequest(record=changed, update_mask={"paths": [NOTE]}),
        metadata=lee.md,
    )
    applied = (await a.expect("applied")).applied
    assert applied.edit_id == "" and applied.version == 2
    assert [p.path for p in applied.patches] == [NOTE]
    assert a.document["medication_request"]["note"] == ["changed through RecordService"]

    admin = SyncClient(hacs.channel, tenant, tenant.admin_token)
    await admin.records.DeleteRecord(records_pb.DeleteRecordRequest(name=order), metadata=admin.md)
    closed = (await a.expect("closed")).closed
    assert "deleted" in closed.reason
    assert await a.finish() == grpc.StatusCode.OK


async def test_sessions_refuse_what_they_must(hacs: Harness) -> None:
    tenant, lee, _, order = await _ward(hacs)
    other = await hacs.new_tenant()
    stranger = SyncClient(hacs.channel, other, other.admin_token)
    call = stranger.stub.Collaborate(metadata=stranger.md)
    await call.write(pb.CollaborateRequest(join=pb.JoinSession(record=order, client_id="x")))
    assert (await fails_with(call)).code() == grpc.StatusCode.NOT_FOUND  # another tenant's

    _, clerk_token = await hacs.new_actor(tenant, "clerk", "technician", ["read:patient"])
    clerk = SyncClient(hacs.channel, tenant, clerk_token)
    call = clerk.stub.Collaborate(metadata=clerk.md)
    await call.write(pb.CollaborateRequest(join=pb.JoinSession(record=order, client_id="x")))
    assert (await fails_with(call)).code() == grpc.StatusCode.NOT_FOUND  # may not read it

    call = lee.stub.Collaborate(metadata=lee.md)
    await call.write(pb.CollaborateRequest(presence=pb.PresenceUpdate()))
    error = await fails_with(call)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "join" in (error.details() or "")

    a = Collab(lee)
    await a.join(order, "lee-tab")
    await a.edit("bad", 1, [set_field("medication_request.version", 3)])
    error = await fails_with(a.call)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "edit.patches[0].path" in (error.details() or "")

    _, reader_token = await hacs.new_actor(tenant, "auditor-1", "technician", ["read:medication"])
    viewer = Collab(SyncClient(hacs.channel, tenant, reader_token))
    await viewer.join(order, "view-only")
    await viewer.edit("nope", 1, [set_field(NOTE, ["x"])])
    error = await fails_with(viewer.call)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert (await _current(lee, order)).record.version == 1


async def test_an_erased_record_closes_its_session_and_reaches_watchers_without_content(
    hacs: Harness,
) -> None:
    tenant, lee, _, order = await _ward(hacs)
    a = Collab(lee)
    await a.join(order, "lee-tab")
    watch = lee.watch(include_records=True)
    log = await read_until(watch, WatchLog(), caught_up=True)
    assert hacs.server.platform is not None
    records = RecordWriter(RecordStore(hacs.server.platform.db), _no_limit)
    erasing = Caller(tenant.tenant_id, "admin", "administrator", frozenset({"admin:*"}))
    await records.purge(erasing, [order], "right to erasure")
    closed = (await a.expect("closed")).closed
    assert "erased" in closed.reason
    await read_until(watch, log, changes=1)
    watch.cancel()
    [erased] = log.changes
    assert erased.change.operation == change_pb2.CHANGE_OPERATION_PURGE
    assert erased.change.name == order and not erased.HasField("record")


async def _no_limit(tenant_id: str) -> int:
    return 0
