"""SearchService end to end: records written -> indexer -> Milvus -> hybrid search.

Real parts only: the shipped MiniLM model, SQLite, and Milvus twice — Milvus
Lite (the embedded default) and a Milvus standalone server reached by URI.
One platform per Milvus for the module (loading the model and starting
Milvus once).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import grpc
import pytest
from hacs.records.v1 import record_pb2, record_service_pb2_grpc
from hacs.records.v1 import record_service_pb2 as rpb
from hacs.search.v1 import query_pb2, search_service_pb2_grpc
from hacs.search.v1 import search_service_pb2 as pb

from tests.support import clinical
from tests.support.harness import Harness, NewTenant, bearer, make_settings, running_platform

RT = record_pb2.ResourceType


@pytest.fixture(scope="module", params=["milvus-lite", "milvus-server"])
async def platform(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Harness]:
    """The platform on Milvus Lite (the embedded default) and on a real Milvus server.

    The same tests run on both: a server URI must switch the index with no
    code change (tests/support/milvus.py starts the server).
    """
    root = tmp_path_factory.mktemp("search")
    overrides = {"services": "all"}
    if request.param == "milvus-server":
        overrides["milvus_uri"] = request.getfixturevalue("milvus_uri")
    settings = make_settings(root / "data", f"sqlite+aiosqlite:///{root / 'hacs.db'}", **overrides)
    async with running_platform(settings) as harness:
        yield harness


class Clinic:
    """A tenant with a few patients and their records, indexed."""

    def __init__(self, hacs: Harness, tenant: NewTenant) -> None:
        self.hacs = hacs
        self.tenant = tenant
        self.md = bearer(tenant.admin_token)
        self.records = record_service_pb2_grpc.RecordServiceStub(hacs.channel)
        self.search = search_service_pb2_grpc.SearchServiceStub(hacs.channel)

    async def add(self, record: record_pb2.Record, record_id: str = "") -> record_pb2.Record:
        reply = await self.records.CreateRecord(
            rpb.CreateRecordRequest(parent=self.tenant.name, record_id=record_id, record=record),
            metadata=self.md,
        )
        return reply.record

    async def indexed(self) -> None:
        for _ in range(300):
            status = await self.search.GetIndexStatus(
                pb.GetIndexStatusRequest(parent=self.tenant.name), metadata=self.md
            )
            if status.indexed_sequence == status.head_sequence:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"the indexer did not catch up: {status}")

    async def find(self, query: str, **kw: object) -> pb.SearchResponse:
        return await self.search.Search(
            pb.SearchRequest(parent=self.tenant.name, query=query, **kw), metadata=self.md
        )  # type: ignore[arg-type]


async def _clinic(platform: Harness, name: str) -> Clinic:
    clinic = Clinic(platform, await platform.new_tenant(name, limits={"calls_per_minute": 100_000}))  # type: ignore[arg-type]
    maria = await clinic.add(clinical.patient("Garcia", "Maria", "female", "1950-02-01"), "maria")
    tom = await clinic.add(clinical.patient("Baker", "Tom", "male", "2012-06-30"), "tom")
    await clinic.add(clinical.condition(maria.name), "maria-dm2")
    htn = clinical.condition(maria.name, "38341003", "Hypertensive disorder, systemic arterial")
    htn.condition.code.coding[1].code = "I10"
    htn.condition.code.coding[1].display = "Essential (primary) hypertension"
    await clinic.add(htn, "maria-htn")
    asthma = clinical.condition(tom.name, "195967001", "Asthma")
    asthma.condition.code.coding[1].code = "J45.909"
    await clinic.add(asthma, "tom-asthma")
    await clinic.add(clinical.hba1c(maria.name, 8.4, datetime(2024, 5, 2, tzinfo=UTC)), "maria-a1c")
    await clinic.indexed()
    return clinic


async def test_semantic_search_finds_what_words_do_not_match(platform: Harness) -> None:
    clinic = await _clinic(platform, "north-clinic")
    reply = await clinic.find(
        "high blood sugar", top_k=3, hybrid=pb.HybridOptions(mode=pb.RETRIEVAL_MODE_DENSE)
    )
    top = reply.hits[0]
    assert top.name == f"{clinic.tenant.name}/conditions/maria-dm2"
    # The condition's text shares no word with the query: meaning, not words, matched.
    assert not {"high", "blood", "sugar"} & set(top.snippet.text.lower().replace(".", " ").split())
    assert top.scores.dense_rank == 1 and not top.scores.HasField("lexical")
    assert reply.embedding_model == "models/all-minilm-l6-v2"


async def test_hybrid_finds_an_exact_code_that_dense_alone_misses(platform: Harness) -> None:
    clinic = await _clinic(platform, "code-clinic")
    target = f"{clinic.tenant.name}/conditions/maria-htn"
    dense = await clinic.find("I10", top_k=1, hybrid=pb.HybridOptions(mode=pb.RETRIEVAL_MODE_DENSE))
    hybrid = await clinic.find("I10", top_k=1)
    assert dense.hits[0].name != target
    assert hybrid.hits[0].name == target
    assert hybrid.hits[0].scores.lexical_rank == 1


async def test_filters_and_parsed_queries(platform: Harness) -> None:
    clinic = await _clinic(platform, "filter-clinic")
    elderly = await clinic.find(
        "elderly patients with diabetes and high blood pressure", parse_query=True, top_k=5
    )
    assert elderly.parsed_query.filter.min_age == 65
    assert list(elderly.parsed_query.filter.resource_types) == [RT.RESOURCE_TYPE_PATIENT]
    assert {t.concept for t in elderly.parsed_query.terms} == {"Diabetes mellitus", "Hypertension"}
    assert [h.name for h in elderly.hits] == [f"{clinic.tenant.name}/patients/maria"]
    assert not elderly.parsed_query.as_written
    # The same words in a person's question describe the asker: no filter, all candidates.
    asked = await clinic.find(
        "I am elderly, what helps with diabetes and high blood pressure?",
        parse_query=True,
        top_k=5,
    )
    assert asked.parsed_query.as_written
    assert not asked.parsed_query.extracted_filters
    assert asked.parsed_query.filter.min_age == 0 and not asked.applied_filter.resource_types
    assert {t.concept for t in asked.parsed_query.terms} == {"Diabetes mellitus", "Hypertension"}
    assert any(h.resource_type != RT.RESOURCE_TYPE_PATIENT for h in asked.hits)

    kids = await clinic.find(
        "breathing problems", filter=query_pb2.SearchFilter(max_age=17), top_k=10
    )
    assert {h.patient for h in kids.hits} == {f"{clinic.tenant.name}/patients/tom"}
    coded = await clinic.find(
        "condition", filter=query_pb2.SearchFilter(codes=["http://snomed.info/sct|44054006"])
    )
    # The condition itself, and the patient whose compartment holds it.
    assert {h.name for h in coded.hits} == {
        f"{clinic.tenant.name}/conditions/maria-dm2",
        f"{clinic.tenant.name}/patients/maria",
    }
    typed = await clinic.find(
        "diabetes", filter=query_pb2.SearchFilter(resource_types=[RT.RESOURCE_TYPE_OBSERVATION])
    )
    assert {h.resource_type for h in typed.hits} == {RT.RESOURCE_TYPE_OBSERVATION}
    assert typed.hits[0].snippet.text and typed.hits[0].snippet.highlights is not None
    # Text filters (indexed on a server: vector_index.INDEXED_FILTER_FIELDS) by equality.
    tom_name = f"{clinic.tenant.name}/patients/tom"
    for found in (
        await clinic.find("patient", filter=query_pb2.SearchFilter(genders=["male"]), top_k=10),
        await clinic.find("asthma", filter=query_pb2.SearchFilter(patients=[tom_name]), top_k=10),
    ):
        assert found.hits and {h.patient for h in found.hits} == {tom_name}


async def test_search_is_tenant_scoped(platform: Harness) -> None:
    north = await _clinic(platform, "scope-north")
    south = Clinic(platform, await platform.new_tenant("scope-south"))
    await south.add(clinical.patient("Okafor", "Ada", "female", "1940-01-01"), "ada")
    await south.indexed()
    everything = await north.find("patient", top_k=100)
    assert all(h.name.startswith(north.tenant.name) for h in everything.hits)
    assert not any("Okafor" in h.snippet.text for h in everything.hits)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await north.search.Search(
            pb.SearchRequest(parent=south.tenant.name, query="patient"), metadata=north.md
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_deletes_leave_the_index(platform: Harness) -> None:
    clinic = await _clinic(platform, "delete-clinic")
    name = f"{clinic.tenant.name}/observations/maria-a1c"
    await clinic.records.DeleteRecord(rpb.DeleteRecordRequest(name=name), metadata=clinic.md)
    await clinic.indexed()
    reply = await clinic.find("hemoglobin a1c", top_k=20)
    assert name not in [h.name for h in reply.hits]


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"query": ""}, "query"),
        (
            {"query": "x", "filter": query_pb2.SearchFilter(min_age=70, max_age=60)},
            "filter.min_age",
        ),
        ({"query": "x", "filter": query_pb2.SearchFilter(genders=["robot"])}, "filter.genders[0]"),
        ({"query": "x", "filter": query_pb2.SearchFilter(codes=["a|b|c"])}, "filter.codes[0]"),
        ({"query": "x", "hybrid": pb.HybridOptions(semantic_weight=1.5)}, "hybrid.semantic_weight"),
    ],
)
async def test_malformed_queries_and_filters_are_refused(
    platform: Harness, request_fields: dict[str, object], field: str
) -> None:
    from hacs.client import error_details

    tenant = await platform.new_tenant()
    stub = search_service_pb2_grpc.SearchServiceStub(platform.channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Search(
            pb.SearchRequest(parent=tenant.name, **request_fields),
            metadata=bearer(tenant.admin_token),
        )  # type: ignore[arg-type]
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in [v.field for v in error_details(caught.value)["BadRequest"].field_violations]
