"""RecordService at scale: bulk-load throughput, Get/List latency through Envoy, memory.

Loads N Patients and K Observations per patient into one tenant on PostgreSQL
through BatchCreateRecords (via Envoy, batches of 1,000, several loaders),
then measures GetRecord and ListRecords with 50 concurrent clients for a fixed
time each, and reads the service process's memory after each phase. Prints
the figures and every parameter they were measured with; --json writes both.

    .venv/bin/python bench/records_load_and_latency.py                 # the issue's 1M run
    .venv/bin/python bench/records_load_and_latency.py --patients 20000 --json /tmp/r.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

# `make bench` runs this file as a script; the packages it measures live at the repo root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg
from hacs.records.v1 import record_pb2
from hacs.records.v1 import record_service_pb2 as pb

from bench.support import dataset
from bench.support.measure import (
    Progress,
    load,
    memory_of,
    run_clients,
)
from bench.support.platform import Platform, running_platform

OBSERVATION = record_pb2.ResourceType.RESOURCE_TYPE_OBSERVATION


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=1_000_000)
    parser.add_argument("--observations-per-patient", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--loaders", type=int, default=4, help="concurrent BatchCreate callers")
    parser.add_argument("--clients", type=int, default=50, help="concurrent Get/List callers")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured time per call")
    parser.add_argument("--warmup", type=float, default=5.0, help="unmeasured time per call")
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--pool-size", type=int, default=0, help="HACS_DATABASE_POOL_SIZE")
    parser.add_argument(
        "--no-vacuum",
        action="store_true",
        help="skip VACUUM ANALYZE between the load and the latency phase",
    )
    parser.add_argument("--json", type=Path, help="also write figures + parameters here")
    return parser.parse_args(argv)


async def vacuum_analyze(platform: Platform) -> float:
    """What an operator runs after a bulk import; timed apart from the load."""
    started = time.perf_counter()
    conn = await asyncpg.connect(platform.database_url.replace("+asyncpg", ""))
    try:
        await conn.execute("VACUUM (ANALYZE)")
    finally:
        await conn.close()
    return time.perf_counter() - started


async def database_size(platform: Platform) -> dict[str, Any]:
    conn = await asyncpg.connect(platform.database_url.replace("+asyncpg", ""))
    try:
        total = await conn.fetchval("SELECT pg_database_size(current_database())")
        tables = await conn.fetch(
            """SELECT c.relname, pg_total_relation_size(c.oid) AS total,
                      pg_indexes_size(c.oid) AS indexes
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = 'public' AND c.relkind = 'r'
                ORDER BY total DESC LIMIT 8"""
        )
    finally:
        await conn.close()
    mib = lambda b: round(b / 2**20, 1)  # noqa: E731
    return {
        "database_mib": mib(total),
        "tables_mib": {
            r["relname"]: {"total": mib(r["total"]), "indexes": mib(r["indexes"])} for r in tables
        },
    }


async def measure_reads(platform: Platform, args: argparse.Namespace) -> list[dict[str, Any]]:
    parent, pid = platform.parent, platform.service.pid
    rng = random.Random(args.seed)
    patients = args.patients
    per_patient = args.observations_per_patient
    codes = [f"{dataset.clinical.LOINC}|{c.code}" for c in dataset.OBSERVATION_CODES]

    def random_patient() -> str:
        return f"{parent}/patients/{dataset.patient_id(rng.randrange(patients))}"

    def random_name(_: int) -> str:
        n = rng.randrange(patients)
        if per_patient and rng.random() < 0.5:
            return f"{parent}/observations/{dataset.observation_id(n, rng.randrange(per_patient))}"
        return f"{parent}/patients/{dataset.patient_id(n)}"

    results = []
    async with platform.client() as client:
        records = client.records

        async def get(i: int) -> object:
            return await records.GetRecord(pb.GetRecordRequest(name=random_name(i)), timeout=30)

        async def list_by_patient(i: int) -> object:
            reply = await records.ListRecords(
                pb.ListRecordsRequest(
                    parent=parent,
                    patient=random_patient(),
                    resource_types=[OBSERVATION],
                    order_by="clinical_time desc",
                    page_size=50,
                ),
                timeout=30,
            )
            if per_patient and not reply.records:
                raise RuntimeError("a patient's observations came back empty")
            return reply

        async def list_by_code(i: int) -> object:
            reply = await records.ListRecords(
                pb.ListRecordsRequest(parent=parent, codes=[rng.choice(codes)], page_size=50),
                timeout=30,
            )
            if per_patient and not reply.records:
                raise RuntimeError("a code filter came back empty")
            return reply

        calls = [
            ("GetRecord (random patient or observation)", get),
            (
                "ListRecords patient=<random> type=Observation order_by=clinical_time desc, "
                "page_size=50",
                list_by_patient,
            ),
            ("ListRecords codes=<random LOINC of 5> page_size=50 (default order)", list_by_code),
        ]
        for name, call in calls:
            print(f"measuring {name} ...", file=sys.stderr, flush=True)
            results.append(
                await run_clients(
                    name,
                    call,
                    clients=args.clients,
                    seconds=args.seconds,
                    warmup=args.warmup,
                    service_pid=pid,
                    platform_pids=platform.other_pids,
                )
            )
    return results


async def run(args: argparse.Namespace) -> dict[str, Any]:
    env = {"HACS_DATABASE_POOL_SIZE": str(args.pool_size)} if args.pool_size else {}
    async with running_platform(
        max_patients=max(10_000_000, args.patients), service_env=env
    ) as platform:
        pid = platform.service.pid
        print(f"platform up (logs in {platform.run_dir}); service pid {pid}", file=sys.stderr)
        memory = {"after_start": memory_of(pid)}
        observations = args.patients * args.observations_per_patient
        async with platform.client() as client:
            started = time.perf_counter()
            patients_load = await load(
                client,
                dataset.patient_batches(
                    platform.tenant_id, args.patients, args.batch_size, args.seed
                ),
                loaders=args.loaders,
                progress=Progress("patients", args.patients),
                service_pid=pid,
                platform_pids=platform.other_pids,
            )
            observations_load = await load(
                client,
                dataset.observation_batches(
                    platform.tenant_id,
                    args.patients,
                    args.observations_per_patient,
                    args.batch_size,
                    args.seed,
                ),
                loaders=args.loaders,
                progress=Progress("observations", observations),
                service_pid=pid,
                platform_pids=platform.other_pids,
            )
            load_seconds = time.perf_counter() - started
        memory["after_load"] = memory_of(pid)
        total = patients_load.records + observations_load.records
        vacuum_seconds = None
        if not args.no_vacuum:
            print("VACUUM ANALYZE ...", file=sys.stderr, flush=True)
            vacuum_seconds = round(await vacuum_analyze(platform), 1)
        sizes = await database_size(platform)
        reads = await measure_reads(platform, args)
        memory["after_latency"] = memory_of(pid)
        return {
            "figures": {
                "load": {
                    "resources": total,
                    "seconds": round(load_seconds, 1),
                    "resources_per_second": round(total / load_seconds, 1),
                    "patients": patients_load.figures(),
                    "observations": observations_load.figures(),
                },
                "latency_through_envoy": reads,
                "service_memory_mib": memory,
                "vacuum_analyze_seconds": vacuum_seconds,
                "postgres": sizes,
            },
            "parameters": {
                "patients": args.patients,
                "observations_per_patient": args.observations_per_patient,
                "observations": observations,
                "batch_size": args.batch_size,
                "loaders": args.loaders,
                "clients": args.clients,
                "seconds_per_call": args.seconds,
                "warmup_seconds_per_call": args.warmup,
                "seed": args.seed,
                "load_path": "RecordService.BatchCreateRecords via Envoy, no request_id",
                "latency_client": "one HacsClient (one HTTP/2 channel to Envoy), asyncio tasks",
                "bench_client_on_same_machine": True,
                "vacuum_analyze_before_latency": not args.no_vacuum,
                **platform.parameters(),
            },
        }


def cpu_line(cpu: dict[str, float]) -> str:
    """Where the CPU went, in % of one core (the machine has `cores` of them)."""
    return (
        f"CPU (% of one core): record service {cpu['service_cpu_percent']}, PostgreSQL "
        f"{cpu['postgres_cpu_percent']}, Envoy+tenant {cpu['envoy_and_tenant_service_cpu_percent']}"
        f", bench client {cpu['bench_client_cpu_percent']}, other processes "
        f"{cpu['other_processes_cpu_percent']}; machine {cpu['machine_busy_percent_of_all_cores']}"
        f" % busy ({cpu['cores']} cores)"
    )


def render_text(result: dict[str, Any]) -> str:
    f, p = result["figures"], result["parameters"]
    lines = ["", "== RecordService: load, latency through Envoy, memory =="]
    ld = f["load"]
    lines.append(
        f"load: {ld['resources']:,} resources in {ld['seconds']:,} s = "
        f"{ld['resources_per_second']:,} resources/s"
    )
    for kind in ("patients", "observations"):
        k = ld[kind]
        lines.append(
            f"  {kind}: {k['records']:,} in {k['seconds']:,} s = {k['records_per_second']:,}/s; "
            f"BatchCreateRecords({p['batch_size']}) p50 {k['batch_call']['p50_ms']} ms, "
            f"p95 {k['batch_call']['p95_ms']} ms; CPU per record: service "
            f"{k['service_cpu_ms_per_record']} ms, PostgreSQL {k['postgres_cpu_ms_per_record']} ms"
            f"\n    {cpu_line(k['cpu'])}"
        )
    lines.append(
        f"latency ({p['clients']} concurrent clients through Envoy, "
        f"{p['seconds_per_call']} s each after {p['warmup_seconds_per_call']} s warm-up):"
    )
    for r in f["latency_through_envoy"]:
        lines.append(
            f"  {r['call']}\n    p50 {r['p50_ms']} ms  p95 {r['p95_ms']} ms  p99 {r['p99_ms']} ms"
            f"  max {r['max_ms']} ms  | {r['calls_per_second']:,} calls/s "
            f"({r['calls']:,} calls, errors {r['errors'] or 0})\n    {cpu_line(r['cpu'])}"
        )
    lines.append("record service process memory (VmRSS / peak VmHWM, MiB):")
    for when, m in f["service_memory_mib"].items():
        lines.append(f"  {when}: {m['rss_mib']} / {m['peak_rss_mib']}")
    lines.append(
        f"PostgreSQL database size: {f['postgres']['database_mib']:,} MiB; "
        f"VACUUM ANALYZE after load: {f['vacuum_analyze_seconds']} s"
    )
    lines.append("parameters:")
    for key, value in p.items():
        lines.append(f"  {key}: {value}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = asyncio.run(run(args))
    print(render_text(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"(figures and parameters written to {args.json})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
