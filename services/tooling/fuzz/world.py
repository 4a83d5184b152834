"""The tenants a fuzz run needs: a victim whose data carries canaries, and two attackers.

The victim's records, memories, knowledge, actors and tenant carry unique
canary strings; nothing it owns is ever used to fuzz. Each attacker tenant
has an administrator and an agent (the two roles whose tokens fuzz), spare
actors for its own deletes to hit, and the same kinds of data (plain text), so
that generated names point at real things on both sides of the tenant line.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.message import Message
from hacs.embedding.v1 import embedding_service_pb2 as embedding_pb
from hacs.embedding.v1 import embedding_service_pb2_grpc
from hacs.memory.v1 import memory_service_pb2 as memory_pb
from hacs.memory.v1 import memory_service_pb2_grpc
from hacs.rag.v1 import knowledge_pb2, rag_service_pb2_grpc
from hacs.rag.v1 import rag_service_pb2 as rag_pb
from hacs.records.v1 import memory_block_pb2, record_pb2, record_service_pb2_grpc
from hacs.records.v1 import record_service_pb2 as records_pb
from hacs.sync.v1 import sync_service_pb2 as sync_pb
from hacs.sync.v1 import sync_service_pb2_grpc
from hacs.tenant.v1 import tenant_pb2, tenant_service_pb2_grpc
from hacs.tenant.v1 import tenant_service_pb2 as tenant_pb

from services.tooling.fuzz.messages import Vocabulary

# Far above what a run sends: quotas must not be what answers.
LIMITS = tenant_pb2.TenantLimits(max_users=1_000, max_patients=1_000_000, calls_per_minute=10**6)
SPARE_ACTORS = ("spare-1", "spare-2")
TOKEN_SECONDS = 3600
Metadata = tuple[tuple[str, str], ...]


def bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


@dataclass(frozen=True)
class Identity:
    label: str  # e.g. "fuzz-b/admin"
    tenant: str
    token: str  # "" for a call without one

    @property
    def metadata(self) -> Metadata:
        return bearer(self.token) if self.token else ()


@dataclass
class TenantData:
    tenant_id: str
    admin_key: str
    admin: str  # tokens
    agent: str
    names: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    etags: list[str] = field(default_factory=list)
    page_tokens: list[str] = field(default_factory=list)
    cursors: list[str] = field(default_factory=list)
    # Method path -> calls that were valid for this tenant (the mutation seeds): each a
    # list of request messages (one, or a client stream's).
    seeds: dict[str, list[list[Message]]] = field(default_factory=dict)

    def seed(self, path: str, *requests: Message) -> None:
        self.seeds.setdefault(path, []).append(list(requests))


@dataclass
class World:
    victim: TenantData
    attackers: list[TenantData]
    canaries: list[str]
    models: list[str] = field(default_factory=list)

    def identities(self) -> list[Identity]:
        out = []
        for tenant in self.attackers:
            out.append(Identity(f"{tenant.tenant_id}/admin", tenant.tenant_id, tenant.admin))
            out.append(Identity(f"{tenant.tenant_id}/agent", tenant.tenant_id, tenant.agent))
        return out

    def vocabulary(self, tenant_id: str) -> Vocabulary:
        own = next(t for t in self.attackers if t.tenant_id == tenant_id)
        others = [t for t in (self.victim, *self.attackers) if t is not own]
        return Vocabulary(
            own_tenant=tenant_id,
            own_names=own.names,
            foreign_names=[n for t in others for n in t.names],
            ids=[i for t in (self.victim, *self.attackers) for i in t.ids],
            cursors=[c for t in (self.victim, *self.attackers) for c in t.cursors],
            page_tokens=[p for t in (self.victim, *self.attackers) for p in t.page_tokens],
            etags=[e for t in (self.victim, *self.attackers) for e in t.etags],
            tenants=[t.tenant_id for t in (self.victim, *self.attackers)],
            api_keys=[own.admin_key],
            models=self.models,
        )


class Builder:
    """Creates the tenants through the real API (any gRPC target: the edge or a service)."""

    def __init__(self, channel: grpc.aio.Channel, operator_key: str) -> None:
        self.tenants = tenant_service_pb2_grpc.TenantServiceStub(channel)
        self.records = record_service_pb2_grpc.RecordServiceStub(channel)
        self.memory = memory_service_pb2_grpc.MemoryServiceStub(channel)
        self.rag = rag_service_pb2_grpc.RagServiceStub(channel)
        self.sync = sync_service_pb2_grpc.SyncServiceStub(channel)
        self.embedding = embedding_service_pb2_grpc.EmbeddingServiceStub(channel)
        self._operator_key = operator_key

    async def world(self, run_id: str, on_step: Callable[[str], None] = lambda _: None) -> World:
        operator = await self.token(self._operator_key)
        canaries = [f"cnry{secrets.token_hex(10)}" for _ in range(4)]
        victim = await self._tenant(f"victim-{run_id}", operator, canaries)
        on_step(f"victim tenant {victim.tenant_id} seeded with {len(canaries)} canaries")
        attackers = []
        for letter in ("b", "c"):
            attackers.append(await self._tenant(f"fuzz-{letter}-{run_id}", operator, None))
            on_step(f"attacker tenant {attackers[-1].tenant_id} ready")
        listed = await self.embedding.ListModels(
            embedding_pb.ListModelsRequest(), metadata=bearer(attackers[0].admin)
        )
        return World(victim, attackers, canaries, [m.name for m in listed.models])

    async def token(self, api_key: str) -> str:
        # The longest lifetime: a long run must not outlive its tokens.
        request = tenant_pb.IssueTokenRequest(api_key=api_key, ttl_seconds=TOKEN_SECONDS)
        return (await self.tenants.IssueToken(request)).access_token

    async def _tenant(
        self, tenant_id: str, operator: str, canaries: list[str] | None
    ) -> TenantData:
        def mark(i: int) -> str:  # the victim's text carries a canary; an attacker's does not
            return canaries[i % len(canaries)] if canaries else "ordinary"

        created = await self.tenants.CreateTenant(
            tenant_pb.CreateTenantRequest(
                tenant_id=tenant_id,
                tenant=tenant_pb2.Tenant(
                    display_name=f"Hospital {mark(0)}",
                    plan=tenant_pb2.PLAN_ENTERPRISE,
                    limits=LIMITS,
                ),
                admin=tenant_pb2.Actor(display_name=f"Admin {mark(1)}"),
            ),
            metadata=bearer(operator),
        )
        admin = await self.token(created.admin_api_key.secret)
        parent = f"tenants/{tenant_id}"
        agent_key = ""
        for actor_id in ("agent", *([] if canaries else SPARE_ACTORS)):
            await self.tenants.CreateActor(
                tenant_pb.CreateActorRequest(
                    parent=parent,
                    actor_id=actor_id,
                    actor=tenant_pb2.Actor(display_name=f"Agent {mark(2)}", role="agent"),
                ),
                metadata=bearer(admin),
            )
            key = await self.tenants.CreateApiKey(
                tenant_pb.CreateApiKeyRequest(parent=f"{parent}/actors/{actor_id}"),
                metadata=bearer(admin),
            )
            agent_key = agent_key or key.api_key.secret
        data = TenantData(
            tenant_id, created.admin_api_key.secret, admin, await self.token(agent_key)
        )
        # The attackers' own admin and agent are the callers: their names stay out of the
        # pools, or a run would delete or narrow the very actors whose tokens fuzz. The
        # spare actors are there for an attacker's deletes to hit.
        data.names.append(parent)
        if canaries:
            data.names += [f"{parent}/actors/admin", f"{parent}/actors/agent"]
        else:
            data.names += [f"{parent}/actors/{a}" for a in SPARE_ACTORS]
            data.ids += list(SPARE_ACTORS)
        data.ids.append(tenant_id)
        await self._records(data, mark)
        await self._memories(data, mark)
        await self._knowledge(data, mark)
        cursor = await self.sync.GetSyncCursor(
            sync_pb.GetSyncCursorRequest(parent=parent), metadata=bearer(admin)
        )
        data.cursors.append(cursor.cursor)
        data.seed("/hacs.sync.v1.SyncService/Watch", sync_pb.WatchRequest(parent=parent))
        return data

    async def _records(self, data: TenantData, mark: Callable[[int], str]) -> None:
        parent = f"tenants/{data.tenant_id}"
        auth = bearer(data.admin)
        patients = []
        for i in range(2):
            record = record_pb2.Record()
            record.patient.name.add(family=f"Garcia {mark(i)}", given=["Maria"], use="official")
            record.patient.gender = "female"
            record.patient.birth_date = "1956-04-12"
            request = records_pb.CreateRecordRequest(parent=parent, record=record)
            created = await self.records.CreateRecord(request, metadata=auth)
            patients.append(created.record.name)
            data.seed("/hacs.records.v1.RecordService/CreateRecord", request)
            _learn(data, created.record)
        for i, name in enumerate(patients):
            record = record_pb2.Record()
            obs = record.observation
            obs.status = "final"
            obs.code.coding.add(system="http://loinc.org", code="4548-4", display="HbA1c")
            obs.code.text = f"Hemoglobin A1c {mark(i + 2)}"
            obs.subject.reference = name
            obs.subject.type = "Patient"
            obs.value_quantity.value = 6.5 + i
            obs.value_quantity.unit = "%"
            obs.value_quantity.system = "http://unitsofmeasure.org"
            obs.value_quantity.code = "%"
            obs.effective_date_time.seconds = 1_760_000_000
            request = records_pb.CreateRecordRequest(parent=parent, record=record)
            created = await self.records.CreateRecord(request, metadata=auth)
            data.seed("/hacs.records.v1.RecordService/CreateRecord", request)
            _learn(data, created.record)
        page = await self.records.ListRecords(
            records_pb.ListRecordsRequest(parent=parent, page_size=1), metadata=auth
        )
        data.page_tokens.append(page.next_page_token)
        readers: tuple[tuple[str, Message], ...] = (
            ("GetRecord", records_pb.GetRecordRequest(name=patients[0])),
            ("ListRecords", records_pb.ListRecordsRequest(parent=parent, patient=patients[0])),
            ("ListRecordHistory", records_pb.ListRecordHistoryRequest(name=patients[0])),
            ("ExportFhir", records_pb.ExportFhirRequest(name=parent, patient=patients[0])),
            ("ListChanges", records_pb.ListChangesRequest(parent=parent)),
        )
        for path, reader in readers:
            data.seed(f"/hacs.records.v1.RecordService/{path}", reader)

    async def _memories(self, data: TenantData, mark: Callable[[int], str]) -> None:
        parent = f"tenants/{data.tenant_id}"
        memories = []
        for i in range(2):
            record = record_pb2.Record()
            record.memory_block.memory_type = memory_block_pb2.MEMORY_TYPE_EPISODIC
            record.memory_block.content = f"Patient prefers morning visits {mark(i)}"
            record.memory_block.tags.append("preference")
            memories.append(record)
        request = memory_pb.RememberRequest(parent=parent, memories=memories)
        reply = await self.memory.Remember(request, metadata=bearer(data.agent))
        data.seed("/hacs.memory.v1.MemoryService/Remember", request)
        for memory in reply.memories:
            _learn(data, memory)
        for path, message in (
            ("Recall", memory_pb.RecallRequest(parent=parent, query="morning visits")),
            ("ListMemories", memory_pb.ListMemoriesRequest(parent=parent)),
            ("GetMemory", memory_pb.GetMemoryRequest(name=reply.memories[0].name)),
        ):
            data.seed(f"/hacs.memory.v1.MemoryService/{path}", message)

    async def _knowledge(self, data: TenantData, mark: Callable[[int], str]) -> None:
        parent = f"tenants/{data.tenant_id}"
        auth = bearer(data.admin)
        create = rag_pb.CreateKnowledgeBaseRequest(
            parent=parent,
            knowledge_base_id="guides",
            knowledge_base=knowledge_pb2.KnowledgeBase(display_name=f"Guides {mark(3)}"),
        )
        kb = (await self.rag.CreateKnowledgeBase(create, metadata=auth)).knowledge_base
        data.seed("/hacs.rag.v1.RagService/CreateKnowledgeBase", create)
        content = (
            f"# Hypertension {mark(0)}\n\nFirst-line treatment of hypertension is a thiazide "
            f"diuretic, an ACE inhibitor or a calcium channel blocker. {mark(1)}\n"
        ).encode()
        stream = [
            rag_pb.IngestDocumentsRequest(config=rag_pb.IngestConfig(knowledge_base=kb.name)),
            rag_pb.IngestDocumentsRequest(
                header=rag_pb.DocumentHeader(
                    document_id="htn",
                    total_bytes=len(content),
                    document=knowledge_pb2.Document(
                        title=f"Hypertension {mark(2)}", mime_type="text/markdown"
                    ),
                )
            ),
            rag_pb.IngestDocumentsRequest(data=rag_pb.DocumentData(content=content)),
            rag_pb.IngestDocumentsRequest(
                end=rag_pb.DocumentEnd(sha256=hashlib.sha256(content).hexdigest())
            ),
        ]
        async for _ in self.rag.IngestDocuments(iter(stream), metadata=auth):
            pass
        data.seed("/hacs.rag.v1.RagService/IngestDocuments", *stream)
        data.names += [kb.name, f"{kb.name}/documents/htn"]
        data.ids += ["guides", "htn"]
        for path, message in (
            ("Retrieve", rag_pb.RetrieveRequest(parent=parent, query="hypertension treatment")),
            ("ListDocuments", rag_pb.ListDocumentsRequest(parent=kb.name)),
            ("ListChunks", rag_pb.ListChunksRequest(parent=f"{kb.name}/documents/htn")),
            ("GetKnowledgeBase", rag_pb.GetKnowledgeBaseRequest(name=kb.name)),
        ):
            data.seed(f"/hacs.rag.v1.RagService/{path}", message)


def _learn(data: TenantData, record: Any) -> None:
    data.names.append(record.name)
    data.ids.append(record.name.rsplit("/", 1)[-1])
    if record.etag:
        data.etags.append(record.etag)


async def snapshot(builder: Builder, tenant: TenantData) -> dict[str, bytes]:
    """Everything the victim holds, as its own administrator reads it (with a new token)."""
    auth = bearer(await builder.token(tenant.admin_key))
    parent = f"tenants/{tenant.tenant_id}"
    out: dict[str, bytes] = {}
    out["tenant"] = (
        await builder.tenants.GetTenant(tenant_pb.GetTenantRequest(name=parent), metadata=auth)
    ).SerializeToString(deterministic=True)
    actors = await builder.tenants.ListActors(
        tenant_pb.ListActorsRequest(parent=parent, page_size=1000, show_deleted=True),
        metadata=auth,
    )
    out["actors"] = actors.SerializeToString(deterministic=True)
    for actor in actors.actors:
        keys = await builder.tenants.ListApiKeys(
            tenant_pb.ListApiKeysRequest(parent=actor.name, page_size=1000), metadata=auth
        )
        for key in keys.api_keys:
            key.ClearField("last_use_time")  # the snapshot's own token use moves it
        out[f"keys {actor.name}"] = keys.SerializeToString(deterministic=True)
    token = ""
    while True:
        page = await builder.records.ListRecords(
            records_pb.ListRecordsRequest(parent=parent, page_size=1000, page_token=token),
            metadata=auth,
        )
        out[f"records {token}"] = page.SerializeToString(deterministic=True)
        if not (token := page.next_page_token):
            break
    changes = await builder.records.ListChanges(
        records_pb.ListChangesRequest(parent=parent, page_size=1000), metadata=auth
    )
    out["changes"] = changes.SerializeToString(deterministic=True)
    kbs = await builder.rag.ListKnowledgeBases(
        rag_pb.ListKnowledgeBasesRequest(parent=parent, page_size=1000), metadata=auth
    )
    out["knowledge bases"] = kbs.SerializeToString(deterministic=True)
    for kb in kbs.knowledge_bases:
        docs = await builder.rag.ListDocuments(
            rag_pb.ListDocumentsRequest(parent=kb.name, page_size=1000), metadata=auth
        )
        out[f"documents {kb.name}"] = docs.SerializeToString(deterministic=True)
        for doc in docs.documents:
            chunks = await builder.rag.ListChunks(
                rag_pb.ListChunksRequest(parent=doc.name, page_size=1000), metadata=auth
            )
            out[f"chunks {doc.name}"] = chunks.SerializeToString(deterministic=True)
    return out
