"""SearchService: indexing throughput, and Search latency through Envoy at 100k and 1M documents.

1. Indexing (the real path): Patients and their Observations are written
   through Envoy with BatchCreateRecords; the live indexer tails the change
   log, renders, embeds (all-MiniLM-L6-v2 on this machine's CPU) and writes
   Milvus Lite + the SQLite lexical store. Throughput = documents / time from
   the first write until the index caught up.
2. Scale: embedding a million documents on two CPU cores takes hours, so the
   larger indexes are built from the documents of step 1: every indexed
   document (its text and its real model vector) is copied under new ids and
   a new patient until the index holds the target count (the service is
   stopped meanwhile; Milvus Lite is single-process). Search cost depends on
   the index size, not on how the vectors were computed; say so when quoting.
3. Latency: 50 concurrent clients send hybrid Search requests (a mix of
   plain, parsed and filtered clinical queries, query embedding included)
   through Envoy for a fixed time, at each size, once the machine has settled
   (a Milvus server builds its indexes in the background), then one client
   alone (the latency of a call that waits for no other). Prints p50/p95/p99,
   calls/s, the service's memory, and every parameter; --json writes them.

    .venv/bin/python bench/search_latency.py                       # 100k and 1M
    .venv/bin/python bench/search_latency.py --sizes 20000 --index-patients 2000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from hacs.client import HacsClient
from hacs.search.v1 import query_pb2
from hacs.search.v1 import search_service_pb2 as spb
from hacs.tenant.v1 import tenant_pb2
from hacs.tenant.v1 import tenant_service_pb2 as tpb

from bench.support import dataset
from bench.support.all_in_one import AllInOne
from bench.support.measure import memory_of, run_clients, wait_until_quiet
from services.kernel.retrieval.lexical_store import SqliteLexical
from services.kernel.retrieval.vector_index import RECORDS as RECORDS_INDEX
from services.kernel.retrieval.vector_index import IndexDoc, VectorIndex
from tests.support.milvus import MilvusServer

QUERIES = [
    ("hemoglobin a1c above target", False, None),
    ("elderly patients with diabetes", True, None),
    ("high blood pressure readings", False, None),
    ("women over 60 with elevated glucose", True, None),
    ("body mass index obesity", False, None),
    ("cholesterol results in 2020", True, None),
    ("HbA1c", False, query_pb2.SearchFilter(codes=["http://loinc.org|4548-4"])),
    ("recent glucose", False, query_pb2.SearchFilter(min_age=65)),
]


async def create_tenant(edge: str, data_dir: Path) -> str:
    key = (data_dir / "operator.key").read_text().strip()
    async with HacsClient(edge, api_key=key) as operator:
        for _ in range(60):  # Envoy fetches the JWKS in the background at start
            try:
                reply = await operator.tenant.CreateTenant(
                    tpb.CreateTenantRequest(
                        tenant_id="bench",
                        tenant=tenant_pb2.Tenant(
                            display_name="Search benchmark",
                            plan=tenant_pb2.PLAN_ENTERPRISE,
                            limits=tenant_pb2.TenantLimits(
                                max_patients=10_000_000, calls_per_minute=100_000_000
                            ),
                        ),
                        admin=tenant_pb2.Actor(display_name="Bench"),
                    )
                )
                return reply.admin_api_key.secret
            except Exception:
                await asyncio.sleep(0.5)
    raise RuntimeError("could not create the benchmark tenant")


async def index_real(client: HacsClient, patients: int, seed: int) -> dict[str, Any]:
    started = time.perf_counter()
    written = 0
    for batch in dataset.patient_batches("bench", patients, 500, seed):
        written += len((await client.records.BatchCreateRecords(batch, timeout=300)).records)
    for batch in dataset.observation_batches("bench", patients, 1, 500, seed):
        written += len((await client.records.BatchCreateRecords(batch, timeout=300)).records)
    writes_done = time.perf_counter() - started
    while True:
        status = await client.search.GetIndexStatus(
            spb.GetIndexStatusRequest(parent="tenants/bench")
        )
        print(
            f"\r  indexed {status.indexed_sequence:,}/{status.head_sequence:,}",
            end="",
            file=sys.stderr,
        )
        if status.indexed_sequence >= status.head_sequence:
            break
        await asyncio.sleep(1)
    elapsed = time.perf_counter() - started
    print(file=sys.stderr)
    return {
        "documents": written,
        "seconds_writes": round(writes_done, 1),
        "seconds_until_indexed": round(elapsed, 1),
        "documents_per_second": round(written / elapsed, 1),
    }


async def grow_index(data_dir: Path, target: int, milvus_uri: str) -> int:
    """Copy the indexed documents (text + model vector) under new ids until `target` exist."""
    index = VectorIndex(milvus_uri or str(data_dir / "milvus.db"), 384)
    await index.connect()
    lexical = SqliteLexical(data_dir / "lexical.db")
    name = await index.ensure(RECORDS_INDEX)
    fields = [
        "pk",
        "name",
        "kind",
        "title",
        "text",
        "dense",
        "patient_id",
        "clinical_time",
        "gender",
        "birth_ymd",
        "codes",
        "labels",
        "version",
        "grp",
        "extra",
    ]
    rows = await asyncio.to_thread(
        index.client.query,
        name,
        # The documents indexed for real (copies carry a negative version; Milvus Lite's
        # expressions have no `not`, so a copy cannot be excluded by its pk).
        filter='tenant_id == "bench" and version > 0',
        output_fields=fields,
        limit=16_384,
    )
    total = await index.count(RECORDS_INDEX, "bench")
    # Copies already made by an earlier, smaller size are numbered 1..n: go on from there
    # (starting again at 1 would overwrite them and leave fewer distinct documents).
    copy = -(-(total - len(rows)) // len(rows)) if rows else 0
    while total < target:
        copy += 1
        batch = []
        for row in rows:
            if total + len(batch) >= target:
                break
            pid = f"{row['patient_id']}~{copy}" if row["patient_id"] else ""
            batch.append(
                IndexDoc(
                    pk=f"{row['pk']}~{copy}",
                    tenant_id="bench",
                    name=f"{row['name']}~{copy}",
                    kind=row["kind"],
                    text=row["text"],
                    vector=np.asarray(row["dense"], dtype=np.float32),
                    title=row["title"],
                    patient_id=pid,
                    clinical_time=row["clinical_time"],
                    gender=row["gender"],
                    birth_ymd=row["birth_ymd"],
                    codes=list(row["codes"]),
                    labels=dict(row["labels"] or {}),
                    version=-copy,  # marks a copy (see the query above); search ignores it
                )
            )
        for start in range(0, len(batch), 2000):
            part = batch[start : start + 2000]
            await index.upsert(RECORDS_INDEX, part)
            await lexical.upsert(RECORDS_INDEX, part)
        total += len(batch)
        print(f"\r  index grown to {total:,}/{target:,}", end="", file=sys.stderr)
    print(file=sys.stderr)
    await index.flush(RECORDS_INDEX)
    await built(index, name)
    lexical.close()
    await index.close()
    return total


async def built(index: VectorIndex, name: str) -> None:
    """Compact the collection, then wait until a Milvus server has indexed every row.

    The copies arrive as many small segments, which a server merges in the background
    when it gets round to it: measuring before that would time a search over dozens of
    segments, or a compaction running beside it, depending on the minute. Segments it
    has not indexed yet (dense or filter fields) are searched by brute force: that would
    time the build."""
    if index.is_lite:
        return
    job = await index.call(index.client.compact, name)
    while (state := await index.call(index.client.get_compaction_state, job)) != "Completed":
        print(f"\r  compacting the collection ({state})", end="", file=sys.stderr)
        await asyncio.sleep(2)
    print(file=sys.stderr)
    # Every index: the dense one, and on a server the filter fields' (INDEXED_FILTER_FIELDS).
    names = await index.call(index.client.list_indexes, name)
    while True:
        states = [await index.call(index.client.describe_index, name, n) for n in names]
        behind = min(states, key=lambda s: s["indexed_rows"] - s["total_rows"])
        print(
            f"\r  {len(names)} indexes built; the slowest ({behind['field_name']}) for "
            f"{behind['indexed_rows']:,}/{behind['total_rows']:,} rows",
            end="",
            file=sys.stderr,
        )
        if all(
            s["pending_index_rows"] == 0 and s["indexed_rows"] >= s["total_rows"] for s in states
        ):
            print(file=sys.stderr)
            return
        await asyncio.sleep(2)


def _grow(data_dir: str, target: int, milvus_uri: str) -> int:
    return asyncio.run(grow_index(Path(data_dir), target, milvus_uri))


async def grow_in_child(data_dir: Path, target: int, milvus_uri: str) -> int:
    """grow_index in a child process: Milvus Lite frees its data-dir lock only when the
    process that opened it exits, and the service must open the directory next."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return await asyncio.get_running_loop().run_in_executor(
            pool, _grow, str(data_dir), target, milvus_uri
        )


async def measure(
    edge: str,
    key: str,
    pid: int,
    clients: int,
    seconds: float,
    warmup: float,
    platform_pids: tuple[int, ...] = (),
) -> dict[str, Any]:
    async with HacsClient(edge, api_key=key, default_timeout=60) as client:
        rng = random.Random(7)

        async def call(i: int) -> None:
            text, parse, filt = QUERIES[rng.randrange(len(QUERIES))]
            request = spb.SearchRequest(
                parent="tenants/bench", query=text, top_k=10, parse_query=parse
            )
            if filt is not None:
                request.filter.CopyFrom(filt)
            await client.search.Search(request)

        result = await run_clients(
            "Search (hybrid, top_k 10, query embedding included)",
            call,
            clients=clients,
            seconds=seconds,
            warmup=warmup,
            service_pid=pid,
            platform_pids=platform_pids,
        )
    result["memory_mib"] = memory_of(pid)
    return result


async def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--index-patients",
        type=int,
        default=10_000,
        help="patients (and as many observations) indexed for real",
    )
    parser.add_argument("--sizes", default="100000,1000000", help="index sizes to measure at")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--warmup", type=float, default=5)
    parser.add_argument(
        "--one-client-seconds",
        type=float,
        default=15,
        help="then one client alone for this long at each size: the latency of a call "
        "that waits for no other (0: skip)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--milvus-server",
        action="store_true",
        help="index in a Milvus standalone server (scripts/install_milvus_server.sh) "
        "instead of Milvus Lite",
    )
    parser.add_argument(
        "--search-processes",
        type=int,
        default=1,
        help="processes serving Search behind Envoy (the first also hosts the other services "
        "and the indexer; more need --milvus-server). The figures' service CPU is the "
        "first process's; the others count as other processes",
    )
    args = parser.parse_args()
    if args.search_processes < 1 or (args.search_processes > 1 and not args.milvus_server):
        parser.error("--search-processes must be 1, or more with --milvus-server")
    run_dir = Path(tempfile.mkdtemp(prefix="hacs-search-bench-"))
    data_dir = run_dir / "data"
    milvus = MilvusServer() if args.milvus_server else None
    if milvus is not None:
        milvus.start()
    milvus_uri = milvus.uri if milvus is not None else ""
    service = AllInOne(
        run_dir,
        data_dir,
        "tenant,records,embedding,search",
        {"HACS_MILVUS_URI": milvus_uri},
        search_processes=args.search_processes,
    )
    figures: dict[str, Any] = {
        "parameters": vars(args)
        | {"json": str(args.json), "cores": os.cpu_count(), "run_dir": str(run_dir)}
    }
    try:
        service.start()
        key = await create_tenant(service.edge, data_dir)
        async with HacsClient(service.edge, api_key=key, default_timeout=300) as client:
            print("indexing through the real path ...", file=sys.stderr)
            figures["indexing"] = await index_real(client, args.index_patients, args.seed)
        figures["sizes"] = {}
        for size in [int(s) for s in args.sizes.split(",")]:
            service.stop()
            grown = await grow_in_child(data_dir, size, milvus_uri)
            service.start()
            # A Milvus server builds indexes and compacts the copied segments in the
            # background; measuring during that would time the build, not search.
            quiet = await asyncio.to_thread(wait_until_quiet)
            print(f"measuring at {grown:,} documents ...", file=sys.stderr)
            figures["sizes"][str(grown)] = await measure(
                service.edge,
                key,
                service.pid,
                args.clients,
                args.seconds,
                args.warmup,
                service.platform_pids,
            )
            figures["sizes"][str(grown)]["machine_busy_percent_before"] = quiet
            if args.one_client_seconds > 0:
                figures["sizes"][str(grown)]["one_client"] = await measure(
                    service.edge,
                    key,
                    service.pid,
                    1,
                    args.one_client_seconds,
                    args.warmup,
                    service.platform_pids,
                )
    finally:
        service.stop()
        if milvus is not None:
            milvus.stop()
    print(json.dumps(figures["indexing"]))
    for size, result in figures["sizes"].items():
        print(
            f"{int(size):>10,} docs: p50 {result['p50_ms']} ms  p95 {result['p95_ms']} ms  "
            f"p99 {result['p99_ms']} ms  {result['calls_per_second']} calls/s  "
            f"errors {result['errors']}"
        )
        if "one_client" in result:
            one = result["one_client"]
            print(
                f"{'':>10}  one client alone: p50 {one['p50_ms']} ms  p95 {one['p95_ms']} ms  "
                f"p99 {one['p99_ms']} ms"
            )
    print(json.dumps(figures["parameters"]))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
