"""Authenticated GetRecord: calls/s per server core, and latency at a fixed offered rate.

What one authenticated read costs the platform, measured the way a hospital would load
it: the all-in-one `hacs serve` (embedded SQLite; `--workers N` worker processes, Envoy
balancing calls over them) with Envoy in front, one tenant, one Patient, and the tenant
administrator's token (verified at the edge and again in the service, admission, the
permission check, the read, the audit record committed before the answer).

Each round runs, alternating the way in so drift on a shared machine hits both:
  * closed loop: `--clients` callers, each calling back to back, direct (the service's own
    port) and through Envoy: calls/s, p50/p95/p99;
  * open loop: calls started at `--rate` per second on a fixed schedule whatever the
    answers do, latency counted from the moment each call was due (so a stall is not hidden
    by the load generator waiting on it), direct and through Envoy. Each call gets
    `--deadline` (1 s); a later one counts as past_deadline, so a server offered more than
    it can serve shows the share it could not serve in time, not a queue without end.
Each phase starts once the machine is quiet again (the last phase's backlog is gone).
The load comes from `--load-processes` separate Python processes on raw gRPC stubs (one
connection per caller, the token fetched once), so the client is as cheap as Python
makes it; it still runs on this machine, so every figure comes with where the CPU went: the
service (every worker), Envoy, the load generator, anything else. "calls per server core"
is calls/s divided by the cores the service used (its CPU seconds per second).

    .venv/bin/python bench/records_read_throughput.py
    .venv/bin/python bench/records_read_throughput.py --rounds 1 --seconds 10 --json /tmp/r.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "clients" / "python")]

import grpc  # noqa: E402
from hacs.client import HacsClient  # noqa: E402
from hacs.records.v1 import record_service_pb2 as rpb  # noqa: E402
from hacs.records.v1 import record_service_pb2_grpc  # noqa: E402
from hacs.tenant.v1 import tenant_pb2  # noqa: E402
from hacs.tenant.v1 import tenant_service_pb2 as tpb  # noqa: E402

from bench.support.all_in_one import AllInOne  # noqa: E402
from bench.support.dataset import patient_record  # noqa: E402
from bench.support.measure import (  # noqa: E402
    CpuSnapshot,
    machine_busy_percent,
    summary_ms,
    wait_until_quiet,
)
from bench.support.profile import sampled  # noqa: E402

TENANT = "bench-reads"
CALLS_PER_MINUTE = 100_000_000


async def _setup(edge: str, operator_key: str) -> tuple[str, str]:
    """The tenant (its limit far above the load), one Patient; (admin API key, record name)."""
    async with HacsClient(edge, api_key=operator_key) as operator:
        for _ in range(150):  # until Envoy has the JWKS and the service answers through it
            try:
                created = await operator.tenant.CreateTenant(
                    tpb.CreateTenantRequest(
                        tenant_id=TENANT,
                        tenant=tenant_pb2.Tenant(
                            display_name="Bench",
                            limits=tenant_pb2.TenantLimits(calls_per_minute=CALLS_PER_MINUTE),
                        ),
                        admin=tenant_pb2.Actor(display_name="Admin"),
                    )
                )
                break
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED):
                    raise
                await asyncio.sleep(0.2)
        else:
            raise RuntimeError(f"the edge at {edge} never answered")
    key = created.admin_api_key.secret
    async with HacsClient(edge, api_key=key) as admin:
        record = await admin.records.CreateRecord(
            rpb.CreateRecordRequest(parent=f"tenants/{TENANT}", record=patient_record(1, 7))
        )
    return key, record.record.name


async def _token(edge: str, api_key: str) -> str:
    async with HacsClient(edge, api_key=api_key) as client:
        token = await client.token()
    assert token
    return token


# -- the load generator (runs in its own processes) ------------------------------------------


async def _drive(
    target: str,
    token: str,
    name: str,
    mode: str,
    callers: int,
    seconds: float,
    rate: float,
    call_deadline: float,
) -> tuple[list[float], int, int, float]:
    """(latencies in seconds, calls past their deadline, other errors, how late the open loop
    started its calls at worst)."""
    channels = [grpc.aio.insecure_channel(target) for _ in range(callers)]
    stubs = [record_service_pb2_grpc.RecordServiceStub(c) for c in channels]
    metadata = (("authorization", f"Bearer {token}"),)
    request = rpb.GetRecordRequest(name=name)
    for stub in stubs:  # connect before the clock starts
        for _ in range(3):
            await stub.GetRecord(request, metadata=metadata, timeout=30)
    latencies: list[float] = []
    late = errors = 0
    worst_lag = 0.0
    deadline = time.perf_counter() + seconds
    # An open loop past the server's capacity queues without end: each call gets
    # `call_deadline`, and the server drops what its caller gave up on.
    timeout = 30.0 if mode == "closed" else call_deadline

    async def one(stub: Any, due: float) -> None:
        nonlocal errors, late
        try:
            await stub.GetRecord(request, metadata=metadata, timeout=timeout)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                late += 1
            else:
                errors += 1
            return
        latencies.append(time.perf_counter() - due)

    try:
        if mode == "closed":

            async def loop(stub: Any) -> None:
                while time.perf_counter() < deadline:
                    await one(stub, time.perf_counter())

            await asyncio.gather(*(loop(s) for s in stubs))
        else:
            interval = 1.0 / rate
            start = time.perf_counter()
            tasks = []
            i = 0
            while True:
                due = start + i * interval
                if due >= deadline:
                    break
                now = time.perf_counter()
                if due > now:
                    await asyncio.sleep(due - now)
                else:
                    worst_lag = max(worst_lag, now - due)
                tasks.append(asyncio.create_task(one(stubs[i % len(stubs)], due)))
                i += 1
            await asyncio.gather(*tasks)
    finally:
        for channel in channels:
            await channel.close()
    return latencies, late, errors, worst_lag


def _drive_process(args: tuple[Any, ...]) -> tuple[list[float], int, int, float, float]:
    cpu = time.process_time()
    latencies, late, errors, lag = asyncio.run(_drive(*args))
    return latencies, late, errors, lag, time.process_time() - cpu


# -- one phase ----------------------------------------------------------------------------


def _phase(
    pool: ProcessPoolExecutor,
    service: AllInOne,
    target: str,
    token: str,
    name: str,
    mode: str,
    args: argparse.Namespace,
) -> dict[str, Any]:
    k = args.load_processes
    callers = max(1, args.clients // k)
    rate = args.rate / k
    jobs = [
        (target, token, name, mode, callers, args.seconds, rate, args.deadline) for _ in range(k)
    ]
    wait_until_quiet(busy_below=20.0, window=2.0)  # the last phase's backlog is gone
    before = CpuSnapshot.take(service.pid, service.platform_pids)
    began = time.perf_counter()
    results = list(pool.map(_drive_process, jobs))
    wall = time.perf_counter() - began
    cpu = CpuSnapshot.take(service.pid, service.platform_pids).since(
        before, wall, os.cpu_count() or 1
    )
    latencies = [x for r in results for x in r[0]]
    client_cpu = sum(r[4] for r in results)
    # The phase's wall time includes connecting; the calls ran for `seconds`.
    calls_per_second = len(latencies) / args.seconds
    service_cores = cpu["service_cpu_seconds"] / wall
    figures: dict[str, Any] = {
        "calls": len(latencies),
        "past_deadline": sum(r[1] for r in results),
        "errors": sum(r[2] for r in results),
        "calls_per_second": round(calls_per_second, 1),
        **summary_ms(latencies),
        "service_cores": round(service_cores, 2),
        "calls_per_server_core_second": round(calls_per_second / max(service_cores, 1e-9), 1),
        "envoy_cores": round(cpu["envoy_and_tenant_service_cpu_seconds"] / wall, 2),
        "load_generator_cores": round(client_cpu / wall, 2),
        "other_cores": round(cpu["other_processes_cpu_seconds"] / wall, 2),
    }
    if mode == "open":
        figures["offered_per_second"] = args.rate
        figures["call_deadline_ms"] = round(args.deadline * 1000)
        figures["generator_worst_start_lag_ms"] = round(max(r[3] for r in results) * 1000, 2)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=1, help="hacs serve --workers")
    parser.add_argument("--clients", type=int, default=50, help="closed-loop callers")
    parser.add_argument("--rate", type=float, default=1000.0, help="open-loop calls/s")
    parser.add_argument(
        "--deadline",
        type=float,
        default=1.0,
        help="open loop: seconds each call gets (later ones count as past_deadline)",
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    parser.add_argument("--modes", default="closed,open", help="which loops to run")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of every phase")
    parser.add_argument("--load-processes", type=int, default=2, help="load generator processes")
    parser.add_argument(
        "--profile",
        default=None,
        help="directory: py-spy samples the service during the first closed-loop direct "
        "phase (flame graph getrecord.svg, collapsed stacks getrecord.txt, top frames printed)",
    )
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    busy = machine_busy_percent()
    runs: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="hacs-bench-reads-") as root:
        run_dir = Path(root)
        service = AllInOne(
            run_dir, run_dir / "data", "tenant,records", {"HACS_WORKERS": str(args.workers)}
        )
        service.start()
        try:
            operator = (run_dir / "data" / "operator.key").read_text().strip()
            key, name = asyncio.run(_setup(service.edge, operator))
            token = asyncio.run(_token(service.edge, key))
            ways = {"direct": service.direct, "edge": service.edge}
            with ProcessPoolExecutor(args.load_processes, mp_context=get_context("spawn")) as pool:
                for round_number in range(args.rounds):
                    for mode in args.modes.split(","):
                        for way, target in ways.items():
                            profile = (
                                args.profile
                                if round_number == 0 and mode == "closed" and way == "direct"
                                else None
                            )
                            with sampled(service.pid, profile, args.seconds):
                                figures = _phase(pool, service, target, token, name, mode, args)
                            runs.setdefault(f"{mode}/{way}", []).append(figures)
                            print(
                                f"round {round_number + 1} {mode:6} {way:6}: {figures}", flush=True
                            )
            memory = service.memory()
        finally:
            service.stop()
    median = {
        phase: {k: statistics.median(r[k] for r in results) for k in results[0]}
        for phase, results in runs.items()
    }
    report: dict[str, Any] = {
        "figure": "authenticated GetRecord (one Patient), all-in-one hacs serve on SQLite, "
        "direct and through Envoy",
        "services": "tenant,records",
        "workers": args.workers,
        "clients": args.clients,
        "open_loop_rate": args.rate,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "load_processes": args.load_processes,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "machine_busy_before_percent": busy,
        "service_memory": memory,
        "median": median,
        "edge_adds_p99_ms_open_loop": round(
            median["open/edge"]["p99_ms"] - median["open/direct"]["p99_ms"], 2
        )
        if "open/edge" in median
        else None,
        "runs": runs,
    }
    print(json.dumps({k: v for k, v in report.items() if k != "runs"}, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
