"""The whole mesh on loopback, one `hacs serve --only X` process per chart Deployment.

Wired as charts/hacs wires the pods: a migration run first (the chart's Helm hook,
`hacs migrate`), then every process with HACS_AUTO_MIGRATE=false, the tenant
process's JWKS URL (HACS_JWKS_URL), PostgreSQL, Redis and a Milvus server; the
tenant process installs the operator's and the services' API keys from
HACS_BOOTSTRAP_OPERATOR_KEY / HACS_BOOTSTRAP_SERVICE_KEY; search, rag, memory and the
dedicated indexer (`--only search` with HACS_INDEXER_ENABLED=true, while the search
process has it false) embed through the embedding process (HACS_EMBEDDING_URL) with
the services' key (HACS_SERVICE_API_KEY) and a token from the tenant process
(HACS_TENANT_URL). The chart's shared settings (JSON logs at INFO, offline Hugging
Face) are the processes' too.

One difference, printed with the figures: the only Milvus server that installs here
is the `milvus` wheel's 2.3.5, which has no BM25, so HACS_LEXICAL_ENGINE=milvus (the
chart's) cannot start; the lexical engine is the SQLite one, and the search and indexer
processes share its file (one data directory), as search replicas do without a 2.5
server. Every other process has its own data directory, as a pod has its emptyDir.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from hacs.tenant.v1 import tenant_service_pb2 as tpb
from hacs.tenant.v1 import tenant_service_pb2_grpc

from services.tenant.api_keys import new_secret
from tests.support.edge import start_serve
from tests.support.milvus import MilvusServer
from tests.support.postgres import PostgresServer, create_database
from tests.support.redis import RedisServer

REPO = Path(__file__).resolve().parents[2]
# The chart's Deployments: every service, and the dedicated record indexer.
COMPONENTS = ("tenant", "records", "embedding", "search", "rag", "memory", "sync", "indexer")
EMBEDDING_CALLERS = ("search", "rag", "memory", "indexer")  # hacs.embeddingCallers
# charts/hacs/values.yaml: requests and limits (serviceDefaults; embedding its own).
CHART_RESOURCES = {
    name: {"request_cpu": 0.5, "request_mib": 768, "limit_cpu": 2.0, "limit_mib": 2048}
    for name in COMPONENTS
} | {"embedding": {"request_cpu": 1.0, "request_mib": 1536, "limit_cpu": 2.0, "limit_mib": 2048}}
# The chart's ConfigMap, less what a loopback run sets itself (listen addresses, data dir).
CHART_CONFIG = {
    "HACS_LOG_FORMAT": "json",
    "HACS_LOG_LEVEL": "INFO",
    "HACS_AUTO_MIGRATE": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}


@dataclass
class Pod:
    name: str
    process: subprocess.Popen[bytes]
    grpc: str
    http: str
    env: dict[str, str]
    ready_seconds: float


@dataclass
class Mesh:
    run_dir: Path
    operator_key: str
    pods: dict[str, Pod] = field(default_factory=dict)
    stores: dict[str, str] = field(default_factory=dict)  # what each store is, for the report

    def address(self, component: str) -> str:
        return self.pods[component].grpc

    def pids(self) -> dict[str, int]:
        return {name: pod.process.pid for name, pod in self.pods.items()}

    def parameters(self) -> dict[str, object]:
        def shown(env: dict[str, str]) -> dict[str, str]:
            hidden = ("KEY", "DATABASE_URL")
            return {k: ("***" if any(h in k for h in hidden) else v) for k, v in env.items()}

        return {
            "stores": self.stores,
            "pods": {name: shown(pod.env) for name, pod in self.pods.items()},
            "ready_seconds": {name: pod.ready_seconds for name, pod in self.pods.items()},
            "run_dir": str(self.run_dir),
        }


def _start(name: str, run_dir: Path, env: dict[str, str]) -> Pod:
    started = time.monotonic()
    process, grpc_addr, http_addr = start_serve(name, run_dir, env, cwd=REPO)
    return Pod(name, process, grpc_addr, http_addr, env, round(time.monotonic() - started, 1))


def _start_together(run_dir: Path, envs: dict[str, dict[str, str]]) -> dict[str, Pod]:
    """Start several processes at once (each waits for its /readyz); all or none."""
    with ThreadPoolExecutor(len(envs)) as pool:
        futures = {name: pool.submit(_start, name, run_dir, env) for name, env in envs.items()}
    pods, failures = {}, []
    for name, future in futures.items():
        try:
            pods[name] = future.result()
        except Exception as error:  # reported together below
            failures.append(f"{name}: {error}")
    if failures:
        _stop_pods(list(pods.values()))
        raise RuntimeError("\n".join(failures))
    return pods


def _stop_pods(pods: list[Pod]) -> None:
    for pod in pods:
        if pod.process.poll() is None:
            pod.process.terminate()
    for pod in pods:
        try:
            pod.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pod.process.kill()
            pod.process.wait()


def _migrate(env: dict[str, str], run_dir: Path) -> None:
    log = run_dir / "migrate.log"
    with log.open("wb") as out:
        done = subprocess.run(
            [sys.executable, "-m", "services.cli", "migrate"],
            env={**os.environ, **env},
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    if done.returncode != 0:
        raise RuntimeError(f"hacs migrate failed:\n{log.read_text(errors='replace')[-3000:]}")


async def _check_service_key(tenant_grpc: str, service_key: str) -> None:
    """The services' key must be installed: the callers' embedding calls depend on it."""
    async with grpc.aio.insecure_channel(tenant_grpc) as channel:
        tenants = tenant_service_pb2_grpc.TenantServiceStub(channel)
        try:
            await tenants.IssueToken(tpb.IssueTokenRequest(api_key=service_key), timeout=30)
        except grpc.aio.AioRpcError as error:
            raise RuntimeError(
                "the tenant process did not install HACS_BOOTSTRAP_SERVICE_KEY "
                f"({error.code().name}: {error.details()})"
            ) from error


@asynccontextmanager
async def running_mesh(*, log_level: str = "INFO") -> AsyncIterator[Mesh]:
    """PostgreSQL, Redis, a Milvus server and the eight processes; everything stopped after."""
    run_dir = Path(tempfile.mkdtemp(prefix="hacs-mesh-"))
    postgres, redis, milvus = PostgresServer(), RedisServer(), MilvusServer()
    pods: list[Pod] = []
    # Milvus takes ~20 s to start: alongside PostgreSQL, Redis and the migration.
    milvus_start = asyncio.create_task(asyncio.to_thread(milvus.start))
    try:
        postgres.start()
        redis.start()
        database_url = await create_database(postgres.admin_url)
        operator_key, service_key = new_secret("platform")[1], new_secret("platform")[1]
        common = {
            **CHART_CONFIG,
            "HACS_LOG_LEVEL": log_level,
            "HACS_DATABASE_URL": database_url,
            "HACS_REDIS_URL": redis.url,
            "HACS_LEXICAL_ENGINE": "sqlite",  # the chart's `milvus` needs a 2.5 server
        }
        await asyncio.to_thread(_migrate, common, run_dir)
        await milvus_start
        common["HACS_MILVUS_URI"] = milvus.uri
        mesh = Mesh(
            run_dir,
            operator_key,
            stores={
                "postgresql": "tests/support/postgres.py (fsync=off test server)",
                "redis": "tests/support/redis.py",
                "milvus": f"Milvus server {milvus.uri} (tests/support/milvus.py, 2.3.5)",
                "lexical_engine": "sqlite (HACS_LEXICAL_ENGINE=milvus needs Milvus 2.5+)",
            },
        )

        def env(component: str) -> dict[str, str]:
            hosts = "search" if component == "indexer" else component
            values = {
                **common,
                "HACS_SERVICES": hosts,
                # search and the indexer share the SQLite lexical file (see above)
                "HACS_DATA_DIR": str(run_dir / f"data-{hosts}"),
            }
            if component == "tenant":
                values["HACS_BOOTSTRAP_OPERATOR_KEY"] = operator_key
                values["HACS_BOOTSTRAP_SERVICE_KEY"] = service_key
            else:
                values["HACS_JWKS_URL"] = f"http://{mesh.pods['tenant'].http}/.well-known/jwks.json"
            if component in ("search", "indexer"):
                values["HACS_INDEXER_ENABLED"] = "true" if component == "indexer" else "false"
            if component in EMBEDDING_CALLERS:
                values["HACS_EMBEDDING_URL"] = mesh.pods["embedding"].grpc
                values["HACS_TENANT_URL"] = mesh.pods["tenant"].grpc
                values["HACS_SERVICE_API_KEY"] = service_key
            return values

        mesh.pods["tenant"] = await asyncio.to_thread(_start, "tenant", run_dir, env("tenant"))
        pods.append(mesh.pods["tenant"])
        await _check_service_key(mesh.pods["tenant"].grpc, service_key)
        for wave in (("records", "embedding", "sync"), EMBEDDING_CALLERS):
            started = await asyncio.to_thread(
                _start_together, run_dir, {name: env(name) for name in wave}
            )
            mesh.pods.update(started)
            pods += started.values()
        mesh.pods = {name: mesh.pods[name] for name in COMPONENTS}
        yield mesh
    finally:
        _stop_pods(pods)
        with contextlib.suppress(BaseException):
            await milvus_start  # a start under way is let finish, so that it can be stopped
        # The whole process group, SIGKILL for what outlives SIGTERM (etcd's port 2380).
        _quietly(milvus.stop)
        _quietly(redis.stop)
        _quietly(postgres.stop)


def _quietly(stop: Callable[[], None]) -> None:
    """Stop a store; a failure is printed, and the next store is still stopped."""
    try:
        stop()
    except Exception as error:  # the run's own error matters more
        print(f"warning: {stop.__qualname__}: {error}", file=sys.stderr)
