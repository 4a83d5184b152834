"""Sync cursors and Watch filters: pure rules, no server."""

from __future__ import annotations

import pytest
from hacs.records.v1 import change_pb2, record_pb2

from services.common.caller import Caller
from services.common.errors import Forbidden, Invalid
from services.sync import cursors
from services.sync.change_log import LogEvent
from services.sync.filters import WatchFilter, compile_filter

RT = record_pb2


def test_a_cursor_names_one_position_of_one_tenant() -> None:
    cursor = cursors.encode("st-marys", 41)
    assert cursors.decode(cursor, "resume_cursor", "st-marys") == 41
    with pytest.raises(Invalid, match="another tenant"):
        cursors.decode(cursor, "resume_cursor", "st-judes")


@pytest.mark.parametrize(
    "mangle",
    [
        lambda c: c[:-1],  # truncated checksum
        lambda c: c.replace(".", "x", 1),  # no version
        lambda c: "c1." + c.split(".")[1][:-2] + "." + c.split(".")[2],  # shorter payload
        lambda c: "c2" + c[2:],  # a version this server did not write
        lambda c: "",
    ],
)
def test_a_mangled_cursor_is_refused_not_read_as_another_position(mangle: object) -> None:
    cursor = cursors.encode("st-marys", 123456)
    assert callable(mangle)
    with pytest.raises(Invalid, match="not a sync cursor"):
        cursors.decode(mangle(cursor), "resume_cursor", "st-marys")


def nurse(*permissions: str) -> Caller:
    return Caller("ward", "nurse", "nurse", frozenset(permissions))


def event(collection: str, name: str, patients: tuple[str, ...] = (), **labels: str) -> LogEvent:
    return LogEvent(
        sequence=1,
        collection=collection,
        name=name,
        operation="UPDATE",
        version=2,
        patients=patients,
        labels=labels,
        change=change_pb2.Change(name=name),
        cursor="",
    )


def test_a_watch_sees_only_what_its_caller_may_read() -> None:
    caller = nurse("read:patient", "read:observation")
    every = compile_filter(caller, "ward", WatchFilter())
    assert every.matches(event("observations", "tenants/ward/observations/o1"))
    assert not every.matches(event("conditions", "tenants/ward/conditions/c1"))
    with pytest.raises(Forbidden):  # asked for by type but not readable
        compile_filter(caller, "ward", WatchFilter(resource_types=(RT.RESOURCE_TYPE_CONDITION,)))
    with pytest.raises(Forbidden):  # another tenant's log
        compile_filter(caller, "other", WatchFilter())


def test_a_watch_filter_narrows_by_patient_name_and_label() -> None:
    caller = nurse("read:*")
    ward = compile_filter(
        caller,
        "ward",
        WatchFilter(patients=("tenants/ward/patients/p1",), labels=(("unit", "icu"), ("x", ""))),
    )
    mine = event("observations", "n", ("tenants/ward/patients/p1",), unit="icu", x="any")
    assert ward.matches(mine)
    assert not ward.matches(event("observations", "n", ("tenants/ward/patients/p2",), unit="icu"))
    assert not ward.matches(event("observations", "n", ("tenants/ward/patients/p1",), unit="ed"))
    assert not ward.matches(event("observations", "n", ("tenants/ward/patients/p1",), unit="icu"))
