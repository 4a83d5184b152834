"""The sync service's pure rules, without a server: cursors, field paths, merge policies.

(Unit tests by nature; they sit with the other sync tests.)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf import json_format
from hacs.records.v1 import record_pb2
from hacs.sync.v1 import patch_pb2

from services.common.caller import Caller
from services.common.errors import Invalid
from services.sync import cursors, policies
from services.sync.edits import author_of
from services.sync.field_paths import PathError, get_value, resolve, set_value, to_json
from services.sync.merge import Author, Patch, plan_update
from services.sync.stamps import Stamp
from tests.support.sync import dose, metformin_order

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
LEE = "tenants/acme/actors/dr-lee"
ODE = "tenants/acme/actors/dr-ode"
DOSE = "medication_request.dosage_instruction"
NOTE = "medication_request.note"


def test_cursors_round_trip_and_refuse_anything_else() -> None:
    cursor = cursors.encode("st-marys", 42)
    assert cursors.decode(cursor, "resume_cursor", "st-marys") == 42
    assert cursors.try_decode(cursor) == cursors.Position("st-marys", 42)
    for bad in ("", "42", "c1.abc", cursor[:-1] + "0", cursor.replace("c1.", "c2."), cursor + "x"):
        assert cursors.try_decode(bad) is None, bad
    with pytest.raises(Invalid) as caught:
        cursors.decode(cursor, "resume_cursor", "other-hospital")
    assert "another tenant" in caught.value.message


def test_field_paths_name_editable_fields_only() -> None:
    assert resolve("observation.value_quantity.value").mask == "observation.value_quantity.value"
    assert resolve("labels.triage").mask == "labels"  # maps are written whole
    assert resolve("extensions.site.ward").mask == "extensions"
    assert resolve("medication_request.dosage_instruction").mask == DOSE
    for bad, words in [
        ("version", "output only"),
        ("etag", "output only"),
        ("observation.no_such", "not a field"),
        ("medication_request.dosage_instruction.text", "replaced whole"),
        ("labels.a.b", "map"),
        ("observation.effective_date_time.seconds", "no fields below"),
        ("observation..status", "empty segment"),
        ("nothing", "not an editable field"),
    ]:
        with pytest.raises(PathError) as caught:
            resolve(bad)
        assert words in str(caught.value), bad


def test_setting_a_oneof_member_clears_its_siblings() -> None:
    document = to_json(metformin_order("tenants/acme/patients/p-1"))
    path = resolve("medication_request.medication_reference")
    set_value(document, path, {"reference": "tenants/acme/medications/m-1"})
    assert "medication_codeable_concept" not in document["medication_request"]
    assert get_value(document, path) == {"reference": "tenants/acme/medications/m-1"}
    set_value(document, path, None)
    assert get_value(document, path) is None


def test_the_most_specific_declared_policy_wins() -> None:
    assert policies.policy_for(DOSE) == policies.REJECT
    assert policies.policy_for("medication_statement.dosage") == policies.REJECT
    assert policies.policy_for("medication_request.note") == policies.LWW
    assert policies.policy_for("observation.value_quantity") == policies.LWW
    assert DOSE in policies.guarded_below("medication_request")
    assert [p.path for p in policies.declared_for("observation")] == []


def test_client_time_is_clamped_to_when_the_server_received_the_edit() -> None:
    caller = Caller("acme", "dr-lee", "physician", frozenset())
    received = T0
    assert author_of(caller, "tab", T0 + timedelta(days=1), received).time == received
    assert author_of(caller, "tab", T0 - timedelta(minutes=5), received).time == T0 - timedelta(
        minutes=5
    )
    assert author_of(caller, "tab", None, received).time == received


# -- plan_update -----------------------------------------------------------------------


def _versions(*changes: tuple[str, dict[str, object]]) -> list[record_pb2.Record]:
    """Version 1 (by Lee) and one version per (actor, {path: value}) after it, a minute apart."""
    base = metformin_order("tenants/acme/patients/p-1")
    base.version = 1
    base.updated_by.name = LEE
    base.update_time.FromDatetime(T0)
    versions = [base]
    for n, (actor, values) in enumerate(changes, start=2):
        document = to_json(versions[-1])
        for path, value in values.items():
            set_value(document, resolve(path), value)
        record = json_format.ParseDict(document, record_pb2.Record())
        record.version = n
        record.updated_by.name = actor
        record.update_time.FromDatetime(T0 + timedelta(minutes=n))
        versions.append(record)
    return versions


def _patch(path: str, value: object) -> Patch:
    return Patch(resolve(path), value)


def test_unchanged_fields_apply_and_the_same_value_is_no_conflict() -> None:
    versions = _versions((LEE, {NOTE: ["lee"]}))
    plan = plan_update(
        versions,
        [_patch("labels.ward", "renal"), _patch(NOTE, ["lee"])],
        Author(ODE, "tab", T0),
    )
    assert [p.path.text for p in plan.applied] == ["labels.ward"]
    assert [p.path.text for p in plan.satisfied] == [NOTE]
    assert plan.merged and not plan.dropped and not plan.conflicts
    assert plan.record is not None and plan.record.labels["ward"] == "renal"
    assert plan.mask == ["labels"]


def test_last_writer_wins_compares_client_times_then_actor_and_client_id() -> None:
    versions = _versions((LEE, {NOTE: ["lee"]}))  # written at T0+2min, no stamp
    later = plan_update(
        versions, [_patch(NOTE, ["ode"])], Author(ODE, "tab", T0 + timedelta(minutes=3))
    )
    assert [p.path.text for p in later.applied] == [NOTE]
    earlier = plan_update(
        versions, [_patch(NOTE, ["ode"])], Author(ODE, "tab", T0 + timedelta(minutes=1))
    )
    assert not earlier.applied and earlier.record is None
    [lost] = earlier.dropped
    assert lost.policy == patch_pb2.MERGE_POLICY_LAST_WRITER_WINS
    assert lost.server_version == 2 and lost.server_actor.name == LEE
    assert [v.string_value for v in lost.server_value.list_value.values] == ["lee"]

    # With a stamp, the server value's time is its author's client time, and a
    # tie goes to the greater (actor, client_id).
    stamps = {2: Stamp(T0, "tab-b")}
    tie_lower = plan_update(versions, [_patch(NOTE, ["x"])], Author(LEE, "tab-a", T0), stamps)
    assert tie_lower.dropped and not tie_lower.applied
    tie_higher = plan_update(versions, [_patch(NOTE, ["x"])], Author(LEE, "tab-c", T0), stamps)
    assert tie_higher.applied
    other_actor = plan_update(versions, [_patch(NOTE, ["x"])], Author(ODE, "tab-a", T0), stamps)
    assert other_actor.applied  # "…/dr-ode" > "…/dr-lee"


def test_a_concurrent_dose_change_rejects_the_whole_edit() -> None:
    versions = _versions((LEE, {DOSE: dose(1000)}))
    plan = plan_update(
        versions,
        [_patch(DOSE, dose(850)), _patch("labels.ward", "renal")],
        Author(ODE, "tab", T0 + timedelta(hours=1)),  # later by the clock: no matter
    )
    assert plan.rejected and not plan.applied and plan.record is None
    [conflict] = plan.conflicts
    assert conflict.path == DOSE and conflict.policy == patch_pb2.MERGE_POLICY_REJECT_AND_REPORT
    assert conflict.server_version == 2 and "never merged silently" in conflict.reason
    # A patch of the whole resource covers the dose inside it.
    whole = to_json(versions[0])["medication_request"]
    covering = plan_update(versions, [_patch("medication_request", whole)], Author(ODE, "t", T0))
    assert [c.path for c in covering.conflicts] == [DOSE]


def test_the_batchs_own_versions_are_not_concurrent_with_it() -> None:
    versions = _versions((ODE, {DOSE: dose(750)}))
    own = plan_update(
        versions, [_patch(DOSE, dose(700))], Author(ODE, "tab", T0), own=frozenset({2})
    )
    assert [p.path.text for p in own.applied] == [DOSE] and not own.merged
    theirs = _versions((ODE, {DOSE: dose(750)}), (LEE, {DOSE: dose(900)}))
    mixed = plan_update(
        theirs, [_patch(DOSE, dose(700))], Author(ODE, "tab", T0), own=frozenset({2})
    )
    assert mixed.rejected and mixed.conflicts[0].server_version == 3


def test_paths_of_another_type_and_values_that_do_not_fit_are_refused() -> None:
    versions = _versions()
    with pytest.raises(PathError, match="not a field of this medication_request"):
        plan_update(versions, [_patch("observation.status", "final")], Author(ODE, "t", T0))
    with pytest.raises(PathError, match="does not fit"):
        plan_update(
            versions, [_patch("medication_request.do_not_perform", {"a": 1})], Author(ODE, "t", T0)
        )
