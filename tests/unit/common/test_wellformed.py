"""What every request must be before any validator or servicer sees it (wellformed.py)."""

from __future__ import annotations

import math

import pytest
from google.protobuf import struct_pb2
from hacs.embedding.v1 import embedding_service_pb2 as epb
from hacs.memory.v1 import memory_service_pb2 as mpb
from hacs.memory.v1 import recall_pb2
from hacs.records.v1 import record_pb2
from hacs.records.v1 import record_service_pb2 as rpb
from hacs.tenant.v1 import tenant_service_pb2 as tpb

from services.common import wellformed
from services.common.errors import Invalid
from services.common.validation import validate


def test_times_outside_what_can_be_stored_are_refused() -> None:
    request = rpb.ListRecordsRequest(parent="tenants/ward")
    request.start_time.seconds = 253_402_300_800  # 10000-01-01
    request.end_time.nanos = -1
    assert {p for p, _ in wellformed.problems(request)} == {"start_time", "end_time"}
    usage = tpb.GetUsageRequest(name="tenants/ward")
    usage.start_time.seconds = wellformed.MAX_SECONDS  # 9999-12-31T23:59:59: fine
    assert wellformed.problems(usage) == []


def test_durations_outside_ten_thousand_years_or_with_mixed_signs_are_refused() -> None:
    recall = mpb.RecallRequest(parent="tenants/ward", query="x")
    recall.half_lives.add().half_life.seconds = 10**12
    mixed = recall.half_lives.add().half_life
    mixed.seconds, mixed.nanos = 5, -1
    assert [p for p, _ in wellformed.problems(recall)] == [
        "half_lives[0].half_life",
        "half_lives[1].half_life",
    ]


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_numbers_must_be_finite_at_any_depth(value: float) -> None:
    record = record_pb2.Record()
    record.observation.status = "final"
    record.observation.value_quantity.value = value
    create = rpb.CreateRecordRequest(parent="tenants/ward", record=record)
    assert [p for p, _ in wellformed.problems(create)] == [
        "record.observation.value_quantity.value"
    ]
    recall = mpb.RecallRequest(weights=recall_pb2.RecallWeights(semantic=value))
    assert [p for p, _ in wellformed.problems(recall)] == ["weights.semantic"]


def test_no_nul_in_any_string_map_key_or_struct() -> None:
    request = rpb.ListRecordsRequest(parent="tenants/ward", codes=["ok", "a\x00b"])
    request.labels["k\x00"] = "v"
    request.labels["k"] = "v\x00"
    paths = [p for p, _ in wellformed.problems(request)]
    assert sorted(paths) == ["codes[1]", "labels['k']", "labels['k\\x00']"]
    record = record_pb2.Record()
    record.extensions.update({"deep": {"list": [1.0, "x\x00"], "n": math.nan}})
    found = wellformed.problems(rpb.CreateRecordRequest(record=record))
    assert len(found) == 2 and all(p.startswith("record.extensions") for p, _ in found)


def test_enums_hold_a_declared_value_at_any_depth() -> None:
    """Found by `hacs fuzz` (seed 1, #116): ListModels with kind -1 raised KeyError."""
    request = epb.ListModelsRequest(kind=-1)  # type: ignore[arg-type]
    assert wellformed.problems(request) == [
        ("kind", "-1 is not a value of hacs.embedding.v1.ModelKind")
    ]
    listing = rpb.ListRecordsRequest(resource_types=[1, 99])  # type: ignore[list-item]
    assert [p for p, _ in wellformed.problems(listing)] == ["resource_types[1]"]
    assert wellformed.problems(epb.ListModelsRequest(kind=0)) == []  # unspecified is declared


def test_validate_refuses_before_the_request_validator_runs() -> None:
    request = rpb.ListRecordsRequest(parent="not a parent")
    request.start_time.seconds = -(10**15)
    with pytest.raises(Invalid) as refused:
        validate(request)
    assert [v.field for v in refused.value.violations] == ["start_time"]
    assert wellformed.problems(struct_pb2.Struct()) == []
