"""What the global rate limit adds to a call: latency through Envoy with and without it.

One layout on this machine, started once: a redis-server, `hacs serve --only
tenant,records` (SQLite; its own per-process limit off, so no quota is measured),
`hacs serve --only ratelimit` on the same database and Redis, and two Envoys in front of
the service, rendered from the same template:
  * local:  this Envoy's own token buckets (`local_ratelimit`, what `make up` runs),
  * global: the `ratelimit` filter asking the rate-limit service over gRPC before each
            call (one GCRA script run in Redis per call).
Each round runs `--clients` concurrent callers of GetTenant (authenticated: the token is
verified at the edge and in the service, the permission checked, the call audited) for
`--seconds`, on connections and tokens made before the clock starts. Rounds alternate
local, global, local, ... so drift on a shared machine hits both; the figures are the
medians over the rounds, the ratio global/local of p99 and the milliseconds it adds. The
tenant's limit is far above the load (100,000,000 a minute): nothing is refused, the
check itself is what is measured.

    .venv/bin/python bench/rate_limit_latency.py                       # 3 rounds each, 15 s
    .venv/bin/python bench/rate_limit_latency.py --rounds 1 --seconds 5 --json /tmp/rl.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "clients" / "python")]

import grpc  # noqa: E402
from hacs.client import HacsClient  # noqa: E402
from hacs.tenant.v1 import tenant_pb2  # noqa: E402
from hacs.tenant.v1 import tenant_service_pb2 as pb  # noqa: E402

from bench.support.measure import back_to_back, machine_busy_percent  # noqa: E402
from mesh.envoy.render import EdgeSettings, Upstream, all_in_one_upstreams, render  # noqa: E402
from tests.support.edge import start_envoy, start_serve  # noqa: E402
from tests.support.postgres import free_port  # noqa: E402
from tests.support.redis import RedisServer  # noqa: E402

TENANT = "bench-ratelimit"
TENANT_CALLS_PER_MINUTE = 100_000_000


class Layout:
    """Redis, the service, the rate-limit service, and one Envoy of each kind."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.redis = RedisServer()
        self.processes: list[subprocess.Popen[bytes]] = []
        self.edges: dict[str, str] = {}

    def start(self) -> None:
        self.redis.start()
        data = self.root / "data"
        serve, grpc_addr, http_addr = start_serve(
            "serve",
            self.root,
            {
                "HACS_SERVICES": "tenant,records",
                "HACS_DATA_DIR": str(data),
                "HACS_RATE_LIMIT_ENABLED": "false",  # the edge's cost, not a quota's
            },
        )
        self.processes.append(serve)
        limiter, limiter_grpc, _ = start_serve(
            "ratelimit",
            self.root,
            {
                "HACS_SERVICES": "ratelimit",
                "HACS_DATA_DIR": str(self.root / "ratelimit-data"),
                "HACS_DATABASE_URL": f"sqlite+aiosqlite:///{data / 'hacs.db'}",
                "HACS_AUTO_MIGRATE": "false",
                "HACS_REDIS_URL": self.redis.url,
            },
        )
        self.processes.append(limiter)
        for name, ratelimit in (("local", None), ("global", Upstream.parse(limiter_grpc))):
            folder = self.root / name
            folder.mkdir()
            port = free_port()
            settings = EdgeSettings(
                upstreams=all_in_one_upstreams(Upstream.parse(grpc_addr)),
                listen_host="127.0.0.1",
                listen_port=port,
                stats_port=free_port(),
                admin_socket=str(folder / "envoy-admin.sock"),
                jwks_uri=f"http://{http_addr}/.well-known/jwks.json",
                access_log_path="/dev/null",
                default_calls_per_minute=TENANT_CALLS_PER_MINUTE,
                ratelimit=ratelimit,
            )
            self.processes.append(start_envoy(render(settings), folder, port))
            self.edges[name] = f"127.0.0.1:{port}"

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
            process.wait(timeout=30)
        self.redis.stop()


async def create_tenant(edge: str, operator_key: str) -> str:
    async with HacsClient(edge, api_key=operator_key) as client:
        for _ in range(150):  # until Envoy has the JWKS and the service answers through it
            try:
                created = await client.tenant.CreateTenant(
                    pb.CreateTenantRequest(
                        tenant_id=TENANT,
                        tenant=tenant_pb2.Tenant(
                            display_name="Bench",
                            limits=tenant_pb2.TenantLimits(
                                calls_per_minute=TENANT_CALLS_PER_MINUTE
                            ),
                        ),
                        admin=tenant_pb2.Actor(display_name="Admin"),
                    )
                )
                return created.admin_api_key.secret
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in (
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.UNAUTHENTICATED,
                ):
                    raise
                await asyncio.sleep(0.2)
    raise RuntimeError(f"the edge at {edge} never answered")


async def measure(edge: str, admin_key: str, clients: int, seconds: float) -> dict[str, float]:
    callers = [HacsClient(edge, api_key=admin_key) for _ in range(clients)]
    request = pb.GetTenantRequest(name=f"tenants/{TENANT}")
    try:
        return await back_to_back(
            callers,
            lambda caller: caller.tenant.GetTenant(request),
            seconds=seconds,
            warmup_calls=3,
        )
    finally:
        for caller in callers:
            await caller.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each edge")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each round")
    parser.add_argument("--clients", type=int, default=8, help="concurrent callers")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    busy = machine_busy_percent()
    results: dict[str, list[dict[str, float]]] = {"local": [], "global": []}
    with tempfile.TemporaryDirectory(prefix="hacs-bench-ratelimit-") as root:
        layout = Layout(Path(root))
        layout.start()
        try:
            operator = (Path(root) / "data" / "operator.key").read_text().strip()
            admin_key = asyncio.run(create_tenant(layout.edges["local"], operator))
            for round_number in range(args.rounds):
                for name in ("local", "global"):
                    figures = asyncio.run(
                        measure(layout.edges[name], admin_key, args.clients, args.seconds)
                    )
                    results[name].append(figures)
                    print(f"round {round_number + 1} {name:6}: {figures}", flush=True)
        finally:
            layout.stop()
    median = {
        name: {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        for name, runs in results.items()
    }
    report: dict[str, Any] = {
        "figure": "authenticated GetTenant through Envoy, global rate limit (RLS + Redis) vs "
        "Envoy's local buckets",
        "clients": args.clients,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "machine_busy_before_percent": busy,
        "cpus": os.cpu_count(),
        "median": median,
        "p99_ratio_global_to_local": round(
            median["global"]["p99_ms"] / median["local"]["p99_ms"], 3
        ),
        "p99_added_ms": round(median["global"]["p99_ms"] - median["local"]["p99_ms"], 2),
        "p50_added_ms": round(median["global"]["p50_ms"] - median["local"]["p50_ms"], 2),
        "calls_per_second_ratio_global_to_local": round(
            median["global"]["calls_per_second"] / median["local"]["calls_per_second"], 3
        ),
        "runs": results,
    }
    print(json.dumps({k: v for k, v in report.items() if k != "runs"}, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
