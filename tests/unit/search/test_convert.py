"""SearchService messages <-> the kernel's search values."""

from __future__ import annotations

from datetime import UTC, datetime

from hacs.records.v1 import record_pb2
from hacs.search.v1 import query_pb2
from hacs.search.v1 import search_service_pb2 as pb

from services.kernel.retrieval.expressions import FilterSpec
from services.search.convert import filter_from_proto, filter_to_proto, params_from_proto


def test_a_filter_survives_the_round_trip() -> None:
    spec = FilterSpec(
        kinds=["Observation"],
        patient_ids=["p-1"],
        min_age=65,
        genders=["female"],
        codes=["http://loinc.org|4548-4"],
        start_time=datetime(2024, 1, 1, tzinfo=UTC),
        labels={"unit": "icu"},
        groups=["guidelines"],
        document_tags=["cardiology"],
    )
    message = filter_to_proto(spec, "ward")
    assert list(message.patients) == ["tenants/ward/patients/p-1"]
    assert list(message.knowledge_bases) == ["tenants/ward/knowledgeBases/guidelines"]
    assert message.resource_types == [record_pb2.RESOURCE_TYPE_OBSERVATION]
    assert filter_from_proto(message) == spec


def test_a_request_without_options_gets_the_defaults() -> None:
    params = params_from_proto(pb.SearchRequest(parent="tenants/ward", query="hba1c"), "ward")
    assert (params.scope, params.mode, params.top_k, params.snippet_length) == (
        "records",
        "hybrid",
        10,
        200,
    )
    weighted = pb.SearchRequest(
        query="x",
        hybrid=pb.HybridOptions(fusion=pb.FUSION_METHOD_WEIGHTED, semantic_weight=0.9),
        filter=query_pb2.SearchFilter(genders=["male"]),
    )
    params = params_from_proto(weighted, "ward")
    assert params.fusion.method == "weighted" and params.fusion.semantic_weight == 0.9
    assert params.filter.genders == ["male"]
