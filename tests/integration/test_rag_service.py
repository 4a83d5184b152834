"""RagService end to end: ingest -> chunk -> embed -> Milvus Lite -> retrieve -> answer.

Real parts only: the shipped MiniLM model and its tokenizer, Milvus Lite,
SQLite, RecordService for patient context. The LLM providers are the one
stand-in: a local server speaking the OpenAI and Anthropic wire formats
(tests/support/llm_double.py), since no LLM is reachable from here. One
platform for the module (the model and Milvus start once).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from hacs.common.v1 import datatypes_pb2
from hacs.rag.v1 import knowledge_pb2, patient_context_pb2, rag_service_pb2_grpc
from hacs.rag.v1 import rag_service_pb2 as pb
from hacs.records.v1 import record_service_pb2 as rpb
from hacs.records.v1 import record_service_pb2_grpc
from hacs.search.v1 import search_service_pb2 as spb
from hacs.search.v1 import search_service_pb2_grpc

from tests.data.rag.corpus import BAD, CORPUS, Doc, document_requests
from tests.support import clinical
from tests.support.harness import Harness, NewTenant, bearer, make_settings, running_platform
from tests.support.llm_double import ANTHROPIC_KEY, OPENAI_KEY, LlmDouble

S = pb.IngestStatus
CODE = grpc.StatusCode


@pytest.fixture(scope="module")
async def double() -> AsyncIterator[LlmDouble]:
    server = LlmDouble()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="module")
async def platform(
    tmp_path_factory: pytest.TempPathFactory, double: LlmDouble
) -> AsyncIterator[Harness]:
    """tenant, records, embedding, search and RAG on SQLite, with four providers configured.

    In order: `slow` (times out after 0.5 s), `anthropic`, `openai`, and `hallucinating`
    (cites what was not retrieved) — all the local double.
    """
    providers = [
        {"name": "slow", "kind": "openai", "model": "slow-model",
         "url": double.url("slow", "openai"), "timeout_seconds": 0.5, "max_retries": 0},
        {"name": "anthropic", "kind": "anthropic", "model": "claude-test",
         "url": double.url("ok", "anthropic"), "api_key_env": "TEST_ANTHROPIC_KEY"},
        {"name": "openai", "kind": "openai", "model": "gpt-test", "url": double.url("ok", "openai"),
         "api_key_env": "TEST_OPENAI_KEY"},
        {"name": "hallucinating", "kind": "openai", "model": "gpt-test",
         "url": double.url("hallucinate", "openai"), "api_key_env": "TEST_OPENAI_KEY"},
    ]  # fmt: skip
    root = tmp_path_factory.mktemp("rag")
    settings = make_settings(
        root / "data",
        f"sqlite+aiosqlite:///{root / 'hacs.db'}",
        services="tenant,records,embedding,search,rag",
        llm_providers=json.dumps(providers),
    )
    with pytest.MonkeyPatch.context() as env:  # the keys: secrets come from the environment
        env.setenv("TEST_ANTHROPIC_KEY", ANTHROPIC_KEY)
        env.setenv("TEST_OPENAI_KEY", OPENAI_KEY)
        async with running_platform(settings) as harness:
            yield harness


async def new_clinic(platform: Harness, name: str) -> Clinic:
    tenant = await platform.new_tenant(name, limits={"calls_per_minute": 100_000})  # type: ignore[arg-type]
    return Clinic(platform, tenant)


async def loaded_clinic(platform: Harness, name: str) -> Clinic:
    clinic = await new_clinic(platform, name)
    await clinic.create_kb("guidelines", display_name="Clinical guidelines")
    responses = await clinic.ingest("guidelines", CORPUS)
    assert all(o.status == S.INGEST_STATUS_INGESTED for o in outcomes(responses).values())
    return clinic


def outcomes(responses: list[pb.IngestDocumentsResponse]) -> dict[str, pb.IngestOutcome]:
    return {r.outcome.document_id: r.outcome for r in responses if r.HasField("outcome")}


async def code_of(call: object) -> grpc.StatusCode:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


class Clinic:
    """A tenant with a RAG stub and its admin's (or another actor's) credentials."""

    def __init__(self, hacs: Harness, tenant: NewTenant, token: str | None = None) -> None:
        self.hacs = hacs
        self.tenant = tenant
        self.md = bearer(token or tenant.admin_token)
        self.rag = rag_service_pb2_grpc.RagServiceStub(hacs.channel)

    def kb(self, kb_id: str) -> str:
        return f"{self.tenant.name}/knowledgeBases/{kb_id}"

    async def create_kb(self, kb_id: str, **fields: object) -> knowledge_pb2.KnowledgeBase:
        reply = await self.rag.CreateKnowledgeBase(
            pb.CreateKnowledgeBaseRequest(
                parent=self.tenant.name,
                knowledge_base_id=kb_id,
                knowledge_base=knowledge_pb2.KnowledgeBase(**fields),  # type: ignore[arg-type]
            ),
            metadata=self.md,
        )
        return reply.knowledge_base

    async def ingest(
        self, kb_id: str, docs: tuple[Doc, ...] | list[Doc], **config: bool
    ) -> list[pb.IngestDocumentsResponse]:
        requests = [pb.IngestDocumentsRequest(config=pb.IngestConfig(knowledge_base=self.kb(kb_id),
                                                                     **config))]  # fmt: skip
        for doc in docs:
            requests.extend(document_requests(doc))
        return await self.stream(requests)

    async def stream(
        self, requests: list[pb.IngestDocumentsRequest]
    ) -> list[pb.IngestDocumentsResponse]:
        call = self.rag.IngestDocuments(iter(requests), metadata=self.md)
        return [response async for response in call]

    async def retrieve(self, query: str, **kw: object) -> pb.RetrieveResponse:
        return await self.rag.Retrieve(
            pb.RetrieveRequest(parent=self.tenant.name, query=query, **kw),  # type: ignore[arg-type]
            metadata=self.md,
        )

    async def answer(self, query: str, **kw: object) -> list[pb.AnswerResponse]:
        call = self.rag.Answer(
            pb.AnswerRequest(parent=self.tenant.name, query=query, **kw),  # type: ignore[arg-type]
            metadata=self.md,
        )
        return [event async for event in call]


async def test_ingest_then_retrieve_round_trip(platform: Harness) -> None:
    clinic = await new_clinic(platform, "round-trip")
    kb = await clinic.create_kb("guidelines", display_name="Clinical guidelines")
    assert kb.embedding_model == "models/all-minilm-l6-v2" and kb.document_count == 0
    responses = await clinic.ingest("guidelines", [*CORPUS[:2], *BAD, *CORPUS[2:]])
    found = outcomes(responses)
    assert {d: o.status for d, o in found.items()} == {
        **{doc.document_id: S.INGEST_STATUS_INGESTED for doc in CORPUS},
        **{doc.document_id: S.INGEST_STATUS_REJECTED for doc in BAD},
    }
    assert found["corrupt"].reason.startswith("corrupt PDF")
    assert found["blank"].reason == "document has no text"
    assert found["scan"].reason.startswith("unsupported mime type image/png")
    stages = {r.progress.stage for r in responses if r.HasField("progress")}
    assert {
        pb.INGEST_STAGE_RECEIVING,
        pb.INGEST_STAGE_EMBEDDING,
        pb.INGEST_STAGE_INDEXING,
    } <= stages
    summary = responses[-1].summary
    assert (summary.received, summary.ingested, summary.rejected) == (8, 5, 3)
    assert summary.chunks_added == sum(o.chunk_count for o in found.values())

    reply = await clinic.retrieve("When is metformin contraindicated in kidney disease?", top_k=3)
    top = reply.results[0]
    assert top.chunk.document == f"{clinic.kb('guidelines')}/documents/metformin-ckd"
    assert top.chunk.section_path == ["Metformin in chronic kidney disease", "Dosing",
                                      "Renal impairment"]  # fmt: skip
    assert "below 30" in top.chunk.text and top.citation.index == 1
    assert top.citation.title == "Metformin in chronic kidney disease"
    assert top.citation.section == "Metformin in chronic kidney disease > Dosing > Renal impairment"
    assert top.citation.evidence_level == 1 and top.citation.publication_date == "2024-03"
    assert 0 < top.relevance <= 1 and top.scores.dense > 0 and top.scores.lexical > 0
    # Offsets point into the extracted text: the chunk is exactly that slice.
    source = (CORPUS[0].bytes()).decode()
    assert top.chunk.text.split("\n")[-1] in source

    pdf = await clinic.retrieve("apixaban dose reduction", top_k=1)
    chunk = pdf.results[0].chunk
    assert chunk.document.endswith("/documents/af-anticoagulation") and chunk.page_number == 2
    document = await clinic.rag.GetDocument(pb.GetDocumentRequest(name=chunk.document),
                                            metadata=clinic.md)  # fmt: skip
    assert document.document.page_count == 2 and document.document.revision == 1
    listed = await clinic.rag.ListChunks(
        pb.ListChunksRequest(parent=chunk.document, page_size=2), metadata=clinic.md
    )
    assert [c.chunk_index for c in listed.chunks] == [0, 1] and listed.next_page_token
    kb_now = await clinic.rag.GetKnowledgeBase(pb.GetKnowledgeBaseRequest(name=kb.name),
                                               metadata=clinic.md)  # fmt: skip
    assert kb_now.knowledge_base.document_count == 5
    assert kb_now.knowledge_base.chunk_count == summary.chunks_added


async def test_reingest_skips_unchanged_and_replaces_changed_atomically(platform: Harness) -> None:
    clinic = await loaded_clinic(platform, "reingest")
    unchanged = outcomes(await clinic.ingest("guidelines", CORPUS[:1]))["metformin-ckd"]
    assert unchanged.status == S.INGEST_STATUS_SKIPPED_UNCHANGED
    assert unchanged.document.revision == 1

    doc_name = f"{clinic.kb('guidelines')}/documents/metformin-ckd"
    old = await clinic.rag.ListChunks(pb.ListChunksRequest(parent=doc_name), metadata=clinic.md)
    changed = Doc(
        "metformin-ckd", "", "text/markdown", CORPUS[0].title, CORPUS[0].tags,
        CORPUS[0].evidence_level, CORPUS[0].publication_date,
        content=CORPUS[0].bytes().replace(b"1000 mg per day", b"500 mg twice daily")
        + b"\n## Sick day rules\n\nPause metformin during dehydrating illness such as "
        b"vomiting or diarrhoea, and restart it 24-48 hours after eating and drinking normally.\n",
    )  # fmt: skip
    seen_revisions: list[set[int]] = []

    async def watch() -> None:
        while not ingest.done():
            reply = await clinic.retrieve(
                "metformin kidney", top_k=20, filter=pb.RetrievalFilter(documents=[doc_name])
            )
            seen_revisions.append({r.chunk.document_revision for r in reply.results})

    ingest = asyncio.create_task(clinic.ingest("guidelines", [changed]))
    await watch()
    replaced = outcomes(ingest.result())["metformin-ckd"]
    assert replaced.status == S.INGEST_STATUS_REPLACED
    assert replaced.previous_chunk_count == len(old.chunks)
    assert replaced.document.revision == 2 and replaced.chunk_count > len(old.chunks)
    # Retrieval saw the old revision or the new one, never chunks of both at once.
    assert seen_revisions and all(len(revisions) <= 1 for revisions in seen_revisions)

    after = await clinic.retrieve("sick day rules for metformin", top_k=20)
    of_doc = [r.chunk for r in after.results if r.chunk.document == doc_name]
    assert of_doc and {c.document_revision for c in of_doc} == {2}
    assert "Pause metformin" in of_doc[0].text
    new = await clinic.rag.ListChunks(pb.ListChunksRequest(parent=doc_name), metadata=clinic.md)
    assert all("/chunks/r2-" in c.name for c in new.chunks)
    assert not {c.name for c in old.chunks} & {c.name for r in after.results for c in [r.chunk]}

    forced = outcomes(await clinic.ingest("guidelines", [changed], force=True))["metformin-ckd"]
    assert forced.status == S.INGEST_STATUS_REPLACED and forced.document.revision == 3
    trial = outcomes(await clinic.ingest("guidelines", CORPUS[:1], validate_only=True))
    assert trial["metformin-ckd"].status == S.INGEST_STATUS_REPLACED  # what would happen…
    still = await clinic.rag.GetDocument(pb.GetDocumentRequest(name=doc_name), metadata=clinic.md)
    assert still.document.revision == 3  # …but nothing was written

    deleted = await clinic.rag.DeleteDocument(
        pb.DeleteDocumentRequest(name=doc_name, etag=still.document.etag), metadata=clinic.md
    )
    assert deleted.document.revision == 3
    gone = await clinic.retrieve("metformin kidney eGFR", top_k=20)
    assert all(r.chunk.document != doc_name for r in gone.results)


async def test_min_relevance_filters_on_the_calibrated_score(platform: Harness) -> None:
    clinic = await loaded_clinic(platform, "relevance")
    question = "When is metformin contraindicated in kidney disease?"
    everything = await clinic.retrieve(question, top_k=50)
    assert len(everything.results) > 5 and everything.below_min_relevance_count == 0
    relevances = [r.relevance for r in everything.results]
    assert relevances == sorted(relevances, reverse=True)
    assert relevances[0] > 0.5 > relevances[-1]  # the calibrated scale spreads them out
    strict = await clinic.retrieve(question, top_k=50, min_relevance=0.5)
    assert 0 < len(strict.results) < len(everything.results)
    assert all(r.relevance >= 0.5 for r in strict.results)
    assert strict.below_min_relevance_count == len(everything.results) - len(strict.results)
    assert strict.results[0].chunk.name == everything.results[0].chunk.name
    assert "Renal impairment" in strict.results[0].chunk.section_path
    off_topic = await clinic.retrieve(
        "rehabilitation exercises after knee replacement surgery", min_relevance=0.05
    )
    assert not off_topic.results and off_topic.below_min_relevance_count > 0


async def test_patient_context_raises_renal_dosing_for_a_patient_with_ckd(
    platform: Harness,
) -> None:
    clinic = await loaded_clinic(platform, "context")
    renal = f"{clinic.kb('guidelines')}/documents/metformin-ckd"
    question = "metformin dose"

    def rank_of_renal(reply: pb.RetrieveResponse) -> int:
        return next(i for i, r in enumerate(reply.results) if r.chunk.document == renal
                    and "Renal impairment" in r.chunk.section_path)  # fmt: skip

    plain = await clinic.retrieve(question, top_k=10)
    ckd = datatypes_pb2.CodeableConcept(
        coding=[datatypes_pb2.Coding(system=clinical.SNOMED, code="709044004",
                                     display="Chronic kidney disease")],
        text="CKD stage 4",
    )  # fmt: skip
    inline = await clinic.retrieve(
        question, top_k=10, patient_context=patient_context_pb2.PatientContext(conditions=[ckd])
    )
    assert rank_of_renal(inline) < rank_of_renal(plain) and rank_of_renal(inline) == 0
    top = inline.results[0]
    assert top.scores.context_boost > 0 and "condition: CKD stage 4" in top.matched_context
    assert plain.results[0].scores.context_boost == 0

    # By patient record: RecordService read with the caller's permissions.
    records = record_service_pb2_grpc.RecordServiceStub(platform.channel)
    patient = await records.CreateRecord(
        rpb.CreateRecordRequest(parent=clinic.tenant.name, record_id="ana",
                                record=clinical.patient("Silva", "Ana", "female", "1948-05-02")),
        metadata=clinic.md,
    )  # fmt: skip
    condition = clinical.condition(patient.record.name, "709044004", "Chronic kidney disease")
    del condition.condition.code.coding[1:]  # the helper also adds a diabetes ICD-10 code
    await records.CreateRecord(
        rpb.CreateRecordRequest(parent=clinic.tenant.name, record=condition), metadata=clinic.md
    )
    by_record = await clinic.retrieve(
        question, top_k=10,
        patient_context=patient_context_pb2.PatientContext(patient=patient.record.name),
    )  # fmt: skip
    context = by_record.resolved_context
    assert context.patient == patient.record.name and context.sex == "female" and context.age >= 75
    assert [c.text for c in context.conditions] == ["Chronic kidney disease"]
    assert rank_of_renal(by_record) == 0

    _, no_patients = await platform.new_actor(clinic.tenant, "kb-reader", "agent",
                                               ["read:knowledge"])  # fmt: skip
    reader = Clinic(platform, clinic.tenant, no_patients)
    assert await code_of(reader.retrieve(question)) == CODE.OK
    with_patient = reader.retrieve(
        question, patient_context=patient_context_pb2.PatientContext(patient=patient.record.name)
    )
    assert await code_of(with_patient) == CODE.PERMISSION_DENIED
    missing = clinic.retrieve(question, patient_context=patient_context_pb2.PatientContext(
        patient=f"{clinic.tenant.name}/patients/nobody"))  # fmt: skip
    assert await code_of(missing) == CODE.NOT_FOUND


async def test_filters_by_tag_evidence_date_and_knowledge_base(platform: Harness) -> None:
    clinic = await loaded_clinic(platform, "filters")
    await clinic.create_kb("empty-kb")
    cardio = await clinic.retrieve(
        "dose", top_k=50, filter=pb.RetrievalFilter(tags=["Cardiovascular"])
    )
    assert {r.chunk.document.rsplit("/", 1)[1] for r in cardio.results} == {
        "htn-targets", "af-anticoagulation"}  # fmt: skip
    moderate = await clinic.retrieve(
        "dose", top_k=50, filter=pb.RetrievalFilter(evidence_levels=[2])
    )
    assert {r.citation.evidence_level for r in moderate.results} == {2}
    recent = await clinic.retrieve(
        "treatment", top_k=50, filter=pb.RetrievalFilter(published_after="2024-01-01")
    )
    assert {r.citation.publication_date for r in recent.results} == {"2024-03", "2024-01-10"}
    only_empty = await clinic.retrieve("dose", knowledge_bases=[clinic.kb("empty-kb")])
    assert not only_empty.results
    listed = await clinic.rag.ListDocuments(
        pb.ListDocumentsRequest(parent=clinic.kb("guidelines"), tags=["cardiovascular"]),
        metadata=clinic.md,
    )
    assert [d.name.rsplit("/", 1)[1] for d in listed.documents] == ["af-anticoagulation",
                                                                    "htn-targets"]  # fmt: skip


async def test_knowledge_base_lifecycle_and_bad_requests(platform: Harness) -> None:
    clinic = await loaded_clinic(platform, "lifecycle")
    rag, md = clinic.rag, clinic.md
    duplicate = clinic.create_kb("guidelines")
    assert await code_of(duplicate) == CODE.ALREADY_EXISTS
    for kb_id, fields in (
        ("Bad_Id", {}),
        ("chunky", {"chunking": knowledge_pb2.ChunkingConfig(max_tokens=64, overlap_tokens=64)}),
        ("chunky", {"chunking": knowledge_pb2.ChunkingConfig(max_tokens=5000)}),
        ("modelled", {"embedding_model": "models/not-registered"}),
    ):
        assert await code_of(clinic.create_kb(kb_id, **fields)) == CODE.INVALID_ARGUMENT
    kb = (await rag.GetKnowledgeBase(pb.GetKnowledgeBaseRequest(name=clinic.kb("guidelines")),
                                     metadata=md)).knowledge_base  # fmt: skip
    renamed = await rag.UpdateKnowledgeBase(
        pb.UpdateKnowledgeBaseRequest(
            knowledge_base=knowledge_pb2.KnowledgeBase(
                name=kb.name, etag=kb.etag, display_name="Guidelines 2025",
                chunking=knowledge_pb2.ChunkingConfig(max_tokens=128, respect_headings=False),
            ),
            update_mask=FieldMask(paths=["display_name", "chunking"]),
        ),
        metadata=md,
    )  # fmt: skip
    updated = renamed.knowledge_base
    assert updated.display_name == "Guidelines 2025" and updated.etag != kb.etag
    assert updated.chunking.max_tokens == 128 and not updated.chunking.respect_headings
    stale = rag.UpdateKnowledgeBase(
        pb.UpdateKnowledgeBaseRequest(
            knowledge_base=knowledge_pb2.KnowledgeBase(name=kb.name, etag=kb.etag, description="x"),
            update_mask=FieldMask(paths=["description"]),
        ),
        metadata=md,
    )
    assert await code_of(stale) == CODE.FAILED_PRECONDITION
    immutable = rag.UpdateKnowledgeBase(
        pb.UpdateKnowledgeBaseRequest(knowledge_base=knowledge_pb2.KnowledgeBase(name=kb.name),
                                      update_mask=FieldMask(paths=["embedding_model"])),
        metadata=md,
    )  # fmt: skip
    assert await code_of(immutable) == CODE.INVALID_ARGUMENT
    await clinic.create_kb("second")
    first_page = await rag.ListKnowledgeBases(
        pb.ListKnowledgeBasesRequest(parent=clinic.tenant.name, page_size=1), metadata=md
    )
    second_page = await rag.ListKnowledgeBases(
        pb.ListKnowledgeBasesRequest(parent=clinic.tenant.name, page_size=1,
                                     page_token=first_page.next_page_token), metadata=md,
    )  # fmt: skip
    assert [k.name for k in [*first_page.knowledge_bases, *second_page.knowledge_bases]] == [
        clinic.kb("guidelines"), clinic.kb("second")]  # fmt: skip

    bad_retrieves = [
        pb.RetrieveRequest(parent=clinic.tenant.name, query=" "),
        pb.RetrieveRequest(parent=clinic.tenant.name, query="x", top_k=500),
        pb.RetrieveRequest(parent=clinic.tenant.name, query="x", min_relevance=1.5),
        pb.RetrieveRequest(parent=clinic.tenant.name, query="x", knowledge_bases=["guidelines"]),
        pb.RetrieveRequest(parent=clinic.tenant.name, query="x",
                           filter=pb.RetrievalFilter(published_after="last year")),
    ]  # fmt: skip
    for request in bad_retrieves:
        assert await code_of(rag.Retrieve(request, metadata=md)) == CODE.INVALID_ARGUMENT
    required = clinic.retrieve("metformin", rerank=pb.RERANK_MODE_REQUIRED)
    assert await code_of(required) == CODE.FAILED_PRECONDITION  # no re-ranker ships
    auto = await clinic.retrieve("metformin", rerank=pb.RERANK_MODE_AUTO)
    assert auto.results and not auto.reranked
    unknown_kb = clinic.retrieve("metformin", knowledge_bases=[clinic.kb("nope")])
    assert await code_of(unknown_kb) == CODE.NOT_FOUND

    config = pb.IngestDocumentsRequest(config=pb.IngestConfig(knowledge_base=clinic.kb("second")))
    data = pb.IngestDocumentsRequest(data=pb.DocumentData(content=b"x"))
    for requests, expected in (
        ([*document_requests(CORPUS[3])], CODE.INVALID_ARGUMENT),  # no config first
        ([config, data], CODE.INVALID_ARGUMENT),  # data without a header
        ([config, config], CODE.INVALID_ARGUMENT),
        ([pb.IngestDocumentsRequest(config=pb.IngestConfig(knowledge_base=clinic.kb("nope")))],
         CODE.NOT_FOUND),
    ):  # fmt: skip
        assert await code_of(clinic.stream(requests)) == expected
    no_end = [config, *list(document_requests(CORPUS[3]))[:-1]]
    cut = outcomes(await clinic.stream(no_end))
    assert cut["asthma-steps"].reason == "the stream ended before its end"
    bad_sha = [config, *list(document_requests(CORPUS[3]))[:-1],
               pb.IngestDocumentsRequest(end=pb.DocumentEnd(sha256="00" * 32))]  # fmt: skip
    assert "SHA-256" in outcomes(await clinic.stream(bad_sha))["asthma-steps"].reason

    in_use = rag.DeleteKnowledgeBase(pb.DeleteKnowledgeBaseRequest(name=kb.name), metadata=md)
    assert await code_of(in_use) == CODE.FAILED_PRECONDITION
    await rag.DeleteKnowledgeBase(pb.DeleteKnowledgeBaseRequest(name=kb.name, force=True),
                                  metadata=md)  # fmt: skip
    assert await code_of(rag.GetKnowledgeBase(pb.GetKnowledgeBaseRequest(name=kb.name),
                                              metadata=md)) == CODE.NOT_FOUND  # fmt: skip
    assert not (await clinic.retrieve("metformin", top_k=50)).results


async def test_knowledge_bases_are_isolated_between_tenants(platform: Harness) -> None:
    north = await loaded_clinic(platform, "iso-north")
    south = await new_clinic(platform, "iso-south")
    await south.create_kb("guidelines")
    north_kb = north.kb("guidelines")
    rag, md = south.rag, south.md
    assert await code_of(rag.GetKnowledgeBase(pb.GetKnowledgeBaseRequest(name=north_kb),
                                              metadata=md)) == CODE.NOT_FOUND  # fmt: skip
    assert await code_of(rag.GetDocument(pb.GetDocumentRequest(
        name=f"{north_kb}/documents/metformin-ckd"), metadata=md)) == CODE.NOT_FOUND  # fmt: skip
    assert await code_of(rag.ListKnowledgeBases(pb.ListKnowledgeBasesRequest(
        parent=north.tenant.name), metadata=md)) == CODE.PERMISSION_DENIED  # fmt: skip
    assert await code_of(rag.ListDocuments(pb.ListDocumentsRequest(parent=north_kb),
                                           metadata=md)) == CODE.PERMISSION_DENIED  # fmt: skip
    # A name of another tenant inside the request is refused as malformed (issue 20, #8).
    refused = await code_of(south.retrieve("metformin", knowledge_bases=[north_kb]))
    assert refused == CODE.INVALID_ARGUMENT
    foreign = pb.RetrieveRequest(parent=north.tenant.name, query="metformin")
    assert await code_of(rag.Retrieve(foreign, metadata=md)) == CODE.PERMISSION_DENIED
    # South's own search over all of its knowledge finds nothing of north's.
    assert not (await south.retrieve("metformin kidney disease", top_k=50)).results
    into_north = [pb.IngestDocumentsRequest(config=pb.IngestConfig(knowledge_base=north_kb)),
                  *document_requests(CORPUS[3])]  # fmt: skip
    assert await code_of(south.stream(into_north)) == CODE.PERMISSION_DENIED
    delete = rag.DeleteKnowledgeBase(pb.DeleteKnowledgeBaseRequest(name=north_kb, force=True),
                                     metadata=md)  # fmt: skip
    assert await code_of(delete) == CODE.PERMISSION_DENIED
    assert (await north.retrieve("metformin", top_k=1)).results  # untouched

    # Permissions inside a tenant: a nurse reads knowledge but may not write it; a
    # technician's role has no read:knowledge.
    _, nurse_token = await platform.new_actor(north.tenant, "nurse-kim", "nurse")
    nurse = Clinic(platform, north.tenant, nurse_token)
    assert (await nurse.retrieve("metformin")).results
    assert await code_of(nurse.create_kb("mine")) == CODE.PERMISSION_DENIED
    _, tech_token = await platform.new_actor(north.tenant, "tech-lee", "technician")
    technician = Clinic(platform, north.tenant, tech_token)
    assert await code_of(technician.retrieve("metformin")) == CODE.PERMISSION_DENIED

    # SearchService's knowledge scope finds the same chunks, with document and section.
    search = search_service_pb2_grpc.SearchServiceStub(platform.channel)
    hits = await search.Search(
        spb.SearchRequest(parent=north.tenant.name, query="apixaban dose reduction",
                          scope=spb.SEARCH_SCOPE_KNOWLEDGE, top_k=3), metadata=north.md,
    )  # fmt: skip
    assert hits.hits[0].kind == spb.HIT_KIND_CHUNK
    assert hits.hits[0].document == f"{north_kb}/documents/af-anticoagulation"
    assert "Dose adjustment in renal impairment" in hits.hits[0].section


def _final(events: list[pb.AnswerResponse]) -> pb.AnswerFinal:
    assert events[0].HasField("context") and events[-1].HasField("answer")
    return events[-1].answer


async def test_answer_streams_a_cited_answer_after_falling_back_from_a_timeout(
    platform: Harness, double: LlmDouble
) -> None:
    clinic = await loaded_clinic(platform, "answers")
    events = await clinic.answer("When is metformin contraindicated in kidney disease?")
    context = events[0].context
    assert context.results[0].chunk.document.endswith("/documents/metformin-ckd")
    deltas = "".join(e.delta.text for e in events if e.HasField("delta"))
    answer = _final(events)
    assert deltas == answer.text and answer.text.endswith("[1].")
    assert [(a.provider, a.outcome) for a in answer.attempts] == [
        ("slow", "timeout"),
        ("anthropic", "ok"),
    ]
    assert "timed out after 0.5s" in answer.attempts[0].error
    assert (answer.provider, answer.model, answer.extractive) == ("anthropic", "claude-test", False)
    assert (answer.prompt_template, answer.prompt_template_version) == ("clinical-answer", "2")
    assert answer.prompt_tokens == 250 and answer.completion_tokens == 9
    assert answer.validation.passed and answer.sentences[0].citations == [1]
    assert answer.sentences[0].is_claim and answer.sentences[0].supported
    assert [c.index for c in answer.citations] == [1]
    assert answer.citations[0].chunk == context.results[0].chunk.name
    assert answer.citations[0].quote in context.results[0].chunk.text
    prompt = double.requests[-1]["body"]["messages"][-1]["content"]
    assert "[1] Metformin in chronic kidney disease" in prompt
    assert ANTHROPIC_KEY not in json.dumps([str(a) for a in answer.attempts])

    v1 = _final(await clinic.answer("metformin in CKD", providers=["openai"],
                                    prompt_template_version="1"))  # fmt: skip
    assert (v1.provider, v1.prompt_template_version) == ("openai", "1")
    assert v1.validation.passed and v1.prompt_tokens == 321


async def test_citation_validation_flags_what_was_not_retrieved_or_supported(
    platform: Harness,
) -> None:
    clinic = await loaded_clinic(platform, "validation")
    answer = _final(await clinic.answer("metformin and kidneys", providers=["hallucinating"]))
    assert not answer.validation.passed
    assert list(answer.validation.invalid_citations) == [42]
    assert answer.validation.unsupported_sentence_count == 2
    grounded, invented, uncited = answer.sentences
    assert grounded.supported and grounded.citations == [1]
    assert not invented.supported and "cites [42] which was not retrieved" in invented.issue
    assert not uncited.supported and uncited.issue == "no citation" and uncited.is_claim
    assert [c.index for c in answer.citations] == [1]


async def test_extractive_fallback_and_insufficient_evidence(platform: Harness) -> None:
    clinic = await loaded_clinic(platform, "extractive")
    events = await clinic.answer(
        "What is the blood pressure target for adults aged 80 and over?", providers=["slow"]
    )
    answer = _final(events)
    assert answer.extractive and answer.provider == "extractive"
    assert answer.fallback_reason == "every provider failed: slow timeout"
    assert answer.text.startswith("Extractive answer (no language model was used)")
    assert "150/90 mmHg" in answer.text and answer.validation.passed
    context = events[0].context.results
    for cited in answer.citations:  # every quote is verbatim from a retrieved chunk
        assert cited.quote in context[cited.index - 1].chunk.text
        assert cited.quote.replace("\n", " ").rstrip(".") in answer.text
    assert all(s.supported for s in answer.sentences)

    refuse = clinic.answer("blood pressure target", providers=["slow"],
                           allow_extractive_fallback=False)  # fmt: skip
    assert await code_of(refuse) == CODE.UNAVAILABLE
    unknown = clinic.answer("blood pressure target", providers=["gpt-9"])
    assert await code_of(unknown) == CODE.INVALID_ARGUMENT
    template = clinic.answer("blood pressure target", prompt_template_version="99")
    assert await code_of(template) == CODE.INVALID_ARGUMENT

    nothing = _final(await clinic.answer("knee replacement rehabilitation", min_relevance=0.9))
    assert nothing.insufficient_evidence and not nothing.attempts and nothing.validation.passed
    assert "no sufficient evidence" in nothing.text


async def test_extractive_answer_when_no_provider_is_configured(platform: Harness) -> None:
    """The same Answer domain with no provider at all (this module's platform has four)."""
    from services.common.caller import Caller
    from services.rag.answer import Answerer, AnswerQuery, AnswerResult
    from services.rag.retrieval import RetrievalQuery
    from services.rag.store import KnowledgeStore

    clinic = await loaded_clinic(platform, "no-llm")
    assert platform.server.platform is not None
    domain = await platform.server.platform.shared("rag_domain", _never_built)
    answerer = Answerer(domain.retriever, KnowledgeStore(platform.server.platform.db), [])
    caller = Caller(clinic.tenant.tenant_id, "doc", "physician", frozenset({"read:knowledge"}))
    query = AnswerQuery(RetrievalQuery(clinic.tenant.tenant_id, "How is asthma stepped up?"))
    events = [e async for e in answerer.answer(caller, query)]
    final = events[-1]
    assert isinstance(final, AnswerResult) and final.extractive
    assert final.fallback_reason == "no provider configured" and final.validation.passed
    context = events[0].outcome.results  # type: ignore[union-attr]
    quoted = {context[i - 1].document.id for i in final.validation.cited}
    assert quoted == {"asthma-steps"}  # weakly relevant passages are not quoted
    assert "Step " in final.text and len(final.validation.sentences) >= 2
    strict = AnswerQuery(query.retrieval, allow_extractive=False)
    with pytest.raises(Exception, match="no LLM provider is configured"):
        [e async for e in answerer.answer(caller, strict)]


async def _never_built() -> object:
    raise AssertionError("the RAG domain is built by the first RAG call")


async def _knowledge_rows(platform: Harness, tenant_id: str) -> dict[str, dict[str, object]]:
    """Every knowledge row of the tenant in Milvus, by key."""
    kernel = platform.server.kernel
    assert kernel is not None
    index = await kernel.vector_index()
    rows = await index.call(
        index.client.query,
        index.collection("knowledge"),
        filter=f'tenant_id == "{tenant_id}"',
        output_fields=["pk", "text", "title", "codes", "labels", "version", "grp", "extra",
                       "dense"],
    )  # fmt: skip
    return {row["pk"]: row for row in rows}


async def test_rebuild_recreates_the_knowledge_index_from_the_chunk_rows(
    platform: Harness,
) -> None:
    from services.rag.wiring import document_indexer

    clinic = await loaded_clinic(platform, "rebuild")
    await clinic.create_kb(
        "plain", chunking=knowledge_pb2.ChunkingConfig(include_context_header=False)
    )
    await clinic.ingest("plain", CORPUS[1:3])
    changed = Doc(
        "metformin-ckd", "", "text/markdown", CORPUS[0].title, CORPUS[0].tags,
        CORPUS[0].evidence_level, CORPUS[0].publication_date,
        content=CORPUS[0].bytes() + b"\n## Sick day rules\n\nPause metformin when vomiting.\n",
    )  # fmt: skip
    await clinic.ingest("guidelines", [changed])  # revision 2: revision 1's rows are gone
    questions = ("When is metformin contraindicated in kidney disease?", "apixaban dose")
    before = [await clinic.retrieve(q, top_k=5) for q in questions]
    rows = await _knowledge_rows(platform, "rebuild")
    assert rows and all("/chunks/r2-" in pk for pk in rows if "metformin-ckd" in pk)

    kernel = platform.server.kernel
    assert kernel is not None
    index = await kernel.vector_index()
    await index.delete_where("knowledge", "rebuild", "")  # the index is lost
    assert not await _knowledge_rows(platform, "rebuild")
    seen: list[tuple[int, int]] = []

    async def progress(documents: int, chunks: int) -> None:
        seen.append((documents, chunks))

    documents, chunks = await (await document_indexer(kernel)).rebuild("rebuild", progress=progress)
    assert (documents, chunks) == (len(CORPUS) + 2, len(rows)) and seen[-1] == (documents, chunks)
    rebuilt = await _knowledge_rows(platform, "rebuild")
    assert set(rebuilt) == set(rows)
    for pk, row in rows.items():  # the same text (context header or not), fields and vector
        again = rebuilt[pk]
        assert {k: v for k, v in again.items() if k != "dense"} == {
            k: v for k, v in row.items() if k != "dense"
        }
        # Embedded in other batches: the same vector up to the model's rounding.
        assert float(np.dot(again["dense"], row["dense"])) > 0.999
    after = [await clinic.retrieve(q, top_k=5) for q in questions]
    for old, new in zip(before, after, strict=True):
        assert [r.chunk.name for r in new.results] == [r.chunk.name for r in old.results]
        for a, b in zip(old.results, new.results, strict=True):
            assert b.relevance == pytest.approx(a.relevance, abs=1e-3)


async def test_llm_tokens_are_metered_per_provider_and_the_daily_quota_refuses(
    platform: Harness,
) -> None:
    """What the provider reported (the double: 250 in, 9 out) is the tenant's usage; with a
    daily quota of exactly that, the next answer that would ask a provider is refused."""
    from google.protobuf.timestamp_pb2 import Timestamp
    from hacs.client import error_details
    from hacs.tenant.v1 import tenant_pb2
    from hacs.tenant.v1 import tenant_service_pb2 as tpb

    from services.common.db.base import utcnow

    clinic = await loaded_clinic(platform, "metered")
    answer = _final(await clinic.answer("metformin in CKD", providers=["anthropic"]))
    assert (answer.provider, answer.prompt_tokens, answer.completion_tokens) == (
        "anthropic",
        250,
        9,
    )
    operator = bearer(await platform.operator_token())
    current = await platform.tenant.GetTenant(
        tpb.GetTenantRequest(name=clinic.tenant.name), metadata=operator
    )
    tenant = current.tenant
    updated = await platform.tenant.UpdateTenant(
        tpb.UpdateTenantRequest(
            tenant=tenant_pb2.Tenant(
                name=tenant.name, etag=tenant.etag,
                limits=tenant_pb2.TenantLimits(llm_tokens_per_day=259),
            ),
            update_mask=FieldMask(paths=["limits.llm_tokens_per_day"]),
        ),
        metadata=operator,
    )  # fmt: skip
    assert updated.tenant.limits.llm_tokens_per_day == 259
    assert updated.tenant.limits.embedding_tokens_per_month == 10_000_000  # the free plan's

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await clinic.answer("metformin in CKD", providers=["openai"])
    assert refused.value.code() == CODE.RESOURCE_EXHAUSTED
    details = error_details(refused.value)
    assert 0 < details["RetryInfo"].retry_delay.seconds <= 86_400
    assert "used 259 of its 259 LLM tokens" in (refused.value.details() or "")

    now = int(utcnow().timestamp())
    usage = await platform.tenant.ExportUsage(
        tpb.ExportUsageRequest(
            parent=clinic.tenant.name,
            start_time=Timestamp(seconds=now - 3600),
            end_time=Timestamp(seconds=now + 1),
        ),
        metadata=clinic.md,
    )
    found: dict[tuple[str, str], int] = {}
    for row in usage.rows:  # summed over hours: the calls may straddle one
        found[(row.metric, row.dimension)] = found.get((row.metric, row.dimension), 0) + row.value
    assert found[("llm_input_tokens", "anthropic/claude-test")] == 250
    assert found[("llm_output_tokens", "anthropic/claude-test")] == 9
    assert not any(metric.startswith("llm") and "openai" in dim for metric, dim in found)
    assert found[("embedding_tokens", "models/all-minilm-l6-v2")] > 0  # the ingest, the queries
