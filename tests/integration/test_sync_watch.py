"""SyncService.Watch over real gRPC, on SQLite and PostgreSQL.

Replay then live with no gap and no duplicate (also while writes race the
switch), resume from any cursor a stream handed out, filters, per-actor
permissions, tenant isolation, heartbeats, the slow-consumer cut-off with its
resume cursor, a token expiring mid-stream, and bad filters and cursors.
"""

from __future__ import annotations

import asyncio

import grpc
from google.protobuf.field_mask_pb2 import FieldMask
from hacs.records.v1 import record_pb2
from hacs.records.v1 import record_service_pb2 as records_pb
from hacs.sync.v1 import sync_service_pb2 as pb
from hacs.tenant.v1 import tenant_pb2
from hacs.tenant.v1 import tenant_service_pb2 as tenant_pb
from sqlalchemy import delete

from services.kernel.records.tables import ChangeRow
from services.sync import cursors
from services.sync.watch import WatchLimits
from services.sync.wiring import sync_parts
from tests.support import clinical
from tests.support.harness import Harness, NewTenant, bearer
from tests.support.sync import (
    SyncClient,
    WatchLog,
    error_info,
    fails_with,
    read_until,
)

RT = record_pb2.ResourceType


async def _admin(hacs: Harness) -> tuple[NewTenant, SyncClient]:
    tenant = await hacs.new_tenant()
    return tenant, SyncClient(hacs.channel, tenant, tenant.admin_token)


async def test_replay_then_live_without_gap_or_duplicate_while_writes_race_the_switch(
    hacs: Harness,
) -> None:
    _, sync = await _admin(hacs)
    patient = await sync.create(clinical.patient())
    for value in (6.1, 6.4):
        await sync.create(clinical.hba1c(patient.name, value))

    async def keep_writing(count: int) -> None:
        for i in range(count):
            await sync.create(clinical.hba1c(patient.name, 7.0 + i / 10))

    # Writes land before, during and after the switch from replay to live.
    writer = asyncio.create_task(keep_writing(30))
    stream = sync.watch(earliest=True)
    log = await read_until(stream, WatchLog(), caught_up=True)
    await writer
    total = 3 + 30
    await read_until(stream, log, changes=total)
    stream.cancel()
    assert log.sequences == list(range(1, total + 1))  # every change once, in commit order
    assert log.caught_up is not None and log.caught_up.replayed_count >= 3
    assert cursors.try_decode(log.caught_up.cursor) is not None
    first = log.changes[0]
    assert first.change.name == patient.name
    assert first.change.operation == 1 and first.change.version == 1
    assert [cursors.try_decode(c.cursor).sequence for c in log.changes] == log.sequences  # type: ignore[union-attr]


async def test_resume_after_a_forced_disconnect_loses_and_repeats_nothing(hacs: Harness) -> None:
    _, sync = await _admin(hacs)
    patient = await sync.create(clinical.patient())
    stream = sync.watch(earliest=True)
    log = await read_until(stream, WatchLog(), caught_up=True)
    for value in (6.0, 6.5, 7.0):
        await sync.create(clinical.hba1c(patient.name, value))
    await read_until(stream, log, changes=3)
    stream.cancel()  # the client vanishes mid-stream
    for value in (7.5, 8.0):
        await sync.create(clinical.hba1c(patient.name, value))

    resumed = sync.watch(cursor=log.changes[1].cursor)  # resume from an older cursor, too
    again = await read_until(resumed, WatchLog(), changes=4, caught_up=True)
    resumed.cancel()
    assert again.sequences == [3, 4, 5, 6]
    assert again.caught_up is not None and again.caught_up.replayed_count == 4


async def test_filters_by_type_name_patient_and_labels(hacs: Harness) -> None:
    _, sync = await _admin(hacs)
    maria = await sync.create(clinical.patient())
    jon = await sync.create(clinical.patient("Snow", "Jon", "male", "1980-01-01"))
    head = (await sync.head()).cursor
    streams = {
        "types": sync.watch(cursor=head, resource_types=[RT.RESOURCE_TYPE_CONDITION]),
        "patients": sync.watch(cursor=head, patients=[maria.name]),
        "labels": sync.watch(cursor=head, labels={"cohort": ""}),
        "label_value": sync.watch(cursor=head, labels={"cohort": "diabetes"}),
    }
    labelled = clinical.hba1c(jon.name, 8.1)
    labelled.labels["cohort"] = "diabetes"
    other_label = clinical.hba1c(jon.name, 8.2)
    other_label.labels["cohort"] = "cardio"
    obs = await sync.create(clinical.hba1c(maria.name, 6.0))  # 3
    cond = await sync.create(clinical.condition(jon.name))  # 4
    await sync.create(labelled)  # 5
    await sync.create(other_label)  # 6
    # 7: the observation moves from Maria's compartment to Jon's.
    moved = record_pb2.Record(name=obs.name)
    moved.observation.subject.reference = jon.name
    await sync.records.UpdateRecord(
        records_pb.UpdateRecordRequest(
            record=moved, update_mask=FieldMask(paths=["observation.subject"])
        ),
        metadata=sync.md,
    )
    named = sync.watch(cursor=head, names=[cond.name, obs.name])
    expected = {"types": [4], "patients": [3, 7], "labels": [5, 6], "label_value": [5]}
    for key, stream in streams.items():
        log = await read_until(stream, WatchLog(), caught_up=True, changes=len(expected[key]))
        stream.cancel()
        assert log.sequences == expected[key], key
    log = await read_until(named, WatchLog(), changes=3)
    named.cancel()
    assert log.sequences == [3, 4, 7]
    assert log.changes[2].change.previous_patient == maria.name


async def test_events_are_filtered_by_the_actors_read_permissions(hacs: Harness) -> None:
    tenant, admin = await _admin(hacs)
    _, tech_token = await hacs.new_actor(tenant, "lab-tech", "technician", ["read:observation"])
    tech = SyncClient(hacs.channel, tenant, tech_token)
    stream = tech.watch()
    log = await read_until(stream, WatchLog(), caught_up=True)
    patient = await admin.create(clinical.patient())
    await admin.create(clinical.condition(patient.name))
    obs = await admin.create(clinical.hba1c(patient.name, 6.7))
    await read_until(stream, log, changes=1)
    stream.cancel()
    assert [c.change.name for c in log.changes] == [obs.name]  # no patient, no condition

    denied = await fails_with(tech.watch(resource_types=[RT.RESOURCE_TYPE_PATIENT]))
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_info(denied).metadata["permission"] == "read:patient"
    denied = await fails_with(tech.watch(names=[patient.name]))
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_another_tenants_changes_are_never_seen(hacs: Harness) -> None:
    a, sync_a = await _admin(hacs)
    b, sync_b = await _admin(hacs)
    refused = await fails_with(sync_b.watch(parent=a.name))
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
    cursor_a = (await sync_a.head()).cursor
    refused = await fails_with(sync_b.watch(cursor=cursor_a))
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    refused = await fails_with(sync_b.watch(names=[f"{a.name}/patients/p-1"]))
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT

    own = sync_b.watch(earliest=True, heartbeat_seconds=1)
    log = await read_until(own, WatchLog(), caught_up=True)
    patient = await sync_a.create(clinical.patient())
    await sync_a.create(clinical.hba1c(patient.name, 7.1))
    mine = await sync_b.create(clinical.patient("Okafor", "Ada"))
    await read_until(own, log, changes=1, heartbeats=1)
    own.cancel()
    assert [c.change.name for c in log.changes] == [mine.name]
    assert all(c.change.name.startswith(b.name + "/") for c in log.changes)


async def test_heartbeats_carry_a_cursor_that_skips_what_did_not_match(hacs: Harness) -> None:
    _, sync = await _admin(hacs)
    stream = sync.watch(heartbeat_seconds=1, resource_types=[RT.RESOURCE_TYPE_CONDITION])
    log = await read_until(stream, WatchLog(), caught_up=True)
    patient = await sync.create(clinical.patient())  # sequence 1, not a condition
    log = await read_until(stream, log, heartbeats=2)
    stream.cancel()
    assert not log.changes
    assert log.heartbeats[-1].server_time.seconds > 0
    position = cursors.try_decode(log.heartbeats[-1].cursor)
    assert position is not None and position.sequence == 1
    condition = await sync.create(clinical.condition(patient.name))  # sequence 2
    resumed = sync.watch(cursor=log.heartbeats[-1].cursor)
    again = await read_until(resumed, WatchLog(), changes=1)
    resumed.cancel()
    assert [c.change.name for c in again.changes] == [condition.name]


async def test_events_carry_the_version_written_when_asked(hacs: Harness) -> None:
    _, sync = await _admin(hacs)
    stream = sync.watch(include_records=True)
    log = await read_until(stream, WatchLog(), caught_up=True)
    patient = await sync.create(clinical.patient())
    await sync.records.DeleteRecord(
        records_pb.DeleteRecordRequest(name=patient.name), metadata=sync.md
    )
    await read_until(stream, log, changes=2)
    stream.cancel()
    created, deleted = log.changes
    assert created.record.name == patient.name and created.record.version == 1
    assert created.record.patient.birth_date == "1956-04-12"
    assert deleted.change.operation == 3  # DELETE
    assert deleted.record.version == 2 and deleted.record.HasField("delete_time")


async def test_a_consumer_too_far_behind_is_cut_off_with_a_cursor_to_resume_from(
    hacs: Harness,
) -> None:
    assert hacs.server.kernel is not None
    watcher, _, _ = await sync_parts(hacs.server.kernel)
    limits = watcher.limits
    watcher.limits = WatchLimits(max_pending=5, replay_page=limits.replay_page)
    try:
        _, sync = await _admin(hacs)
        patient = await sync.create(clinical.patient())
        stream = sync.watch(cursor=(await sync.head()).cursor)
        log = await read_until(stream, WatchLog(), caught_up=True)
        batch = [
            records_pb.CreateRecordRequest(record=clinical.hba1c(patient.name, 5 + i / 10))
            for i in range(40)
        ]
        await sync.records.BatchCreateRecords(  # 40 changes reach the stream at once
            records_pb.BatchCreateRecordsRequest(parent=sync.tenant.name, requests=batch),
            metadata=sync.md,
        )
        error = await fails_with(_drain_into(stream, log))
    finally:
        watcher.limits = limits
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    info = error_info(error)
    assert info.reason == "ERROR_REASON_SLOW_CONSUMER"
    resume = info.metadata["cursor"]
    assert cursors.try_decode(resume).sequence == (log.sequences[-1] if log.changes else 1)  # type: ignore[union-attr]
    resumed = sync.watch(cursor=resume)
    rest = await read_until(resumed, WatchLog(), caught_up=True)
    resumed.cancel()
    assert log.sequences + rest.sequences == list(range(2, 42))  # nothing lost, nothing twice


async def _drain_into(stream: grpc.aio.UnaryStreamCall, log: WatchLog) -> None:  # type: ignore[type-arg]
    while (message := await stream.read()) is not grpc.aio.EOF:
        if message.WhichOneof("event") == "change":  # type: ignore[union-attr]
            log.changes.append(message.change)  # type: ignore[union-attr]


async def test_a_token_that_expires_mid_stream_ends_it_unauthenticated(hacs: Harness) -> None:
    tenant, _ = await _admin(hacs)
    short = await hacs.token(tenant.admin_key, ttl_seconds=1)
    stream = SyncClient(hacs.channel, tenant, short).watch(heartbeat_seconds=1)
    error = await fails_with(stream)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "expired" in (error.details() or "")


async def test_revoking_or_narrowing_the_watcher_ends_its_open_stream(hacs: Harness) -> None:
    """A stream re-checks its caller before every message (heartbeats too): a revoked key
    ends it UNAUTHENTICATED, a permission taken away ends it PERMISSION_DENIED."""
    tenant, _ = await _admin(hacs)
    admin_auth = bearer(tenant.admin_token)
    streams = {}
    for actor in ("night-tech", "day-tech"):
        key, token = await hacs.new_actor(tenant, actor, "technician", ["read:observation"])
        stream = SyncClient(hacs.channel, tenant, token).watch(heartbeat_seconds=1)
        await read_until(stream, WatchLog(), caught_up=True)
        streams[actor] = (key, stream)

    key_id = streams["night-tech"][0].split("_")[2]
    await hacs.tenant.RevokeApiKey(
        tenant_pb.RevokeApiKeyRequest(name=f"{tenant.name}/actors/night-tech/apiKeys/{key_id}"),
        metadata=admin_auth,
    )
    day = f"{tenant.name}/actors/day-tech"
    current = await hacs.tenant.GetActor(tenant_pb.GetActorRequest(name=day), metadata=admin_auth)
    await hacs.tenant.UpdateActor(
        tenant_pb.UpdateActorRequest(
            actor=tenant_pb2.Actor(name=day, permissions=["read:patient"], etag=current.actor.etag),
            update_mask=FieldMask(paths=["permissions"]),
        ),
        metadata=admin_auth,
    )
    revoked = await fails_with(streams["night-tech"][1])
    assert revoked.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "API key it was issued for" in (revoked.details() or "")
    narrowed = await fails_with(streams["day-tech"][1])
    assert narrowed.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "changed while this stream was open" in (narrowed.details() or "")


async def test_get_sync_cursor_names_the_head(hacs: Harness) -> None:
    _, sync = await _admin(hacs)
    empty = await sync.head()
    assert empty.sequence == 0
    patient = await sync.create(clinical.patient())
    head = await sync.head()
    assert head.sequence == 1 and head.commit_time.seconds > 0
    assert cursors.try_decode(head.cursor) == cursors.Position(sync.tenant.tenant_id, 1)
    stream = sync.watch(cursor=head.cursor)
    log = await read_until(stream, WatchLog(), caught_up=True)
    obs = await sync.create(clinical.hba1c(patient.name, 6.2))
    await read_until(stream, log, changes=1)
    stream.cancel()
    assert log.caught_up is not None and log.caught_up.replayed_count == 0
    assert [c.change.name for c in log.changes] == [obs.name]


async def test_bad_filters_and_cursors_are_refused(hacs: Harness) -> None:
    tenant, sync = await _admin(hacs)
    await sync.create(clinical.patient())
    await sync.create(clinical.patient("Okafor", "Ada"))
    good = (await sync.head()).cursor

    cases: list[tuple[dict[str, object], grpc.StatusCode, str]] = [
        ({"cursor": "not-a-cursor"}, grpc.StatusCode.INVALID_ARGUMENT, "resume_cursor"),
        ({"cursor": good[:-3] + "abc"}, grpc.StatusCode.INVALID_ARGUMENT, "resume_cursor"),
        ({"cursor": good, "earliest": True}, grpc.StatusCode.INVALID_ARGUMENT, "start_at_earliest"),
        (
            {"cursor": cursors.encode(tenant.tenant_id, 99)},
            grpc.StatusCode.OUT_OF_RANGE,
            "beyond the head",
        ),
        ({"resource_types": [999]}, grpc.StatusCode.INVALID_ARGUMENT, "ResourceType"),
        ({"names": ["patients/p-1"]}, grpc.StatusCode.INVALID_ARGUMENT, "filter.names[0]"),
        (
            {"patients": [f"{tenant.name}/observations/o-1"]},
            grpc.StatusCode.INVALID_ARGUMENT,
            "filter.patients[0]",
        ),
        ({"labels": {"Bad Key": "x"}}, grpc.StatusCode.INVALID_ARGUMENT, "filter.labels"),
        ({"parent": "hospital"}, grpc.StatusCode.INVALID_ARGUMENT, "parent"),
    ]
    for kwargs, code, words in cases:
        error = await fails_with(sync.watch(**kwargs))  # type: ignore[arg-type]
        assert error.code() == code, (kwargs, error.details())
        assert words in (error.details() or ""), (kwargs, error.details())

    too_fast = pb.WatchRequest(parent=tenant.name)
    too_fast.heartbeat_interval.FromMilliseconds(500)
    error = await fails_with(sync.stub.Watch(too_fast, metadata=sync.md))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT

    # A cursor older than the retained log: trim the log as a retention job would.
    assert hacs.server.platform is not None
    async with hacs.server.platform.db.transaction(tenant.tenant_id) as session:
        await session.execute(
            delete(ChangeRow).where(
                ChangeRow.tenant_id == tenant.tenant_id, ChangeRow.sequence == 1
            )
        )
    error = await fails_with(sync.watch(cursor=cursors.encode(tenant.tenant_id, 0)))
    assert error.code() == grpc.StatusCode.OUT_OF_RANGE
    trimmed = sync.watch(earliest=True)  # starts at the oldest retained change instead
    log = await read_until(trimmed, WatchLog(), caught_up=True)
    trimmed.cancel()
    assert log.sequences == [2]
