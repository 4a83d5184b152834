"""The platform a benchmark measures: PostgreSQL, the record service, Envoy in front.

The mesh layout of tests/e2e/test_mesh_mode.py on one machine: the record
service runs alone in its `hacs serve --only records` process (so its memory
and CPU are its own), the tenant service in another (tokens, JWKS), Envoy
routes to both. Built from the same pieces the end-to-end tests use
(tests/support, the Envoy renderer), so a benchmark measures what ships.

What differs from the tests is said here and printed by every script:
PostgreSQL is restarted with durable, production-like settings (the test
server runs with fsync=off), the service's own rate limiter is off and Envoy's
per-tenant limit is set far above what the benchmark sends, so the figures are
the platform's, not a quota's.
"""

from __future__ import annotations

import asyncio
import os
import platform as host
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import grpc
from hacs.client import HacsClient
from hacs.records.v1 import record_service_pb2 as records_pb
from hacs.tenant.v1 import tenant_pb2
from hacs.tenant.v1 import tenant_service_pb2 as tenant_pb

from bench.support.measure import machine_busy_percent
from mesh.envoy.render import EdgeSettings, Upstream, all_in_one_upstreams, render
from tests.support.edge import start_envoy, start_serve
from tests.support.postgres import (
    APP_PASSWORD,
    PostgresServer,
    create_database,
    free_port,
)

REPO = Path(__file__).resolve().parents[2]

# Durable and sized for a 1M-patient tenant on a 24 GiB machine. fsync and
# synchronous_commit stay on: a load figure without them is not a load figure.
POSTGRES_SETTINGS = {
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "shared_buffers": "4GB",
    "effective_cache_size": "16GB",
    "work_mem": "16MB",
    "maintenance_work_mem": "512MB",
    "max_wal_size": "8GB",
    "checkpoint_timeout": "15min",
}

# Far above anything the benchmark sends: the edge limit is not what is measured.
EDGE_CALLS_PER_MINUTE = 100_000_000
TENANT_CALLS_PER_MINUTE = 100_000_000

RECORDS = "hacs.records.v1.RecordService"


@dataclass
class Platform:
    edge: str
    tenant_id: str
    admin_key: str
    service: subprocess.Popen[bytes]  # the RecordService process
    processes: list[subprocess.Popen[bytes]]  # Envoy, tenant service, record service
    database_url: str
    admin_url: str
    run_dir: Path
    service_env: dict[str, str]
    postgres_settings: dict[str, str]
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def other_pids(self) -> tuple[int, ...]:
        """Envoy and the tenant service: ours, but not the process measured."""
        return tuple(p.pid for p in self.processes if p is not self.service)

    @property
    def parent(self) -> str:
        return f"tenants/{self.tenant_id}"

    def client(self) -> HacsClient:
        """A client of the tenant's administrator, through Envoy."""
        return HacsClient(self.edge, api_key=self.admin_key, default_timeout=120)

    def stop_edge_and_services(self) -> None:
        """Leave only PostgreSQL running (for measurements nothing else may disturb)."""
        _stop(self.processes)

    def parameters(self) -> dict[str, object]:
        """What the platform was measured with, for the printed block and the JSON."""
        return {
            "layout": "mesh on one machine: Envoy -> `hacs serve --only records` (measured) "
            "and `hacs serve --only tenant` (tokens, JWKS), one PostgreSQL",
            "record_service_env": self.service_env,
            "envoy_default_calls_per_minute": EDGE_CALLS_PER_MINUTE,
            "tenant_plan": "PLAN_ENTERPRISE",
            "tenant_calls_per_minute": TENANT_CALLS_PER_MINUTE,
            "postgres_settings": self.postgres_settings,
            "run_dir": str(self.run_dir),
            **self.versions,
        }


async def _tune_postgres(server: PostgresServer, settings: dict[str, str]) -> None:
    conn = await asyncpg.connect(server.admin_url)
    try:
        for name, value in settings.items():
            await conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
    finally:
        await conn.close()
    server.restart()


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _envoy_version() -> str:
    envoy = Path(sys.executable).parent / "envoy"
    out = subprocess.run([str(envoy), "--version"], capture_output=True, text=True).stdout
    # "envoy  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"
    parts = out.split("version:")[-1].strip().split("/")
    return parts[1] if len(parts) > 1 else out.strip()


def _git_revision() -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(REPO), *args], capture_output=True, text=True
        ).stdout.strip()

    revision = git("rev-parse", "--short", "HEAD") or "unknown"
    return revision + (" + uncommitted changes" if git("status", "--porcelain") else "")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return host.processor() or "unknown"


def _mem_total_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024 / 1024, 1)
    return 0.0


async def _create_tenant(edge: str, operator_key: str, tenant_id: str, max_patients: int) -> str:
    """Create the benchmark tenant as the operator; returns its administrator's API key."""
    request = tenant_pb.CreateTenantRequest(
        tenant_id=tenant_id,
        tenant=tenant_pb2.Tenant(
            display_name=f"Benchmark tenant {tenant_id}",
            plan=tenant_pb2.PLAN_ENTERPRISE,
            limits=tenant_pb2.TenantLimits(
                max_patients=max_patients, calls_per_minute=TENANT_CALLS_PER_MINUTE
            ),
        ),
        admin=tenant_pb2.Actor(display_name="Benchmark Loader"),
    )
    deadline = time.monotonic() + 60
    async with HacsClient(edge, api_key=operator_key) as operator:
        while True:
            try:
                reply = await operator.tenant.CreateTenant(request, timeout=30)
                return reply.admin_api_key.secret
            except grpc.aio.AioRpcError as error:
                # Envoy answers UNAUTHENTICATED until its first JWKS fetch lands.
                if error.code() != grpc.StatusCode.UNAUTHENTICATED or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)


async def _first_record_call(edge: str, admin_key: str, tenant_id: str) -> None:
    """One call alone before the concurrent ones, so the record process loads the JWKS.

    Calls that reach a fresh record process while its first JWKS fetch is in
    flight are refused with "token signed by an unknown key" (RemoteJwks in
    services/common/tokens.py skips the lock while a fetch is under way).
    """
    name = f"tenants/{tenant_id}/patients/warm-up"
    async with HacsClient(edge, api_key=admin_key) as admin:
        try:
            await admin.records.GetRecord(records_pb.GetRecordRequest(name=name), timeout=30)
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise


def _wait_for_edge(edge: str, envoy: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        if envoy.poll() is not None:
            raise RuntimeError(f"envoy exited:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            with grpc.insecure_channel(edge) as channel:
                grpc.channel_ready_future(channel).result(timeout=2)
            return
        except grpc.FutureTimeoutError:
            if time.monotonic() > deadline:
                raise


@asynccontextmanager
async def running_platform(
    *,
    tenant_id: str = "bench",
    max_patients: int = 10_000_000,
    postgres_settings: dict[str, str] | None = None,
    service_env: dict[str, str] | None = None,
    keep_run_dir: bool = True,
) -> AsyncIterator[Platform]:
    """PostgreSQL + `hacs serve` + Envoy on free loopback ports, with one tenant created."""
    settings = {**POSTGRES_SETTINGS, **(postgres_settings or {})}
    run_dir = Path(tempfile.mkdtemp(prefix="hacs-bench-"))
    server = PostgresServer()
    processes: list[subprocess.Popen[bytes]] = []
    busy_before = machine_busy_percent()
    if busy_before > 25:
        print(
            f"WARNING: the machine was {busy_before} % busy before the benchmark started; "
            "other work will distort the figures",
            file=sys.stderr,
        )
    try:
        server.start()
        await _tune_postgres(server, settings)
        database_url = await create_database(server.admin_url)
        conn = await asyncpg.connect(server.admin_url)
        try:
            pg_version = await conn.fetchval("SHOW server_version")
        finally:
            await conn.close()

        common = {"HACS_DATABASE_URL": database_url, "HACS_DATA_DIR": str(run_dir / "data")}
        # The tenant service issues the tokens and owns the schema migrations.
        tenant, tenant_grpc, tenant_http = start_serve(
            "hacs-serve-tenant", run_dir, {**common, "HACS_SERVICES": "tenant"}
        )
        processes.append(tenant)
        jwks = f"http://{tenant_http}/.well-known/jwks.json"
        env = {
            **common,
            "HACS_SERVICES": "records",
            "HACS_DATA_DIR": str(run_dir / "records-data"),
            "HACS_AUTO_MIGRATE": "false",
            "HACS_JWKS_URL": jwks,
            # The plan's calls_per_minute is not what is measured; Envoy still checks tokens.
            "HACS_RATE_LIMIT_ENABLED": "false",
            **(service_env or {}),
        }
        service, records_grpc, _ = start_serve("hacs-serve-records", run_dir, env)
        processes.append(service)
        upstreams = all_in_one_upstreams(Upstream.parse(tenant_grpc))
        upstreams[RECORDS] = Upstream.parse(records_grpc)
        edge_port = free_port()
        edge = EdgeSettings(
            upstreams=upstreams,
            listen_host="127.0.0.1",
            listen_port=edge_port,
            stats_port=free_port(),
            jwks_uri=jwks,
            default_calls_per_minute=EDGE_CALLS_PER_MINUTE,
            token_calls_per_minute=EDGE_CALLS_PER_MINUTE,
            open_calls_per_minute=EDGE_CALLS_PER_MINUTE,
            access_log_path=str(run_dir / "envoy-access.log"),
        )
        envoy = start_envoy(render(edge), run_dir, edge_port)
        processes.insert(0, envoy)
        edge_addr = f"127.0.0.1:{edge_port}"
        _wait_for_edge(edge_addr, envoy, run_dir / "envoy.log")
        operator_key = (run_dir / "data" / "operator.key").read_text().strip()
        admin_key = await _create_tenant(edge_addr, operator_key, tenant_id, max_patients)
        await _first_record_call(edge_addr, admin_key, tenant_id)

        shown_env = {**env, "HACS_DATABASE_URL": database_url.replace(APP_PASSWORD, "***")}
        shown_env.setdefault(
            "HACS_DATABASE_POOL_SIZE",
            os.environ.get("HACS_DATABASE_POOL_SIZE", "10 (default; max_overflow = pool size)"),
        )
        platform = Platform(
            edge=edge_addr,
            tenant_id=tenant_id,
            admin_key=admin_key,
            service=service,
            processes=processes,
            database_url=database_url,
            admin_url=server.admin_url,
            run_dir=run_dir,
            service_env=shown_env,
            postgres_settings=settings,
            versions={
                "machine_cores": os.cpu_count() or 0,
                "machine_cpu": _cpu_model(),
                "machine_memory_gib": _mem_total_gib(),
                "machine_busy_before_start_percent": busy_before,
                "postgresql_version": pg_version,
                "envoy_version": _envoy_version(),
                "python_version": host.python_version(),
                "grpcio_version": grpc.__version__,
                "hacs_revision": _git_revision(),
            },
        )
        yield platform
    finally:
        _stop(processes)
        server.stop()
        if not keep_run_dir:
            shutil.rmtree(run_dir, ignore_errors=True)
