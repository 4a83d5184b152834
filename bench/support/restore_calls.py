"""The restore drill's calls through the gRPC API: the data set in, the questions out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp
from hacs.client import HacsClient
from hacs.memory.v1 import memory_service_pb2 as mpb
from hacs.rag.v1 import knowledge_pb2
from hacs.rag.v1 import rag_service_pb2 as rag
from hacs.records.v1 import record_pb2
from hacs.search.v1 import search_service_pb2 as spb
from hacs.tenant.v1 import tenant_pb2
from hacs.tenant.v1 import tenant_service_pb2 as tpb

from bench.support import dataset
from bench.support.restore_data import (
    AGENT,
    KB_ID,
    QUERY_TIME,
    RECALL_AS_OF_QUERIES,
    RECALL_QUERIES,
    RETRIEVE_QUERIES,
    SEARCH_QUERIES,
    TENANT,
    Answer,
    DrillSize,
    Hit,
    knowledge_documents,
    memory_blocks,
    reworded,
)
from tests.data.rag.corpus import document_requests

BATCH = 250  # records per BatchCreateRecords


def _timestamp(when: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(when * 1e9))
    return stamp


async def create_tenant(
    target: str, operator: HacsClient, tenant_id: str, *, with_agent: bool
) -> tuple[str, str]:
    """A tenant (limits raised) and, if asked, its agent; returns (admin key, agent key)."""
    created = await operator.tenant.CreateTenant(
        tpb.CreateTenantRequest(
            tenant_id=tenant_id,
            tenant=tenant_pb2.Tenant(
                display_name=f"Restore drill {tenant_id}",
                plan=tenant_pb2.PLAN_ENTERPRISE,
                limits=tenant_pb2.TenantLimits(
                    max_users=1_000, max_patients=10_000_000, calls_per_minute=1_000_000_000
                ),
            ),
            admin=tenant_pb2.Actor(display_name="Drill Admin"),
        )
    )
    admin_key = created.admin_api_key.secret
    if not with_agent:
        return admin_key, ""
    async with HacsClient(target, api_key=admin_key) as admin:
        await admin.tenant.CreateActor(
            tpb.CreateActorRequest(
                parent=f"tenants/{tenant_id}",
                actor_id=AGENT,
                actor=tenant_pb2.Actor(display_name="Drill Agent", role="agent"),
            )
        )
        key = await admin.tenant.CreateApiKey(
            tpb.CreateApiKeyRequest(parent=f"tenants/{tenant_id}/actors/{AGENT}")
        )
    return admin_key, key.api_key.secret


async def write_records(admin: HacsClient, size: DrillSize) -> int:
    batches = [
        *dataset.patient_batches(TENANT, size.patients, BATCH, size.seed),
        *dataset.observation_batches(
            TENANT, size.patients, size.observations_per_patient, BATCH, size.seed
        ),
    ]
    written = 0
    for batch in batches:
        reply = await admin.records.BatchCreateRecords(batch)
        written += len(reply.records)
    return written


async def ingest(admin: HacsClient, size: DrillSize) -> dict[str, int]:
    parent = f"tenants/{TENANT}"
    await admin.rag.CreateKnowledgeBase(
        rag.CreateKnowledgeBaseRequest(
            parent=parent,
            knowledge_base_id=KB_ID,
            knowledge_base=knowledge_pb2.KnowledgeBase(display_name="Guidelines and answers"),
        )
    )
    documents = knowledge_documents(size)

    async def requests() -> AsyncIterator[rag.IngestDocumentsRequest]:
        yield rag.IngestDocumentsRequest(
            config=rag.IngestConfig(knowledge_base=f"{parent}/knowledgeBases/{KB_ID}")
        )
        for doc in documents:
            for request in document_requests(doc):
                yield request

    summary = rag.IngestSummary()
    async for event in admin.rag.IngestDocuments(requests(), timeout=3600):
        if event.HasField("summary"):
            summary = event.summary
    return {"documents": summary.ingested, "chunks": summary.chunks_added}


async def remember(agent: HacsClient, size: DrillSize) -> tuple[int, float]:
    """The agent's memories, then rewordings and forgettings; returns (memories, as_of)."""
    parent = f"tenants/{TENANT}"
    blocks = memory_blocks(size)
    stored: list[record_pb2.Record] = []
    for start in range(0, len(blocks), 50):
        reply = await agent.memory.Remember(
            mpb.RememberRequest(parent=parent, memories=blocks[start : start + 50])
        )
        stored.extend(reply.memories)
    await asyncio.sleep(0.05)
    between = time.time()  # recall `as_of` this moment sees the first words
    await asyncio.sleep(0.05)
    for i, memory in enumerate(stored):
        if i % 10 == 5:
            changed = record_pb2.Record(name=memory.name)
            changed.memory_block.content = reworded(memory.memory_block.content, i)
            await agent.memory.UpdateMemory(
                mpb.UpdateMemoryRequest(
                    memory=changed, update_mask=FieldMask(paths=["memory_block.content"])
                )
            )
        elif i % 25 == 7:
            await agent.memory.Forget(mpb.ForgetRequest(name=memory.name, reason="drill"))
    return len(stored), between


async def until_indexed(admin: HacsClient, tenant_id: str, patience: float = 3600) -> float:
    """Wait until the record indexer reached the tenant's head; returns the seconds waited."""
    started = time.monotonic()
    while True:
        status = await admin.search.GetIndexStatus(
            spb.GetIndexStatusRequest(parent=f"tenants/{tenant_id}")
        )
        if status.indexed_sequence >= status.head_sequence:
            return time.monotonic() - started
        if time.monotonic() - started > patience:
            raise RuntimeError(f"the indexer did not reach the head of {tenant_id}: {status}")
        await asyncio.sleep(0.5)


async def ask(admin: HacsClient, agent: HacsClient, as_of: float) -> list[Answer]:
    """The drill's questions; the answers in a fixed order."""
    parent = f"tenants/{TENANT}"
    answers = []
    for query in SEARCH_QUERIES:
        found = await admin.search.Search(
            spb.SearchRequest(parent=parent, query=query, scope=spb.SEARCH_SCOPE_RECORDS, top_k=10)
        )
        answers.append(
            Answer(
                "search",
                query,
                [
                    Hit(h.name, h.score, _present(dense=h.scores, lexical=h.scores))
                    for h in found.hits
                ],
            )
        )
    for query in RETRIEVE_QUERIES:
        retrieved = await admin.rag.Retrieve(
            rag.RetrieveRequest(parent=parent, query=query, top_k=5)
        )
        answers.append(
            Answer(
                "retrieve",
                query,
                [
                    Hit(
                        r.chunk.name,
                        r.relevance,
                        {"dense": r.scores.dense, "lexical": r.scores.lexical},
                    )
                    for r in retrieved.results
                ],
            )
        )
    asks = [("recall", q, None) for q in RECALL_QUERIES]
    asks += [("recall as_of", q, _timestamp(as_of)) for q in RECALL_AS_OF_QUERIES]
    for call, query, at in asks:
        request = mpb.RecallRequest(
            parent=parent,
            query=query,
            top_k=10,
            record_access=False,
            query_time=_timestamp(QUERY_TIME.timestamp()),
        )
        if at is not None:
            request.as_of.CopyFrom(at)
        recalled = await agent.memory.Recall(request)
        answers.append(
            Answer(
                call,
                query,
                [
                    Hit(
                        r.memory.name,
                        r.scores.final_score,
                        {"semantic": r.scores.semantic, "lexical": r.scores.lexical},
                    )
                    for r in recalled.results
                ],
            )
        )
    return answers


def _present(**components: Any) -> dict[str, float]:
    """The optional score fields a message has set (a hit found by one retriever only)."""
    return {
        key: float(getattr(message, key))
        for key, message in components.items()
        if message.HasField(key)
    }
