"""MemoryService.Recall latency (p50/p95/p99) with 100,000 memories in the tenant.

Set-up (the real service in this process: gRPC, interceptors, SQLite,
Milvus Lite, the shipped model, on free loopback ports):

1. The labelled clinical memory sets of tests/data/memory (3,094 blocks,
   2 agents, 108 patients) are stored through MemoryService.Remember: the
   real path, every whole-memory and passage vector computed by the model.
2. Scale: embedding 100,000 memories (about 250,000 vectors with their
   passages) on two CPU cores takes hours, so the rest are copies: each
   stored memory is written again under a new id through
   RecordService.BatchCreateRecords, and its index rows (whole and passage
   vectors) are copied for it into Milvus, with the memory index's cursor
   moved past those writes — exactly the rows the index would have
   written, without recomputing identical vectors. Recall cost depends on
   the index and the records, not on how the vectors were computed; say so
   when quoting. Each agent then holds about half the memories.
3. Recall: sequential calls (one client), a mix of clinical questions, each
   within one agent's memories (about 50,000), half also filtered to one
   patient; first with record_access=false (ranking only), then with the
   default (each call also counts its results as accessed: one write
   transaction per call). Warm-up calls first (the in-process BM25 index is
   built from the database on a tenant's first recall).

    .venv/bin/python bench/memory_recall_latency.py
    .venv/bin/python bench/memory_recall_latency.py --memories 20000 --calls 100 --json /tmp/r.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hacs.memory.v1 import memory_service_pb2 as mpb
from hacs.memory.v1 import memory_service_pb2_grpc, recall_pb2
from hacs.records.v1 import record_pb2, record_service_pb2_grpc
from hacs.records.v1 import record_service_pb2 as rpb

from services.evals.memory import DEFAULT_DATASET, Block, load, load_blocks
from services.evals.platform import EvalPlatform, running_platform
from services.kernel.records.store import RecordStore
from services.kernel.retrieval.tables import IndexCursorRow
from services.kernel.retrieval.vector_index import IndexDoc, VectorIndex
from services.memory.blocks import memory_id, vector_id
from services.memory.index_rows import (
    PASSAGE,
    ROW_FIELDS,
    WHOLE,
    passage_pk,
    passage_row,
    vector_of,
    whole_row,
)

DATA = DEFAULT_DATASET.parent
SETS = ("consolidation_train.jsonl", "consolidation_dev.jsonl", "consolidation_test.jsonl")
TENANT = "memory-bench"
BATCH = 500
QUERIES = [
    "what dose of metformin is the patient on",
    "is the patient allergic to penicillin",
    "blood pressure reading",
    "which knee hurts, left or right",
    "hemoglobin a1c result",
    "when was the colonoscopy done",
    "year of the type 2 diabetes diagnosis",
    "how does the patient want to be contacted",
    "lisinopril twice daily",
    "sertraline for depression",
    "shoulder pain on the right side",
    "what happened in March 2024",
]


def base_blocks() -> list[Block]:
    blocks: list[Block] = []
    for name in SETS:
        blocks.extend(load(DATA / name))
    return blocks


async def stored_memories(bench: EvalPlatform) -> list[record_pb2.Record]:
    memory = memory_service_pb2_grpc.MemoryServiceStub(bench.channel)
    agents = [bench.actor("agent-1"), bench.actor("agent-2")]
    found: list[record_pb2.Record] = []
    token = ""
    while True:
        page = await memory.ListMemories(
            mpb.ListMemoriesRequest(
                parent=bench.tenant,
                filter=recall_pb2.MemoryFilter(agents=agents),
                page_size=1000,
                page_token=token,
            ),
            metadata=bench.token,
        )
        found.extend(page.memories)
        token = page.next_page_token
        if not token:
            return found


async def copy_memories(bench: EvalPlatform, base: list[record_pb2.Record], target: int) -> int:
    """Copies of the stored memories (new ids, same words) until the tenant holds `target`."""
    kernel = bench.server.kernel
    assert kernel is not None
    index = await kernel.vector_index()
    tenant_id = bench.tenant.split("/")[1]
    rows = await _live_rows(index, tenant_id, base)
    records = record_service_pb2_grpc.RecordServiceStub(bench.channel)
    copies = target - len(base)
    started, written = time.monotonic(), 0
    while written < copies:
        requests = []
        for i in range(written, min(written + BATCH, copies)):
            source = base[i % len(base)]
            record = record_pb2.Record()
            record.memory_block.CopyFrom(source.memory_block)
            record_id = f"{memory_id(source.name)}-c{i // len(base) + 1}"
            record.memory_block.vector_id = vector_id(tenant_id, record_id)
            requests.append(rpb.CreateRecordRequest(record_id=record_id, record=record))
        reply = await records.BatchCreateRecords(
            rpb.BatchCreateRecordsRequest(parent=bench.tenant, requests=requests),
            metadata=bench.token,
            timeout=600,
        )
        docs: dict[str, list[IndexDoc]] = {WHOLE: [], PASSAGE: []}
        for i, created in enumerate(reply.records, start=written):
            _rows_for(created, rows[base[i % len(base)].name], docs)
        await index.upsert(WHOLE, docs[WHOLE])
        await index.upsert(PASSAGE, docs[PASSAGE])
        written += len(reply.records)
        rate = written / max(time.monotonic() - started, 1e-6)
        print(f"\r  copies: {written:,}/{copies:,} ({rate:,.0f}/s)   ", end="", file=sys.stderr)
    print(file=sys.stderr)
    await index.flush(WHOLE)
    await index.flush(PASSAGE)
    await _cursor_to_head(kernel.platform.db, tenant_id)
    return copies


async def _live_rows(
    index: VectorIndex, tenant_id: str, base: list[record_pb2.Record]
) -> dict[str, tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Each stored memory's live whole row and passage rows."""
    found: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
    for start in range(0, len(base), 500):
        chunk = base[start : start + 500]
        pks = [vector_id(tenant_id, memory_id(r.name)) for r in chunk]
        wholes = await index.fetch(WHOLE, tenant_id, pks, ROW_FIELDS)
        part_keys = [
            passage_pk(pk, k)
            for pk, row in wholes.items()
            for k in range(int(row["extra"]["parts"]))
        ]
        parts = await index.fetch(PASSAGE, tenant_id, part_keys, ROW_FIELDS)
        for record, pk in zip(chunk, pks, strict=True):
            whole = wholes[pk]
            keys = [passage_pk(pk, k) for k in range(int(whole["extra"]["parts"]))]
            found[record.name] = (whole, [parts[k] for k in keys])
    return found


def _rows_for(
    created: record_pb2.Record,
    source: tuple[dict[str, Any], list[dict[str, Any]]],
    docs: dict[str, list[IndexDoc]],
) -> None:
    whole, parts = source
    pk = created.memory_block.vector_id
    since = int(created.create_time.ToMilliseconds())
    docs[WHOLE].append(whole_row(created, pk, vector_of(whole), since, len(parts)))
    docs[PASSAGE].extend(
        passage_row(created, pk, k, part["text"], vector_of(part), since)
        for k, part in enumerate(parts)
    )


async def _cursor_to_head(db: Any, tenant_id: str) -> None:
    """The copies' index rows are written: the memory index need not read their changes."""
    async with RecordStore(db).transaction(tenant_id) as tx:
        head = await tx.head_sequence()
    async with db.transaction(tenant_id) as session:
        row = await session.get(IndexCursorRow, (tenant_id, "memory"), with_for_update=True)
        assert row is not None, "the memory index has a cursor after Remember"
        row.last_sequence = head


async def measure(
    bench: EvalPlatform, patients: list[str], calls: int, *, record_access: bool
) -> dict[str, Any]:
    memory = memory_service_pb2_grpc.MemoryServiceStub(bench.channel)
    rng = random.Random(7)
    latencies: list[float] = []
    results = 0
    for call in range(calls):
        agent = bench.actor(f"agent-{call % 2 + 1}")
        scope = recall_pb2.MemoryFilter(agents=[agent])
        if call % 4 >= 2:
            scope.patients.append(rng.choice(patients))
        request = mpb.RecallRequest(
            parent=bench.tenant,
            query=QUERIES[call % len(QUERIES)],
            filter=scope,
            top_k=10,
            record_access=record_access,
        )
        started = time.perf_counter()
        reply = await memory.Recall(request, metadata=bench.token, timeout=60)
        latencies.append((time.perf_counter() - started) * 1000)
        results += len(reply.results)
    ordered = sorted(latencies)
    return {
        "record_access": record_access,
        "calls": calls,
        "p50_ms": round(statistics.median(ordered), 1),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 1),
        "p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))], 1),
        "mean_ms": round(statistics.fmean(ordered), 1),
        "mean_results": round(results / calls, 2),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    blocks = base_blocks()
    with tempfile.TemporaryDirectory(prefix="hacs-bench-") as data_dir:
        async with running_platform(
            Path(data_dir),
            tenant_id=TENANT,
            display_name="Memory benchmark",
            services="tenant,records,embedding,search,memory",
            indexer=False,
        ) as bench:
            started = time.monotonic()
            await load_blocks(bench, blocks, sys.stderr)  # type: ignore[arg-type]
            remembered_s = time.monotonic() - started
            base = await stored_memories(bench)
            copies = await copy_memories(bench, base, args.memories)
            patients = sorted({r.memory_block.patient for r in base})
            warm = await measure(bench, patients, args.warmup, record_access=False)
            phases = [
                await measure(bench, patients, args.calls, record_access=False),
                await measure(bench, patients, args.calls, record_access=True),
            ]
    return {
        "parameters": {
            "memories": len(base) + copies,
            "remembered_through_the_service": len(base),
            "remember_seconds": round(remembered_s, 1),
            "copied": copies,
            "agents": 2,
            "patients": len(patients),
            "scope": "one agent's memories (about half), every other pair of calls one patient",
            "top_k": 10,
            "clients": 1,
            "warmup_calls": args.warmup,
            "warmup_p50_ms": warm["p50_ms"],
            "backend": "SQLite + Milvus Lite + all-MiniLM-L6-v2 on CPU, in-process gRPC",
            "cpu_count": os.cpu_count(),
            "load_average_at_end": os.getloadavg(),
            "python": platform.python_version(),
        },
        "results": phases,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--memories", type=int, default=100_000)
    parser.add_argument("--calls", type=int, default=200, help="measured calls per phase")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--json", type=Path, default=None, help="write figures and parameters")
    args = parser.parse_args()
    figures = asyncio.run(run(args))
    print(f"parameters: {json.dumps(figures['parameters'])}")
    for row in figures["results"]:
        print(
            f"Recall at {figures['parameters']['memories']:,} memories "
            f"(record_access={str(row['record_access']).lower()}): p50 {row['p50_ms']} ms, "
            f"p95 {row['p95_ms']} ms, p99 {row['p99_ms']} ms over {row['calls']} calls"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
