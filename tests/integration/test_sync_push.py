"""SyncService.PushChanges over real gRPC, on SQLite and PostgreSQL.

Offline changes applied, merged onto newer versions, dropped by
last-writer-wins or reported as conflicts (a dose is never merged); atomic
pushes that write everything or nothing; retries that write nothing twice;
the cursor to watch from afterwards; and what is refused outright.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
from hacs.records.v1 import change_pb2, record_pb2
from hacs.records.v1 import record_service_pb2 as records_pb
from hacs.sync.v1 import patch_pb2
from hacs.sync.v1 import sync_service_pb2 as pb

from services.common.permissions import default_permissions
from services.sync import cursors
from tests.support import clinical
from tests.support.harness import Harness, NewTenant
from tests.support.sync import (
    SyncClient,
    WatchLog,
    dose,
    fails_with,
    metformin_order,
    read_until,
    set_field,
)

CREATE = change_pb2.CHANGE_OPERATION_CREATE
UPDATE = change_pb2.CHANGE_OPERATION_UPDATE
DELETE = change_pb2.CHANGE_OPERATION_DELETE
DOSE = "medication_request.dosage_instruction"
NOTE = "medication_request.note"


async def _ward(hacs: Harness) -> tuple[NewTenant, SyncClient, SyncClient, str, str]:
    tenant = await hacs.new_tenant()
    _, lee = await hacs.new_actor(tenant, "dr-lee", "physician")
    # Dr Ode may also delete medication orders (physicians do not by default).
    ode_may = [*default_permissions("physician"), "delete:medication"]
    _, ode = await hacs.new_actor(tenant, "dr-ode", "physician", ode_may)
    admin = SyncClient(hacs.channel, tenant, tenant.admin_token)
    patient = await admin.create(clinical.patient())
    order = await admin.create(metformin_order(patient.name))
    return (
        tenant,
        SyncClient(hacs.channel, tenant, lee),
        SyncClient(hacs.channel, tenant, ode),
        patient.name,
        order.name,
    )


def _update(
    change_id: str,
    name: str,
    base: int,
    patches: list[patch_pb2.FieldPatch],
    when: datetime | None = None,
) -> pb.OfflineChange:
    change = pb.OfflineChange(
        change_id=change_id, operation=UPDATE, name=name, base_version=base, patches=patches
    )
    if when is not None:
        change.client_time.FromDatetime(when)
    return change


async def _push(
    sync: SyncClient, changes: list[pb.OfflineChange], *, atomic: bool = False, client: str = "tab"
) -> pb.PushChangesResponse:
    return await sync.stub.PushChanges(
        pb.PushChangesRequest(
            parent=sync.tenant.name, client_id=client, changes=changes, atomic=atomic
        ),
        metadata=sync.md,
    )


async def _record(sync: SyncClient, name: str) -> record_pb2.Record:
    reply = await sync.records.GetRecord(records_pb.GetRecordRequest(name=name), metadata=sync.md)
    return reply.record


async def test_offline_changes_are_applied_merged_dropped_or_reported(hacs: Harness) -> None:
    _, lee, ode, _, order = await _ward(hacs)
    offline_since = datetime.now(UTC) - timedelta(minutes=30)
    online = await _push(
        lee, [_update("l1", order, 1, [set_field(NOTE, ["lee"]), set_field(DOSE, dose(1000))])]
    )
    assert online.results[0].outcome == pb.PUSH_OUTCOME_APPLIED
    assert online.results[0].new_version == 2

    reply = await _push(
        ode,
        [
            _update("o1", order, 1, [set_field("labels.ward", "renal")], offline_since),
            _update("o2", order, 1, [set_field(NOTE, ["ode"])], offline_since),
            _update("o3", order, 1, [set_field(DOSE, dose(850))], offline_since),
        ],
    )
    merged, dropped, conflict = reply.results
    assert merged.outcome == pb.PUSH_OUTCOME_MERGED and merged.new_version == 3
    assert not merged.conflicts
    # Ode's note was written before Lee's (by the clocks): Lee's stays, Ode learns why.
    assert dropped.outcome == pb.PUSH_OUTCOME_MERGED and dropped.new_version == 3
    assert dropped.conflicts[0].path == NOTE
    assert dropped.conflicts[0].policy == patch_pb2.MERGE_POLICY_LAST_WRITER_WINS
    # The dose is never merged: a conflict, with the server's dose and who set it.
    assert conflict.outcome == pb.PUSH_OUTCOME_CONFLICT
    assert conflict.current_version == 3 and conflict.record.version == 3
    [field] = conflict.conflicts
    assert field.path == DOSE and field.policy == patch_pb2.MERGE_POLICY_REJECT_AND_REPORT
    assert field.server_version == 2 and field.server_actor.name.endswith("/actors/dr-lee")
    assert "never merged silently" in conflict.reason

    record = await _record(lee, order)
    assert record.version == 3
    assert record.labels["ward"] == "renal"
    assert list(record.medication_request.note) == ["lee"]
    assert record.medication_request.dosage_instruction[0].text == "1000 mg twice daily"
    assert cursors.try_decode(reply.cursor).sequence == (await lee.head()).sequence  # type: ignore[union-attr]


async def test_an_atomic_push_writes_everything_or_nothing(hacs: Harness) -> None:
    tenant, lee, ode, patient, order = await _ward(hacs)
    await _push(lee, [_update("l1", order, 1, [set_field(DOSE, dose(1000))])])
    head = (await ode.head()).sequence
    refused = await _push(
        ode,
        [
            _update("o1", order, 1, [set_field("labels.ward", "renal")]),
            _update("o2", order, 1, [set_field(DOSE, dose(850))]),
        ],
        atomic=True,
    )
    outcomes = [r.outcome for r in refused.results]
    assert outcomes == [pb.PUSH_OUTCOME_NOT_APPLIED, pb.PUSH_OUTCOME_CONFLICT]
    assert (await ode.head()).sequence == head  # not one change written
    assert "ward" not in (await _record(ode, order)).labels

    observation = f"{tenant.name}/observations/obs-offline-1"
    accepted = await _push(
        ode,
        [
            pb.OfflineChange(
                change_id="o3",
                operation=CREATE,
                name=observation,
                record=clinical.hba1c(patient, 7.2),
            ),
            _update("o4", order, 2, [set_field("labels.ward", "renal")]),
            _update("o5", order, 2, [set_field(NOTE, ["checked"])]),  # builds on o4
        ],
        atomic=True,
    )
    assert [r.outcome for r in accepted.results] == [pb.PUSH_OUTCOME_APPLIED] * 3
    assert [r.new_version for r in accepted.results] == [1, 3, 3]  # one write per record
    assert (await ode.head()).sequence == head + 2
    record = await _record(ode, order)
    assert record.labels["ward"] == "renal" and list(record.medication_request.note) == ["checked"]
    assert cursors.try_decode(accepted.cursor).sequence == head + 2  # type: ignore[union-attr]


async def test_a_retried_push_writes_nothing_twice(hacs: Harness) -> None:
    tenant, _, ode, patient, order = await _ward(hacs)
    changes = [
        pb.OfflineChange(
            change_id="c1",
            operation=CREATE,
            name=f"{tenant.name}/observations/obs-7",
            record=clinical.hba1c(patient, 6.9),
        ),
        _update("c2", order, 1, [set_field(DOSE, dose(750)), set_field("labels.ward", "a")]),
        _update("c3", order, 1, [set_field(DOSE, dose(700))]),  # builds on c2, same push
    ]
    first = await _push(ode, changes)
    assert [r.outcome for r in first.results] == [pb.PUSH_OUTCOME_APPLIED] * 3
    assert [r.new_version for r in first.results] == [1, 2, 3]
    head = (await ode.head()).sequence

    again = await _push(ode, changes)  # the reply was lost; the client pushes again
    assert [r.outcome for r in again.results] == [pb.PUSH_OUTCOME_APPLIED] * 3
    assert (await ode.head()).sequence == head
    assert (await _record(ode, order)).medication_request.dosage_instruction[0].text == (
        "700 mg twice daily"
    )


async def test_deletes_need_the_current_version(hacs: Harness) -> None:
    _, lee, ode, _, order = await _ward(hacs)
    await _push(lee, [_update("l1", order, 1, [set_field(NOTE, ["lee"])])])
    stale = await _push(
        ode, [pb.OfflineChange(change_id="d1", operation=DELETE, name=order, base_version=1)]
    )
    assert stale.results[0].outcome == pb.PUSH_OUTCOME_CONFLICT
    assert "changed since base_version 1" in stale.results[0].reason
    assert not (await _record(ode, order)).HasField("delete_time")

    watch = ode.watch(cursor=(await ode.head()).cursor)
    log = await read_until(watch, WatchLog(), caught_up=True)
    fresh = await _push(
        ode, [pb.OfflineChange(change_id="d2", operation=DELETE, name=order, base_version=2)]
    )
    assert fresh.results[0].outcome == pb.PUSH_OUTCOME_APPLIED
    assert fresh.results[0].new_version == 3 and fresh.results[0].record.HasField("delete_time")
    retried = await _push(
        ode, [pb.OfflineChange(change_id="d2", operation=DELETE, name=order, base_version=2)]
    )
    assert retried.results[0].outcome == pb.PUSH_OUTCOME_APPLIED
    await read_until(watch, log, changes=1)
    watch.cancel()
    assert log.changes[0].change.operation == DELETE
    assert log.changes[0].cursor == fresh.cursor  # the push's cursor is its own change's


async def test_pushes_refuse_what_they_must(hacs: Harness) -> None:
    tenant, lee, _, _, order = await _ward(hacs)
    other = await hacs.new_tenant()
    stranger = SyncClient(hacs.channel, other, other.admin_token)
    error = await fails_with(
        stranger.stub.PushChanges(
            pb.PushChangesRequest(
                parent=tenant.name,
                client_id="x",
                changes=[_update("c", order, 1, [set_field(NOTE, ["x"])])],
            ),
            metadata=stranger.md,
        )
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED

    bad = [
        (
            pb.OfflineChange(
                change_id="p", operation=change_pb2.CHANGE_OPERATION_PURGE, name=order
            ),
            "PURGE",
        ),
        (
            _update("u", order, 1, [set_field("medication_request.no_such_field", 1)]),
            "no_such_field",
        ),
        (_update("u", order, 1, [set_field("etag", "x")]), "output only"),
        (_update("u", order, 0, [set_field(NOTE, ["x"])]), "base_version"),
        (
            _update("u", f"{other.name}/medicationRequests/mr-1", 1, [set_field(NOTE, ["x"])]),
            "is not in",
        ),
    ]
    for change, words in bad:
        error = await fails_with(_push(lee, [change]))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, words
        assert words in (error.details() or ""), (words, error.details())
    assert (await _record(lee, order)).version == 1

    _, clerk = await hacs.new_actor(tenant, "clerk", "technician", ["read:medication"])
    refused = await _push(
        SyncClient(hacs.channel, tenant, clerk), [_update("c", order, 1, [set_field(NOTE, ["x"])])]
    )
    assert refused.results[0].outcome == pb.PUSH_OUTCOME_REJECTED
    assert "write:medication" in refused.results[0].reason
    wrong_type = await _push(
        lee, [_update("c", order, 1, [set_field("observation.status", "final")])]
    )
    assert wrong_type.results[0].outcome == pb.PUSH_OUTCOME_REJECTED
    bad_value = await _push(
        lee, [_update("c", order, 1, [set_field("medication_request.status", "maybe")])]
    )
    assert bad_value.results[0].outcome == pb.PUSH_OUTCOME_REJECTED
    assert "status" in bad_value.results[0].reason
    assert (await _record(lee, order)).version == 1
