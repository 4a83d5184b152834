"""Memory per service pod: each mesh process's resident size idle, warm and at its peak under load.

1. The mesh on loopback (bench/support/mesh.py), wired as charts/hacs wires the
   pods: PostgreSQL, Redis, a Milvus server (2.3.5, tests/support/milvus.py), a
   migration run, then one `hacs serve --only X` process per service (tenant,
   records, embedding, search, rag, memory, sync) and the dedicated indexer
   (`--only search` with HACS_INDEXER_ENABLED=true; the search process has it
   false). search, rag, memory and the indexer embed through the embedding
   process with the services' API key. The lexical engine is SQLite (the chart's
   `milvus` engine needs Milvus 2.5+).
2. idle: `--settle` seconds after every process is ready.
3. warm: after calls that make each service load what it loads lazily: a
   tenant, its administrator and an agent (tenant); `--patients` Patients and
   as many Observations (records), indexed by the indexer through the embedding
   process (the model starts); Search; a knowledge base with the tests/data/rag
   guidelines ingested (text, Markdown, HTML, PDF) and Retrieve; Remember and
   Recall; Watch streams (two stay open to the end); Embed.
4. peak: `--clients` concurrent clients for `--seconds` mixing those calls
   (record writes and reads, Search, Retrieve, an ingest now and then,
   Remember, Recall, short Watch replays, IssueToken, Embed) straight to each
   process, the two Watch streams receiving every change; every process tree is
   sampled every 0.2 s and the highest resident size kept.

A process's figure is its resident size (VmRSS) with its child processes' (the
embedding model's own process): what its pod's memory limit has to hold, less the
page cache (bench/support/process_tree.py). The CPU figure is the tree's average
cores used during the load. Prints a table (with whether the chart's memory limit
holds the peak with 25 % headroom) and every parameter; --json FILE writes them.

    nice -n 5 .venv/bin/python bench/service_memory.py --json /tmp/service-memory.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform as host
import random
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc
from hacs.embedding.v1 import embedding_service_pb2 as epb
from hacs.embedding.v1 import embedding_service_pb2_grpc
from hacs.memory.v1 import memory_service_pb2 as mpb
from hacs.memory.v1 import memory_service_pb2_grpc
from hacs.rag.v1 import knowledge_pb2, patient_context_pb2, rag_service_pb2_grpc
from hacs.rag.v1 import rag_service_pb2 as rpb
from hacs.records.v1 import memory_block_pb2, record_pb2, record_service_pb2_grpc
from hacs.records.v1 import record_service_pb2 as recpb
from hacs.search.v1 import search_service_pb2 as spb
from hacs.search.v1 import search_service_pb2_grpc
from hacs.sync.v1 import sync_service_pb2 as sync_pb
from hacs.sync.v1 import sync_service_pb2_grpc
from hacs.tenant.v1 import tenant_pb2, tenant_service_pb2_grpc
from hacs.tenant.v1 import tenant_service_pb2 as tpb

from bench.support import dataset
from bench.support.measure import machine_busy_percent
from bench.support.mesh import CHART_RESOURCES, COMPONENTS, Mesh, running_mesh
from bench.support.process_tree import PeakSampler, cpu_seconds, memory
from tests.data.rag.corpus import CORPUS, document_requests
from tests.support import clinical

TENANT = "bench"
PARENT = f"tenants/{TENANT}"
KB = f"{PARENT}/knowledgeBases/guidelines"
AGENT = "agent-1"
TOKEN_TTL_SECONDS = 3600
CALL_TIMEOUT = 120.0
HEADROOM = 1.25  # the peak times this must fit under the limit

SEARCHES = (
    ("hemoglobin a1c above target", False),
    ("elderly patients with diabetes", True),
    ("high blood pressure readings", False),
    ("women over 60 with elevated glucose", True),
    ("body mass index obesity", False),
    ("cholesterol results in 2020", True),
)
QUESTIONS = (
    "Should metformin be stopped in a woman with type 2 diabetes and an eGFR of 24?",
    "Which anticoagulant prevents stroke in an 81-year-old man with atrial fibrillation, and "
    "when is the apixaban dose reduced?",
    "What blood pressure target suits an adult with hypertension and diabetes on an ACE "
    "inhibitor, and which drug class comes next?",
    "A child with asthma wakes at night despite a low-dose inhaled corticosteroid: next step?",
)
MEMORIES = (
    "The patient prefers morning appointments and phone reminders.",
    "Reported dizziness on standing after the new antihypertensive dose.",
    "Allergic to penicillin: a rash after amoxicillin in 2019.",
    "Takes metformin 1000 mg twice daily; HbA1c 7.9 % in March.",
    "Daughter is the main caregiver and should be called first.",
    "Right knee pain when climbing stairs, worse in the cold.",
)
RECALLS = (
    "what dose of metformin is the patient on",
    "is the patient allergic to penicillin",
    "who should be contacted",
    "which knee hurts",
)
# The load's mix: call -> weight.
MIX = {
    "records.create": 2.0,
    "records.read": 2.0,
    "search.search": 3.0,
    "rag.retrieve": 2.0,
    "rag.ingest": 0.3,
    "memory.remember": 1.0,
    "memory.recall": 2.0,
    "sync.watch_replay": 0.5,
    "tenant.issue_token": 0.5,
    "embedding.embed": 0.5,
}


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


class Clients:
    """One channel per process, the stubs, the tokens: every call goes straight to its service."""

    def __init__(self, mesh: Mesh) -> None:
        self.channels = {name: grpc.aio.insecure_channel(mesh.address(name)) for name in COMPONENTS}
        self.tenant = tenant_service_pb2_grpc.TenantServiceStub(self.channels["tenant"])
        self.records = record_service_pb2_grpc.RecordServiceStub(self.channels["records"])
        self.embedding = embedding_service_pb2_grpc.EmbeddingServiceStub(self.channels["embedding"])
        self.search = search_service_pb2_grpc.SearchServiceStub(self.channels["search"])
        self.rag = rag_service_pb2_grpc.RagServiceStub(self.channels["rag"])
        self.memory = memory_service_pb2_grpc.MemoryServiceStub(self.channels["memory"])
        self.sync = sync_service_pb2_grpc.SyncServiceStub(self.channels["sync"])
        self.operator_key = mesh.operator_key
        self.admin_key = self.agent_key = ""
        self.admin: tuple[tuple[str, str]] = bearer("")
        self.agent: tuple[tuple[str, str]] = bearer("")

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close()

    async def token(self, key: str) -> str:
        reply = await self.tenant.IssueToken(
            tpb.IssueTokenRequest(api_key=key, ttl_seconds=TOKEN_TTL_SECONDS), timeout=60
        )
        return reply.access_token


# -- warm-up -----------------------------------------------------------------------------


async def create_tenant(c: Clients) -> None:
    """The tenant (limits raised: a quota is not what is measured), its admin and an agent."""
    operator = bearer(await c.token(c.operator_key))
    created = await c.tenant.CreateTenant(
        tpb.CreateTenantRequest(
            tenant_id=TENANT,
            tenant=tenant_pb2.Tenant(
                display_name="Memory benchmark",
                plan=tenant_pb2.PLAN_ENTERPRISE,
                limits=tenant_pb2.TenantLimits(
                    max_users=1_000, max_patients=10_000_000, calls_per_minute=100_000_000
                ),
            ),
            admin=tenant_pb2.Actor(display_name="Bench Admin"),
        ),
        metadata=operator,
        timeout=60,
    )
    await c.tenant.ListTenants(tpb.ListTenantsRequest(), metadata=operator, timeout=60)
    c.admin_key = created.admin_api_key.secret
    c.admin = bearer(await c.token(c.admin_key))
    await c.tenant.CreateActor(
        tpb.CreateActorRequest(
            parent=PARENT,
            actor_id=AGENT,
            actor=tenant_pb2.Actor(display_name="Bench Agent", role="agent"),
        ),
        metadata=c.admin,
        timeout=60,
    )
    key = await c.tenant.CreateApiKey(
        tpb.CreateApiKeyRequest(parent=f"{PARENT}/actors/{AGENT}"), metadata=c.admin, timeout=60
    )
    c.agent_key = key.api_key.secret
    c.agent = bearer(await c.token(c.agent_key))


async def write_records(c: Clients, patients: int, seed: int) -> int:
    written = 0
    batches = [
        *dataset.patient_batches(TENANT, patients, 100, seed),
        *dataset.observation_batches(TENANT, patients, 1, 100, seed),
    ]
    for batch in batches:
        reply = await c.records.BatchCreateRecords(batch, metadata=c.admin, timeout=CALL_TIMEOUT)
        written += len(reply.records)
    return written


async def wait_indexed(c: Clients, seconds: float) -> dict[str, int]:
    """Until the indexer has caught up with the change log (it embeds every record)."""
    deadline = time.monotonic() + seconds
    while True:
        status = await c.search.GetIndexStatus(
            spb.GetIndexStatusRequest(parent=PARENT), metadata=c.admin, timeout=60
        )
        if status.indexed_sequence >= status.head_sequence or time.monotonic() > deadline:
            return {
                "indexed_sequence": status.indexed_sequence,
                "head_sequence": status.head_sequence,
                "record_count": status.record_count,
            }
        await asyncio.sleep(1)


async def _ingest(c: Clients, parts: list[Any]) -> int:
    async def requests() -> AsyncIterator[rpb.IngestDocumentsRequest]:
        yield rpb.IngestDocumentsRequest(config=rpb.IngestConfig(knowledge_base=KB))
        for part in parts:
            for request in part:
                yield request

    chunks = 0
    call = c.rag.IngestDocuments(requests(), metadata=c.admin, timeout=CALL_TIMEOUT)
    async for response in call:
        if response.HasField("summary"):
            chunks += response.summary.chunks_added
    return chunks


def note_document(n: int) -> Any:
    """A small plain-text guideline note, ingested during the load."""
    text = (
        f"Clinic note {n}. " + " ".join(QUESTIONS) + " Review renal function before "
        "prescribing, check blood pressure at every visit and record the HbA1c every three "
        "months until the target is reached."
    ).encode()
    yield rpb.IngestDocumentsRequest(
        header=rpb.DocumentHeader(
            document_id=f"note-{n}",
            total_bytes=len(text),
            document=knowledge_pb2.Document(
                title=f"Clinic note {n}", mime_type="text/plain", tags=["notes"]
            ),
        )
    )
    yield rpb.IngestDocumentsRequest(data=rpb.DocumentData(content=text))
    yield rpb.IngestDocumentsRequest(end=rpb.DocumentEnd())


def retrieve_request(rng: random.Random) -> rpb.RetrieveRequest:
    request = rpb.RetrieveRequest(
        parent=PARENT,
        knowledge_bases=[KB],
        query=rng.choice(QUESTIONS),
        top_k=10,
        min_relevance=0.3,
    )
    if rng.random() < 0.5:
        request.patient_context.CopyFrom(
            patient_context_pb2.PatientContext(
                age=74,
                sex="female",
                conditions=[clinical.concept(clinical.SNOMED, "44054006", "Diabetes type 2")],
                notes="eGFR 24 last month",
            )
        )
    return request


def remember_request(rng: random.Random, patients: int) -> mpb.RememberRequest:
    memory_record = record_pb2.Record()
    memory_record.memory_block.memory_type = memory_block_pb2.MEMORY_TYPE_EPISODIC
    memory_record.memory_block.content = rng.choice(MEMORIES)
    patient = f"{PARENT}/patients/{dataset.patient_id(rng.randrange(patients))}"
    return mpb.RememberRequest(parent=PARENT, memories=[memory_record], patient=patient)


async def watch_until_caught_up(c: Clients, cursor: str) -> int:
    """A Watch that replays from `cursor`, then is closed once caught up; returns its changes."""
    call = c.sync.Watch(
        sync_pb.WatchRequest(parent=PARENT, resume_cursor=cursor),
        metadata=c.admin,
        timeout=CALL_TIMEOUT,
    )
    changes = 0
    try:
        async for response in call:
            if response.HasField("change"):
                changes += 1
            elif response.HasField("caught_up"):
                break
    finally:
        call.cancel()
    return changes


async def keep_watching(c: Clients, cursor: str, received: Counter[str], key: str) -> None:
    """A Watch stream open until cancelled, counting what it receives."""
    call = c.sync.Watch(sync_pb.WatchRequest(parent=PARENT, resume_cursor=cursor), metadata=c.admin)
    try:
        async for response in call:
            received[key] += response.HasField("change")
    except grpc.aio.AioRpcError as error:
        if error.code() != grpc.StatusCode.CANCELLED:
            received[f"{key}.error.{error.code().name}"] += 1
    finally:
        call.cancel()


async def warm_up(c: Clients, args: argparse.Namespace, watched: Counter[str]) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    started = time.monotonic()
    await create_tenant(c)
    cursor = (
        await c.sync.GetSyncCursor(
            sync_pb.GetSyncCursorRequest(parent=PARENT), metadata=c.admin, timeout=60
        )
    ).cursor
    streams = [
        asyncio.create_task(keep_watching(c, cursor, watched, f"stream-{i}")) for i in range(2)
    ]
    writing = time.monotonic()
    figures["records_written"] = await write_records(c, args.patients, args.seed)
    first = f"{PARENT}/patients/{dataset.patient_id(0)}"
    await c.records.GetRecord(recpb.GetRecordRequest(name=first), metadata=c.admin, timeout=60)
    await c.records.ListRecords(
        recpb.ListRecordsRequest(parent=PARENT, page_size=50), metadata=c.admin, timeout=60
    )
    figures["index"] = await wait_indexed(c, args.index_timeout)
    figures["index"]["seconds_from_first_write"] = round(time.monotonic() - writing, 1)
    for query, parse in SEARCHES:
        await c.search.Search(
            spb.SearchRequest(parent=PARENT, query=query, parse_query=parse, top_k=10),
            metadata=c.admin,
            timeout=CALL_TIMEOUT,
        )
    await c.rag.CreateKnowledgeBase(
        rpb.CreateKnowledgeBaseRequest(
            parent=PARENT,
            knowledge_base_id="guidelines",
            knowledge_base=knowledge_pb2.KnowledgeBase(display_name="Guidelines"),
        ),
        metadata=c.admin,
        timeout=60,
    )
    figures["knowledge_chunks"] = await _ingest(c, [document_requests(doc) for doc in CORPUS])
    rng = random.Random(args.seed)
    for _ in range(4):
        await c.rag.Retrieve(retrieve_request(rng), metadata=c.admin, timeout=CALL_TIMEOUT)
    for _ in range(10):
        await c.memory.Remember(
            remember_request(rng, args.patients), metadata=c.agent, timeout=CALL_TIMEOUT
        )
    for query in RECALLS:
        await c.memory.Recall(
            mpb.RecallRequest(parent=PARENT, query=query, top_k=10),
            metadata=c.agent,
            timeout=CALL_TIMEOUT,
        )
    figures["watch_replayed_changes"] = await watch_until_caught_up(c, cursor)
    await c.embedding.ListModels(epb.ListModelsRequest(), metadata=c.admin, timeout=60)
    await c.embedding.Embed(
        epb.EmbedRequest(texts=list(MEMORIES)), metadata=c.admin, timeout=CALL_TIMEOUT
    )
    figures["seconds"] = round(time.monotonic() - started, 1)
    figures["_streams"] = streams
    figures["_cursor"] = cursor
    return figures


# -- the load ----------------------------------------------------------------------------


async def load(
    c: Clients, args: argparse.Namespace, cursor: str
) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    calls: Counter[str] = Counter()
    errors: dict[str, Counter[str]] = {}
    notes = iter(range(10**9))
    names = list(MIX)
    weights = [MIX[n] for n in names]

    def operations(rng: random.Random) -> dict[str, Callable[[], Awaitable[object]]]:
        def patient() -> str:
            return f"{PARENT}/patients/{dataset.patient_id(rng.randrange(args.patients))}"

        async def records_read() -> object:
            if rng.random() < 0.5:
                return await c.records.GetRecord(
                    recpb.GetRecordRequest(name=patient()), metadata=c.admin, timeout=CALL_TIMEOUT
                )
            return await c.records.ListRecords(
                recpb.ListRecordsRequest(parent=PARENT, patient=patient(), page_size=50),
                metadata=c.admin,
                timeout=CALL_TIMEOUT,
            )

        async def search() -> object:
            query, parse = rng.choice(SEARCHES)
            return await c.search.Search(
                spb.SearchRequest(parent=PARENT, query=query, parse_query=parse, top_k=10),
                metadata=c.admin,
                timeout=CALL_TIMEOUT,
            )

        return {
            "records.create": lambda: c.records.CreateRecord(
                recpb.CreateRecordRequest(
                    parent=PARENT, record=clinical.hba1c(patient(), round(rng.uniform(5, 11), 1))
                ),
                metadata=c.admin,
                timeout=CALL_TIMEOUT,
            ),
            "records.read": records_read,
            "search.search": search,
            "rag.retrieve": lambda: c.rag.Retrieve(
                retrieve_request(rng), metadata=c.admin, timeout=CALL_TIMEOUT
            ),
            "rag.ingest": lambda: _ingest(c, [note_document(next(notes))]),
            "memory.remember": lambda: c.memory.Remember(
                remember_request(rng, args.patients), metadata=c.agent, timeout=CALL_TIMEOUT
            ),
            "memory.recall": lambda: c.memory.Recall(
                mpb.RecallRequest(parent=PARENT, query=rng.choice(RECALLS), top_k=10),
                metadata=c.agent,
                timeout=CALL_TIMEOUT,
            ),
            "sync.watch_replay": lambda: watch_until_caught_up(c, cursor),
            "tenant.issue_token": lambda: c.token(c.agent_key),
            "embedding.embed": lambda: c.embedding.Embed(
                epb.EmbedRequest(texts=[rng.choice(MEMORIES), rng.choice(QUESTIONS)]),
                metadata=c.admin,
                timeout=CALL_TIMEOUT,
            ),
        }

    async def client(number: int, until: float) -> None:
        rng = random.Random(args.seed * 1000 + number)
        ops = operations(rng)
        while time.monotonic() < until:
            name = rng.choices(names, weights)[0]
            try:
                await ops[name]()
            except grpc.aio.AioRpcError as error:
                errors.setdefault(name, Counter())[error.code().name] += 1
                continue
            calls[name] += 1

    until = time.monotonic() + args.seconds
    await asyncio.gather(*(client(i, until) for i in range(args.clients)))
    return dict(sorted(calls.items())), {k: dict(v) for k, v in sorted(errors.items())}


# -- the run -----------------------------------------------------------------------------


def snapshot(mesh: Mesh) -> dict[str, dict[str, float]]:
    return {name: vars(memory(pid)) for name, pid in mesh.pids().items()}


def cpu(mesh: Mesh) -> dict[str, float]:
    return {name: cpu_seconds(pid) for name, pid in mesh.pids().items()}


def cores(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, float]:
    return {name: round((after[name] - before[name]) / seconds, 2) for name in after}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    busy_before = machine_busy_percent()
    if busy_before > 25:
        print(
            f"WARNING: the machine was {busy_before} % busy before the benchmark started; "
            "memory figures hold, CPU figures are shares of a contended machine",
            file=sys.stderr,
        )
    started = time.monotonic()
    print("starting the mesh (PostgreSQL, Redis, Milvus, 8 processes)...", file=sys.stderr)
    async with running_mesh() as mesh:
        print(f"  up in {time.monotonic() - started:.0f} s; settling", file=sys.stderr)
        cpu0, t0 = cpu(mesh), time.monotonic()
        await asyncio.sleep(args.settle)
        idle_cpu = cores(cpu0, cpu(mesh), time.monotonic() - t0)
        idle = snapshot(mesh)
        clients = Clients(mesh)
        watched: Counter[str] = Counter()
        streams: list[asyncio.Task[None]] = []
        try:
            print("warm-up...", file=sys.stderr)
            warm_figures = await warm_up(clients, args, watched)
            streams = warm_figures.pop("_streams")
            cursor = warm_figures.pop("_cursor")
            await asyncio.sleep(args.settle / 2)
            warm = snapshot(mesh)
            print(f"load: {args.clients} clients for {args.seconds:.0f} s...", file=sys.stderr)
            cpu1, t1 = cpu(mesh), time.monotonic()
            with PeakSampler(mesh.pids()) as sampler:
                calls, errors = await load(clients, args, cursor)
            load_seconds = time.monotonic() - t1
            load_cpu = cores(cpu1, cpu(mesh), load_seconds)
            after = snapshot(mesh)
            await asyncio.sleep(1)  # the streams receive the last changes
        finally:
            for stream in streams:
                stream.cancel()
            await asyncio.gather(*streams, return_exceptions=True)
            await clients.close()
        parameters = mesh.parameters()
    services = {}
    for name in COMPONENTS:
        chart = CHART_RESOURCES[name]
        peak = max(sampler.peak_mib[name], warm[name]["rss_mib"], after[name]["rss_mib"])
        services[name] = {
            "idle_mib": idle[name]["rss_mib"],
            "warm_mib": warm[name]["rss_mib"],
            "peak_mib": peak,
            "after_load_mib": after[name]["rss_mib"],
            "anon_mib": {
                "idle": idle[name]["anon_mib"],
                "warm": warm[name]["anon_mib"],
                "after_load": after[name]["anon_mib"],
            },
            "hwm_sum_mib": after[name]["hwm_mib"],
            "processes": after[name]["processes"],
            "idle_cpu_cores": idle_cpu[name],
            "load_cpu_cores": load_cpu[name],
            "chart": chart,
            "limit_holds_with_headroom": peak * HEADROOM <= chart["limit_mib"],
            "limit_headroom_percent": round(100 * (chart["limit_mib"] / peak - 1), 0),
        }
    return {
        "figure": "resident memory (MiB) per service process tree, idle / warm / peak under load",
        "services": services,
        "warm_up": warm_figures,
        "load": {
            "clients": args.clients,
            "seconds": round(load_seconds, 1),
            "mix_weights": MIX,
            "calls": calls,
            "errors": errors,
            "watch_stream_changes": dict(watched),
            "peak_samples": sampler.samples,
        },
        "parameters": {
            "patients": args.patients,
            "settle_seconds": args.settle,
            "seed": args.seed,
            "headroom": HEADROOM,
            "machine_cores": os.cpu_count(),
            "machine_busy_before_start_percent": busy_before,
            "python_version": host.python_version(),
            "wall_seconds": round(time.monotonic() - started, 1),
            **parameters,
        },
    }


def report(result: dict[str, Any]) -> None:
    p, lo = result["parameters"], result["load"]
    print("\nMemory per service process tree (VmRSS with child processes, MiB)")
    print(f"  stores: {'; '.join(f'{k}: {v}' for k, v in p['stores'].items())}")
    index = result["warm_up"]["index"]
    print(
        f"  warm-up: {result['warm_up']['records_written']} records written, the indexer at "
        f"{index['indexed_sequence']}/{index['head_sequence']} after "
        f"{index['seconds_from_first_write']} s, "
        f"{result['warm_up']['knowledge_chunks']} knowledge chunks; load: {lo['clients']} "
        f"clients for {lo['seconds']} s, {sum(lo['calls'].values())} calls, "
        f"{sum(sum(e.values()) for e in lo['errors'].values())} errors"
    )
    print(f"  machine {p['machine_busy_before_start_percent']} % busy before the start")
    if index["indexed_sequence"] < index["head_sequence"]:
        print("  WARNING: the indexer had not caught up when the load began (--index-timeout)")
    print()
    header = (
        f"{'service':<10} {'idle':>6} {'warm':>6} {'peak':>6}   {'request':>7} {'limit':>6} "
        f"{'limit >= 1.25 peak':>18}   {'CPU idle':>8} {'CPU load':>8}"
    )
    print(header)
    print("-" * len(header))
    for name, s in result["services"].items():
        chart = s["chart"]
        holds = "yes" if s["limit_holds_with_headroom"] else "NO"
        print(
            f"{name:<10} {s['idle_mib']:>6.0f} {s['warm_mib']:>6.0f} {s['peak_mib']:>6.0f}   "
            f"{chart['request_mib']:>5}Mi {chart['limit_mib']:>4}Mi "
            f"{holds + ' (' + format(chart['limit_mib'] / s['peak_mib'], '.1f') + 'x)':>18}   "
            f"{s['idle_cpu_cores']:>8.2f} {s['load_cpu_cores']:>8.2f}"
        )
    print("\nCPU: cores used on average (idle window, load window); calls in the load:")
    print("  " + ", ".join(f"{k} {v}" for k, v in lo["calls"].items()))
    if lo["errors"]:
        print(f"  errors: {lo['errors']}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patients", type=int, default=300, help="Patients (+1 Observation)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the load")
    parser.add_argument("--settle", type=float, default=10.0, help="idle wait after start")
    parser.add_argument("--index-timeout", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, help="write the figures and parameters here")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
