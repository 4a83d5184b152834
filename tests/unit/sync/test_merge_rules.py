"""Planning a field edit against concurrent versions: apply, satisfied, dropped, rejected.

Pure (services/sync/merge.py): the versions are built here, no store.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf import json_format
from hacs.records.v1 import record_pb2

from services.sync import policies
from services.sync.field_paths import PathError, resolve
from services.sync.merge import Author, Patch, plan_update

T0 = datetime(2026, 3, 1, 9, tzinfo=UTC)
NAME = "tenants/ward/medicationRequests/rx-1"


def version(number: int, at: datetime, by: str, **fields: object) -> record_pb2.Record:
    record = json_format.ParseDict(
        {"medication_request": {"status": "active", "intent": "order", **fields}},
        record_pb2.Record(),
    )
    record.name, record.version = NAME, number
    record.update_time.FromDatetime(at)
    record.updated_by.name = f"tenants/ward/actors/{by}"
    return record


def patch(path: str, value: object) -> Patch:
    return Patch(resolve(path), value)


BASE = version(1, T0, "dr-a", note=["start"], priority="routine")
# Someone else wrote version 2 after the edit's base: a new note and a new dose.
CURRENT = version(
    2,
    T0 + timedelta(minutes=10),
    "dr-b",
    note=["start", "seen by pharmacy"],
    priority="routine",
    dosage_instruction=[{"text": "500 mg twice daily"}],
)


def test_a_field_nobody_else_changed_applies() -> None:
    plan = plan_update([BASE, CURRENT], [patch("medication_request.priority", "urgent")], writer())
    assert [p.path.text for p in plan.applied] == ["medication_request.priority"]
    assert plan.record is not None and plan.record.medication_request.priority == "urgent"
    assert plan.merged and not plan.rejected


def test_the_same_value_again_is_satisfied_not_rewritten() -> None:
    same = patch("medication_request.note", ["start", "seen by pharmacy"])
    plan = plan_update([BASE, CURRENT], [same], writer())
    assert plan.satisfied == [same] and plan.applied == [] and plan.record is None


def test_last_writer_wins_by_client_time() -> None:
    note = patch("medication_request.note", ["start", "patient asleep"])
    earlier = plan_update([BASE, CURRENT], [note], writer(minutes=5))
    assert earlier.applied == [] and [c.path for c in earlier.dropped] == [
        "medication_request.note"
    ]
    assert earlier.dropped[0].policy == policies.LWW and earlier.dropped[0].server_version == 2
    later = plan_update([BASE, CURRENT], [note], writer(minutes=15))
    assert later.applied == [note] and later.dropped == []


def test_a_concurrently_changed_dose_is_never_merged_silently() -> None:
    dose = patch("medication_request.dosage_instruction", [{"text": "1 g twice daily"}])
    plan = plan_update(
        [BASE, CURRENT], [dose, patch("medication_request.priority", "urgent")], writer(minutes=60)
    )
    assert plan.rejected and plan.applied == [] and plan.dropped == []
    (conflict,) = plan.conflicts
    assert conflict.policy == policies.REJECT and "never merged silently" in conflict.reason
    # A whole-resource edit covers the dose inside it: refused the same way.
    whole = patch("medication_request", {"status": "active", "intent": "order"})
    assert plan_update([BASE, CURRENT], [whole], writer(minutes=60)).rejected


def test_policies_are_declared_by_path_prefix() -> None:
    assert policies.policy_for("medication_request.dosage_instruction") == policies.REJECT
    assert policies.policy_for("medication_statement.dosage") == policies.REJECT
    assert policies.policy_for("medication_request.note") == policies.LWW
    assert "medication_request.dosage_instruction" in policies.guarded_below("medication_request")


def test_paths_are_checked_against_the_record() -> None:
    with pytest.raises(PathError, match="not a field"):
        resolve("medication_request.dose")
    with pytest.raises(PathError, match="list"):
        resolve("medication_request.note.0")
    with pytest.raises(PathError, match="output only"):
        resolve("version")
    with pytest.raises(PathError, match="not a field of this"):
        plan_update([BASE, CURRENT], [patch("observation.status", "final")], writer())


def writer(minutes: int = 30) -> Author:
    return Author("tenants/ward/actors/nurse", "tablet-7", T0 + timedelta(minutes=minutes))
