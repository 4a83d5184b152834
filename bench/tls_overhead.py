"""What TLS costs: authenticated calls per second through Envoy, plaintext vs TLS + mTLS.

Two layouts on this machine, each a `hacs serve --only tenant,records` (SQLite) with
Envoy in front, started afresh for every round:
  * plaintext: client -> Envoy -> service in the clear (loopback; `HACS_TLS=off`),
  * tls:       client -> Envoy over TLS (HTTP/2 by ALPN), Envoy -> service over mTLS
               (`HACS_TLS=on`, client certificates required), the JWKS over https.
Each round runs `--clients` concurrent callers of GetTenant (authenticated: the token is
verified at the edge and in the service, the permission checked, the call audited) for
`--seconds`, on connections opened before the clock starts (handshakes are not timed:
a caller keeps its HTTP/2 connection). Rounds alternate plaintext, tls, plaintext, ... so
drift on a shared machine hits both; the figure is the ratio of the medians.

    .venv/bin/python bench/tls_overhead.py                          # 3 rounds each, 20 s
    .venv/bin/python bench/tls_overhead.py --rounds 1 --seconds 5 --json /tmp/tls.json
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
from mesh.envoy.render import (  # noqa: E402  # noqa: E402
    EdgeSettings,
    EdgeTls,
    Upstream,
    all_in_one_upstreams,
    render,
    render_sds,
)
from services.common.runtime.certificates import ensure_certificates  # noqa: E402
from services.common.runtime.tls import TlsFiles, channel_credentials  # noqa: E402
from tests.support.edge import start_envoy, start_serve  # noqa: E402
from tests.support.postgres import free_port  # noqa: E402


class Layout:
    """One `hacs serve` and one Envoy, plaintext or TLS, in a directory of their own."""

    def __init__(self, root: Path, tls: bool) -> None:
        self.root, self.tls = root, tls
        self.processes: list[subprocess.Popen[bytes]] = []
        self.certs = root / "tls"
        self.edge = ""

    def start(self) -> None:
        env = {"HACS_SERVICES": "tenant,records", "HACS_DATA_DIR": str(self.root / "data")}
        env["HACS_RATE_LIMIT_ENABLED"] = "false"  # the platform's cost, not a quota's
        ca = None
        if self.tls:
            ensure_certificates(self.certs, ("serve", "edge", "client"))
            env |= {"HACS_TLS": "on", "HACS_TLS_DIR": str(self.certs)}
            ca = self.certs / "ca.pem"
        serve, grpc_addr, http_addr = start_serve("serve", self.root, env, tls_ca=ca)
        self.processes.append(serve)
        port = free_port()
        scheme = "https" if self.tls else "http"
        settings = EdgeSettings(
            upstreams=all_in_one_upstreams(Upstream.parse(grpc_addr)),
            listen_host="127.0.0.1",
            listen_port=port,
            stats_port=free_port(),
            admin_socket=str(self.root / "envoy-admin.sock"),
            jwks_uri=f"{scheme}://{http_addr}/.well-known/jwks.json",
            access_log_path="/dev/null",
            default_calls_per_minute=10_000_000,
            tls=EdgeTls(
                sds_dir=str(self.root / "sds"),
                cert=str(self.certs / "edge.pem"),
                key=str(self.certs / "edge-key.pem"),
                ca=str(self.certs / "ca.pem"),
            )
            if self.tls
            else None,
        )
        for path, text in render_sds(settings).items():
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text)
        self.processes.append(start_envoy(render(settings), self.root, port))
        self.edge = f"localhost:{port}"

    def credentials(self) -> grpc.ChannelCredentials | None:
        if not self.tls:
            return None
        return channel_credentials(
            TlsFiles(
                self.certs / "client.pem", self.certs / "client-key.pem", self.certs / "ca.pem"
            )
        )

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
            process.wait(timeout=30)


async def measure(layout: Layout, clients: int, seconds: float) -> dict[str, float]:
    operator = (layout.root / "data" / "operator.key").read_text().strip()
    credentials = layout.credentials()
    async with HacsClient(layout.edge, api_key=operator, credentials=credentials) as client:
        for _ in range(100):  # Envoy is up once its health check passes through it
            try:
                created = await client.tenant.CreateTenant(
                    pb.CreateTenantRequest(
                        tenant_id="bench-tls",
                        tenant=tenant_pb2.Tenant(display_name="Bench"),
                        admin=tenant_pb2.Actor(display_name="Admin"),
                    )
                )
                break
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                await asyncio.sleep(0.2)
        else:
            raise RuntimeError(f"the edge at {layout.edge} never answered")
    admin_key = created.admin_api_key.secret
    callers = [
        HacsClient(layout.edge, api_key=admin_key, credentials=credentials) for _ in range(clients)
    ]
    request = pb.GetTenantRequest(name="tenants/bench-tls")
    try:
        return await back_to_back(
            callers, lambda caller: caller.tenant.GetTenant(request), seconds=seconds
        )
    finally:
        for caller in callers:
            await caller.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each layout")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each round")
    parser.add_argument("--clients", type=int, default=32, help="concurrent callers")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    busy = machine_busy_percent()
    results: dict[str, list[dict[str, float]]] = {"plaintext": [], "tls": []}
    for round_number in range(args.rounds):
        for name in ("plaintext", "tls"):
            with tempfile.TemporaryDirectory(prefix=f"hacs-bench-{name}-") as root:
                layout = Layout(Path(root), tls=name == "tls")
                layout.start()
                try:
                    figures = asyncio.run(measure(layout, args.clients, args.seconds))
                finally:
                    layout.stop()
            results[name].append(figures)
            print(f"round {round_number + 1} {name:9}: {figures}", flush=True)
    median = {
        name: {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        for name, runs in results.items()
    }
    report: dict[str, Any] = {
        "figure": "authenticated GetTenant through Envoy, TLS + mTLS vs plaintext",
        "clients": args.clients,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "machine_busy_before_percent": busy,
        "cpus": os.cpu_count(),
        "median": median,
        "calls_per_second_ratio_tls_to_plaintext": round(
            median["tls"]["calls_per_second"] / median["plaintext"]["calls_per_second"], 3
        ),
        "p99_ratio_tls_to_plaintext": round(
            median["tls"]["p99_ms"] / median["plaintext"]["p99_ms"], 3
        ),
        "runs": results,
    }
    print(json.dumps({k: v for k, v in report.items() if k != "runs"}, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
