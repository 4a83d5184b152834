"""Watch propagation latency on many concurrent streams through Envoy, and memory per stream.

The mesh layout on one machine: PostgreSQL, Redis, a `hacs serve --only
tenant,records` process that takes the writes, a `hacs serve --only sync`
process (the one measured) that learns of them through Redis, and Envoy in
front of both. `--streams` Watch streams (tenant-wide, so every stream
receives every write) are opened through Envoy from `--client-processes`
client processes over `--connections` HTTP/2 connections. Then `--writes`
records are created through Envoy, one every `--interval` seconds, and every
stream's receipt of every write is timed.

Latency is reported two ways, because the commit happens somewhere between
the write being sent and its reply arriving:
  * from send: receipt - the moment the write was sent (an upper bound of
    commit-to-receipt; includes the write itself),
  * from reply: receipt - the moment the write's reply arrived (a lower
    bound; negative when the event beat the write's own reply).
Memory per idle stream is the sync process's resident memory with every
stream open and idle, minus before they were opened, divided by --streams.

    .venv/bin/python bench/sync_watch_latency.py                   # 1,000 streams
    .venv/bin/python bench/sync_watch_latency.py --streams 200 --writes 50 --json /tmp/s.json
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing as mp
import os
import platform as host
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "clients" / "python")]

import grpc  # noqa: E402
from hacs.records.v1 import record_service_pb2 as records_pb  # noqa: E402
from hacs.records.v1 import record_service_pb2_grpc  # noqa: E402
from hacs.sync.v1 import sync_service_pb2 as sync_pb  # noqa: E402
from hacs.sync.v1 import sync_service_pb2_grpc  # noqa: E402
from hacs.tenant.v1 import tenant_pb2, tenant_service_pb2_grpc  # noqa: E402
from hacs.tenant.v1 import tenant_service_pb2 as tenant_pb  # noqa: E402

from bench.support.measure import machine_busy_percent, machine_cpu_seconds  # noqa: E402
from mesh.envoy.render import HACS_SERVICES, EdgeSettings, Upstream, render  # noqa: E402
from tests.support import clinical  # noqa: E402
from tests.support.edge import start_envoy, start_serve  # noqa: E402
from tests.support.postgres import PostgresServer, create_database, free_port  # noqa: E402
from tests.support.redis import RedisServer  # noqa: E402

SYNC = "hacs.sync.v1.SyncService"
UNLIMITED = 100_000_000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--writes", type=int, default=120)
    parser.add_argument(
        "--interval",
        type=float,
        default=0.25,
        help="seconds between writes: long enough that each write's fan-out is measured alone",
    )
    parser.add_argument("--connections", type=int, default=10, help="HTTP/2 connections to Envoy")
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--json", help="also write the figures and parameters to this file")
    return parser.parse_args(argv)


# -- the client processes --------------------------------------------------------------


def client_process(
    edge: str,
    token: str,
    parent: str,
    cursor: str,
    streams: int,
    connections: int,
    expected: int,
    ready: Any,
    results: Any,
    stop: Any,
) -> None:
    """Open `streams` Watch streams; report when all are caught up, then every receipt time.

    Messages are not decoded: every stream receives every write exactly once
    and in order (what the test suite proves), so the k-th change event on a
    stream is the k-th write, and its first byte tells a change (field 1) from
    a heartbeat or the caught-up marker. The client stays cheap, so the figure
    is the server's and Envoy's rather than the benchmark's own parsing.
    """
    receipts: list[list[float]] = []

    async def main() -> None:
        options = [("grpc.use_local_subchannel_pool", 1)]  # one TCP connection per channel
        channels = [grpc.aio.insecure_channel(edge, options=options) for _ in range(connections)]
        caught_up = 0
        all_in = asyncio.Event()
        request = sync_pb.WatchRequest(parent=parent, resume_cursor=cursor).SerializeToString()
        metadata = (("authorization", f"Bearer {token}"),)

        async def watch(index: int) -> None:
            nonlocal caught_up
            call = channels[index % connections].unary_stream(
                f"/{SYNC}/Watch", request_serializer=None, response_deserializer=None
            )(request, metadata=metadata)
            times: list[float] = []
            receipts.append(times)
            try:
                while len(times) < expected:
                    message = await call.read()
                    now = time.time()
                    if message is grpc.aio.EOF:
                        return
                    if message[0] == CHANGE_TAG:
                        times.append(now)
                    elif message[0] == CAUGHT_UP_TAG:
                        caught_up += 1
                        if caught_up == streams:
                            all_in.set()
            finally:
                call.cancel()

        tasks = [asyncio.create_task(watch(i)) for i in range(streams)]
        await all_in.wait()
        ready.put(os.getpid())
        await asyncio.to_thread(stop.wait)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for channel in channels:
            await channel.close()

    asyncio.run(main())
    results.put(receipts)


# WatchResponse's oneof: change = 1, heartbeat = 2, caught_up = 3 (length-delimited tags).
CHANGE_TAG = (1 << 3) | 2
CAUGHT_UP_TAG = (3 << 3) | 2


# -- the platform -----------------------------------------------------------------------


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def issue_token(edge: str, api_key: str) -> str:
    async with grpc.aio.insecure_channel(edge) as channel:
        stub = tenant_service_pb2_grpc.TenantServiceStub(channel)
        reply = await stub.IssueToken(
            tenant_pb.IssueTokenRequest(api_key=api_key, ttl_seconds=3600), timeout=30
        )
    return reply.access_token


async def create_tenant(edge: str, operator_key: str) -> str:
    operator = await issue_token(edge, operator_key)
    deadline = time.monotonic() + 60
    async with grpc.aio.insecure_channel(edge) as channel:
        stub = tenant_service_pb2_grpc.TenantServiceStub(channel)
        while True:
            try:
                reply = await stub.CreateTenant(
                    tenant_pb.CreateTenantRequest(
                        tenant_id="bench-sync",
                        tenant=tenant_pb2.Tenant(
                            display_name="Sync benchmark",
                            plan=tenant_pb2.PLAN_ENTERPRISE,
                            limits=tenant_pb2.TenantLimits(calls_per_minute=UNLIMITED),
                        ),
                        admin=tenant_pb2.Actor(display_name="Benchmark"),
                    ),
                    metadata=(("authorization", f"Bearer {operator}"),),
                    timeout=30,
                )
                return reply.admin_api_key.secret
            except grpc.aio.AioRpcError as error:  # Envoy's first JWKS fetch is in flight
                if error.code() != grpc.StatusCode.UNAUTHENTICATED or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)

    return {
        "p50_ms": at(0.50),
        "p95_ms": at(0.95),
        "p99_ms": at(0.99),
        "max_ms": round(ordered[-1] * 1000, 2),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 2),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    busy = machine_busy_percent()
    if busy > 25:
        print(
            f"WARNING: the machine was {busy} % busy before the benchmark started; "
            "other work will distort the figures",
            file=sys.stderr,
        )
    root = Path(tempfile.mkdtemp(prefix="hacs-bench-sync-"))
    postgres, redis = PostgresServer(), RedisServer()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        postgres.start()
        redis.start()
        database_url = await create_database(postgres.admin_url)
        common = {
            "HACS_DATABASE_URL": database_url,
            "HACS_REDIS_URL": redis.url,
            "HACS_RATE_LIMIT_ENABLED": "false",
            "HACS_LOG_LEVEL": "WARNING",
        }
        writer, writer_grpc, writer_http = start_serve(
            "writer",
            root,
            {**common, "HACS_SERVICES": "tenant,records", "HACS_DATA_DIR": str(root / "w")},
        )
        processes.append(writer)
        jwks = f"http://{writer_http}/.well-known/jwks.json"
        sync_env = {
            **common,
            "HACS_SERVICES": "sync",
            "HACS_DATA_DIR": str(root / "s"),
            "HACS_AUTO_MIGRATE": "false",
            "HACS_JWKS_URL": jwks,
        }
        sync, sync_grpc, _ = start_serve("sync", root, sync_env)
        processes.append(sync)
        upstreams = {service: Upstream.parse(writer_grpc) for service in HACS_SERVICES}
        upstreams[SYNC] = Upstream.parse(sync_grpc)
        edge_port = free_port()
        envoy = start_envoy(
            render(
                EdgeSettings(
                    upstreams=upstreams,
                    listen_host="127.0.0.1",
                    listen_port=edge_port,
                    stats_port=free_port(),
                    jwks_uri=jwks,
                    default_calls_per_minute=UNLIMITED,
                    token_calls_per_minute=UNLIMITED,
                    open_calls_per_minute=UNLIMITED,
                    access_log_path="/dev/null",
                )
            ),
            root,
            edge_port,
        )
        processes.append(envoy)
        edge = f"127.0.0.1:{edge_port}"
        with grpc.insecure_channel(edge) as channel:
            grpc.channel_ready_future(channel).result(timeout=60)
        admin_key = await create_tenant(edge, (root / "w/operator.key").read_text().strip())
        token = await issue_token(edge, admin_key)
        parent = "tenants/bench-sync"
        auth = (("authorization", f"Bearer {token}"),)
        result = await measure(args, edge, parent, token, auth, sync.pid, envoy.pid)
        result["parameters"]["machine_busy_before_start_percent"] = busy
        return result
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.terminate()
                with suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=30)
        redis.stop()
        postgres.stop()


async def measure(
    args: argparse.Namespace,
    edge: str,
    parent: str,
    token: str,
    auth: tuple[tuple[str, str], ...],
    sync_pid: int,
    envoy_pid: int,
) -> dict[str, Any]:
    async with grpc.aio.insecure_channel(edge) as channel:
        records = record_service_pb2_grpc.RecordServiceStub(channel)
        syncs = sync_service_pb2_grpc.SyncServiceStub(channel)
        patient = (
            await records.CreateRecord(
                records_pb.CreateRecordRequest(parent=parent, record=clinical.patient()),
                metadata=auth,
            )
        ).record
        # Warm the sync process up (JWKS, tail, pools) with a few short streams.
        cursor = (
            await syncs.GetSyncCursor(sync_pb.GetSyncCursorRequest(parent=parent), metadata=auth)
        ).cursor
        for _ in range(5):
            call = syncs.Watch(
                sync_pb.WatchRequest(parent=parent, resume_cursor=cursor), metadata=auth
            )
            await call.read()
            call.cancel()
        await asyncio.sleep(2)
        rss_before = rss_mib(sync_pid)

        context = mp.get_context("spawn")
        ready, results, stop = context.Queue(), context.Queue(), context.Event()
        shares = [args.streams // args.client_processes] * args.client_processes
        shares[0] += args.streams - sum(shares)
        connections = max(1, args.connections // args.client_processes)
        clients = [
            context.Process(
                target=client_process,
                args=(
                    edge,
                    token,
                    parent,
                    cursor,
                    share,
                    connections,
                    args.writes,
                    ready,
                    results,
                    stop,
                ),
            )
            for share in shares
        ]
        opened = time.monotonic()
        for client in clients:
            client.start()
        for _ in clients:
            await asyncio.to_thread(ready.get, True, 600)
        open_seconds = time.monotonic() - opened
        await asyncio.sleep(3)  # idle: heartbeats are 15 s apart, nothing else flows
        gc.collect()
        rss_idle = rss_mib(sync_pid)

        sent: dict[str, tuple[float, float]] = {}
        cpu_before = cpu_seconds(sync_pid), cpu_seconds(envoy_pid), machine_cpu_seconds()
        started = time.monotonic()
        for i in range(args.writes):
            t_send = time.time()
            reply = await records.CreateRecord(
                records_pb.CreateRecordRequest(
                    parent=parent, record=clinical.hba1c(patient.name, 5 + i / 1000)
                ),
                metadata=auth,
            )
            sent[reply.record.name] = (t_send, time.time())
            await asyncio.sleep(max(0.0, started + (i + 1) * args.interval - time.monotonic()))
        await asyncio.sleep(2)  # the last write's fan-out
        write_seconds = time.monotonic() - started
        cpu_after = cpu_seconds(sync_pid), cpu_seconds(envoy_pid), machine_cpu_seconds()
        stop.set()
        receipts: list[list[float]] = []
        for _ in clients:
            receipts += await asyncio.to_thread(results.get, True, 600)
        for client in clients:
            client.join(timeout=60)

    writes = list(sent.values())  # in write order, as every stream receives them
    from_send = [t - writes[k][0] for times in receipts for k, t in enumerate(times)]
    from_reply = [t - writes[k][1] for times in receipts for k, t in enumerate(times)]
    per_write: list[list[float]] = [[] for _ in writes]
    for times in receipts:
        for k, t in enumerate(times):
            per_write[k].append(t)
    spread = [max(ts) - min(ts) for ts in per_write if ts]
    first = [min(ts) - writes[k][0] for k, ts in enumerate(per_write) if ts]
    expected = args.streams * args.writes
    return {
        "figures": {
            "deliveries": len(from_send),
            "deliveries_expected": expected,
            "latency_from_send": percentiles(from_send),
            "latency_from_reply": percentiles(from_reply),
            "first_receipt_from_send": percentiles(first),
            "fan_out_spread_per_write": percentiles(spread),
            "write_rpc": percentiles([ack - send for send, ack in sent.values()]),
            "sync_rss_before_mib": round(rss_before, 1),
            "sync_rss_idle_streams_mib": round(rss_idle, 1),
            "memory_per_idle_stream_kib": round((rss_idle - rss_before) * 1024 / args.streams, 1),
            "seconds_to_open_and_catch_up_all_streams": round(open_seconds, 2),
            # CPU the sync process spent per message it delivered (robust to a busy machine).
            "sync_cpu_us_per_delivery": round(
                1e6 * (cpu_after[0] - cpu_before[0]) / max(len(from_send), 1), 1
            ),
            "sync_cpu_percent_during_writes": round(
                100 * (cpu_after[0] - cpu_before[0]) / write_seconds, 1
            ),
            "envoy_cpu_percent_during_writes": round(
                100 * (cpu_after[1] - cpu_before[1]) / write_seconds, 1
            ),
            # Everything: sync, Envoy, the records process, PostgreSQL, Redis, the
            # benchmark's clients, and whatever else ran (of cores x 100 %).
            "machine_cpu_percent_during_writes": round(
                100 * (cpu_after[2] - cpu_before[2]) / write_seconds, 1
            ),
        },
        "parameters": {
            "streams": args.streams,
            "writes": args.writes,
            "write_interval_s": args.interval,
            "client_processes": args.client_processes,
            "http2_connections_to_envoy": connections * args.client_processes,
            "watch_filter": "none (tenant-wide: every stream receives every write)",
            "layout": "Envoy -> `hacs serve --only sync` (measured) and "
            "`hacs serve --only tenant,records` (writes); Redis carries change notices; "
            "one PostgreSQL (the test server's settings, fsync=off)",
            "machine_cores": os.cpu_count(),
            "python": host.python_version(),
            "grpcio": grpc.__version__,
        },
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = asyncio.run(run(args))
    figures, parameters = result["figures"], result["parameters"]
    print("Watch propagation through Envoy (sync service)")
    for key, value in parameters.items():
        print(f"  {key}: {value}")
    print(f"  deliveries: {figures['deliveries']} of {figures['deliveries_expected']}")
    keys = (
        "latency_from_send",
        "latency_from_reply",
        "first_receipt_from_send",
        "fan_out_spread_per_write",
        "write_rpc",
    )
    for key in keys:
        f = figures[key]
        print(
            f"  {key}: p50 {f['p50_ms']} ms, p95 {f['p95_ms']} ms, p99 {f['p99_ms']} ms, "
            f"max {f['max_ms']} ms"
        )
    print(
        f"  memory per idle stream: {figures['memory_per_idle_stream_kib']} KiB "
        f"(sync RSS {figures['sync_rss_before_mib']} -> {figures['sync_rss_idle_streams_mib']} MiB)"
    )
    print(f"  sync CPU per delivered message: {figures['sync_cpu_us_per_delivery']} us")
    opened = figures["seconds_to_open_and_catch_up_all_streams"]
    print(f"  all streams open and caught up in {opened} s")
    print(
        f"  CPU during writes: sync {figures['sync_cpu_percent_during_writes']} %, "
        f"envoy {figures['envoy_cpu_percent_during_writes']} %, whole machine "
        f"{figures['machine_cpu_percent_during_writes']} % of {os.cpu_count()}00 %"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0 if figures["deliveries"] == figures["deliveries_expected"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
