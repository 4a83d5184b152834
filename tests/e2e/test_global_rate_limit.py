"""The global rate limit: two Envoys in front of two service processes share one limit.

The layout of a mesh with two edge replicas, on one machine: PostgreSQL (the tenant
registry), one redis-server, two `hacs serve --only tenant` replicas, two
`hacs serve --only ratelimit` replicas and two Envoys, each edge with its own service
replica and its own rate-limit replica. Nothing is shared but the database and Redis, so
a limit that holds across the two edges is held by the counters in Redis. Proves: one
tenant's plan limit (30 a minute, its override) holds for the calls of both edges
together (each edge alone, and each service replica's own bucket, would have allowed 30
more); calls without a token are counted per client across both edges (the credential
methods on one bucket, every other open method on one each); and with Redis gone the
edges fail open or closed as configured, counted on the services' metrics.

`pytest -s` prints the figures.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from hacs.tenant.v1 import tenant_pb2, tenant_service_pb2_grpc
from hacs.tenant.v1 import tenant_service_pb2 as pb

from mesh.envoy.render import EdgeSettings, Upstream, all_in_one_upstreams, render
from tests.support.edge import start_envoy, start_serve
from tests.support.postgres import create_database, free_port
from tests.support.redis import RedisServer

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

TENANT_LIMIT = 30  # calls a minute, the tenant's override of its plan
CREDENTIAL_LIMIT = 20  # IssueToken & co. per client a minute (HACS_EDGE_TOKEN_...)
OPEN_LIMIT = 40  # each other open method per client a minute (HACS_EDGE_OPEN_...)


@dataclass
class Edge:
    address: str
    ratelimit_metrics: str  # the rate-limit replica behind this edge: its /metrics


@dataclass
class Mesh:
    root: Path
    database_url: str
    redis: RedisServer
    edges: list[Edge]
    operator_key: str
    first_replica: tuple[str, str] = ("", "")  # the first service replica's gRPC and HTTP
    processes: list[Any] = field(default_factory=list)

    def add_edge(
        self, name: str, ratelimit_env: dict[str, str], serve_grpc: str, jwks: str
    ) -> Edge:
        """One rate-limit replica and one Envoy in front of `serve_grpc`."""
        folder = self.root / name
        folder.mkdir()
        limiter, limiter_grpc, limiter_http = start_serve(
            f"ratelimit-{name}",
            folder,
            {
                "HACS_SERVICES": "ratelimit",
                "HACS_DATABASE_URL": self.database_url,
                "HACS_AUTO_MIGRATE": "false",
                "HACS_DATA_DIR": str(folder / "ratelimit-data"),
                "HACS_REDIS_URL": self.redis.url,
                "HACS_EDGE_TOKEN_CALLS_PER_MINUTE": str(CREDENTIAL_LIMIT),
                "HACS_EDGE_OPEN_CALLS_PER_MINUTE": str(OPEN_LIMIT),
                **ratelimit_env,
            },
        )
        self.processes.append(limiter)
        port = free_port()
        settings = EdgeSettings(
            upstreams=all_in_one_upstreams(Upstream.parse(serve_grpc)),
            listen_host="127.0.0.1",
            listen_port=port,
            stats_port=free_port(),
            admin_socket=str(folder / "admin.sock"),
            jwks_uri=f"http://{jwks}/.well-known/jwks.json",
            trusted_proxy_hops=1,  # clients told apart by X-Forwarded-For
            access_log_path=str(folder / "access.log"),
            ratelimit=Upstream.parse(limiter_grpc),
            ratelimit_failure_mode=ratelimit_env.get("HACS_RATELIMIT_FAILURE_MODE", "open"),
        )
        self.processes.append(start_envoy(render(settings), folder, port))
        edge = Edge(f"127.0.0.1:{port}", f"http://{limiter_http}/metrics")
        with grpc.insecure_channel(edge.address) as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
        return edge


@pytest.fixture(scope="module")
async def mesh(
    tmp_path_factory: pytest.TempPathFactory, postgres_admin_url: str
) -> AsyncIterator[Mesh]:
    root: Path = tmp_path_factory.mktemp("global-rate-limit")
    redis = RedisServer()
    redis.start()
    database_url = await create_database(postgres_admin_url)
    common = {"HACS_DATABASE_URL": database_url, "HACS_REDIS_URL": redis.url}
    first, first_grpc, first_http = start_serve(
        "tenant-1", root, {**common, "HACS_SERVICES": "tenant", "HACS_DATA_DIR": str(root / "t1")}
    )
    running = Mesh(root, database_url, redis, [], (root / "t1/operator.key").read_text().strip())
    running.processes.append(first)
    running.first_replica = (first_grpc, first_http)
    try:
        second, second_grpc, second_http = start_serve(
            "tenant-2",
            root,
            {
                **common,
                "HACS_SERVICES": "tenant",
                "HACS_DATA_DIR": str(root / "t2"),
                "HACS_AUTO_MIGRATE": "false",
                "HACS_SIGNING_KEYS_DIR": str(root / "t1/keys"),  # one issuer, two replicas
            },
        )
        running.processes.append(second)
        running.edges.append(running.add_edge("edge-1", {}, first_grpc, first_http))
        running.edges.append(running.add_edge("edge-2", {}, second_grpc, second_http))
        yield running
    finally:
        for process in reversed(running.processes):
            process.terminate()
        for process in running.processes:
            process.wait(timeout=30)
        redis.stop()


def call(stub_call: Any, request: Any, metadata: tuple[tuple[str, str], ...] = ()) -> str:
    """The call's status code name; a refusal by the rate limit must say which limit."""
    try:
        stub_call(request, metadata=metadata, timeout=10)
        return "OK"
    except grpc.RpcError as error:
        code: grpc.StatusCode = error.code()  # type: ignore[attr-defined]
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            headers = dict(error.trailing_metadata() or ())  # type: ignore[attr-defined]
            headers |= dict(error.initial_metadata() or ())  # type: ignore[attr-defined]
            return f"RESOURCE_EXHAUSTED:{headers.get('x-hacs-rate-limited', '')}"
        return code.name


@pytest.fixture(scope="module")
def stubs(mesh: Mesh) -> Iterator[list[tenant_service_pb2_grpc.TenantServiceStub]]:
    channels = [grpc.insecure_channel(edge.address) for edge in mesh.edges]
    yield [tenant_service_pb2_grpc.TenantServiceStub(c) for c in channels]
    for channel in channels:
        channel.close()


def wait_until_authenticated(stub: Any, token: str) -> None:
    """The edge fetches the JWKS in the background; the operator's calls (another tenant's
    bucket) wait for it, so none of the measured calls is refused for that."""
    deadline = time.monotonic() + 30
    while call(stub.ListTenants, pb.ListTenantsRequest(), bearer(token)) != "OK":
        assert time.monotonic() < deadline, "the edge never verified a token"
        time.sleep(0.2)


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def test_two_edges_share_one_tenants_limit(mesh: Mesh, stubs: list[Any]) -> None:
    first = stubs[0]
    operator = first.IssueToken(pb.IssueTokenRequest(api_key=mesh.operator_key), timeout=10)
    for stub in stubs:
        wait_until_authenticated(stub, operator.access_token)
    created = first.CreateTenant(
        pb.CreateTenantRequest(
            tenant_id="shared-limit",
            tenant=tenant_pb2.Tenant(
                display_name="Shared limit",
                limits=tenant_pb2.TenantLimits(calls_per_minute=TENANT_LIMIT),
            ),
            admin=tenant_pb2.Actor(display_name="Admin"),
        ),
        metadata=bearer(operator.access_token),
        timeout=10,
    )
    token = first.IssueToken(
        pb.IssueTokenRequest(api_key=created.admin_api_key.secret), timeout=10
    ).access_token
    request = pb.GetTenantRequest(name=created.tenant.name)
    started = time.monotonic()
    seen: list[list[str]] = [[], []]
    for i in range(80):  # alternate the edges, as a load balancer in front of them would
        seen[i % 2].append(call(stubs[i % 2].GetTenant, request, bearer(token)))
    elapsed = time.monotonic() - started
    passed = [codes.count("OK") for codes in seen]
    limited = "RESOURCE_EXHAUSTED:tenant-calls-per-minute"
    refused = [codes.count(limited) for codes in seen]
    print(
        f"\nglobal limit {TENANT_LIMIT}/min (bucket {TENANT_LIMIT}), 80 calls over 2 edges in "
        f"{elapsed:.1f} s: passed {passed[0]} + {passed[1]} = {sum(passed)}, refused "
        f"{refused[0]} + {refused[1]} = {sum(refused)} (per-edge buckets would pass up to "
        f"{2 * TENANT_LIMIT})"
    )
    assert sum(passed) + sum(refused) == 80, seen  # nothing else went wrong
    # The bucket, plus what refilled while the calls ran (half a call a second), and no more.
    assert TENANT_LIMIT <= sum(passed) <= TENANT_LIMIT + int(elapsed * TENANT_LIMIT / 60) + 1
    assert min(passed) > 0 and min(refused) > 0  # both edges counted against the one limit


def test_calls_without_a_token_are_counted_per_client_across_edges(
    mesh: Mesh, stubs: list[Any]
) -> None:
    def flood(method: str, request: Any, client: str, times: int) -> list[str]:
        xff = (("x-forwarded-for", client),)
        return [call(getattr(stubs[i % 2], method), request, xff) for i in range(times)]

    bad_key = pb.IssueTokenRequest(api_key="hk_nobody_x_y")
    tokens = flood("IssueToken", bad_key, "203.0.113.8", CREDENTIAL_LIMIT + 10)
    passed = tokens.count("UNAUTHENTICATED")  # refused as a key, not as a flood
    refused = tokens.count("RESOURCE_EXHAUSTED:client-credential-calls-per-minute")
    print(
        f"\nIssueToken, one client over 2 edges: {passed} answered, {refused} refused "
        f"(limit {CREDENTIAL_LIMIT}/min)"
    )
    assert passed + refused == len(tokens) and CREDENTIAL_LIMIT <= passed <= CREDENTIAL_LIMIT + 1
    # Another client still gets its answers, and the flooding client still gets the JWKS.
    assert set(flood("IssueToken", bad_key, "198.51.100.10", 2)) == {"UNAUTHENTICATED"}
    assert flood("GetJwks", pb.GetJwksRequest(), "203.0.113.8", 2) == ["OK", "OK"]
    # A GetJwks flood stops at its own limit, and starves neither IssueToken nor a neighbour.
    jwks = flood("GetJwks", pb.GetJwksRequest(), "203.0.113.9", OPEN_LIMIT + 10)
    assert OPEN_LIMIT <= jwks.count("OK") <= OPEN_LIMIT + 1
    assert jwks.count("RESOURCE_EXHAUSTED:client-open-calls-per-minute") >= 9
    assert flood("IssueToken", bad_key, "203.0.113.9", 2) == ["UNAUTHENTICATED"] * 2
    assert flood("GetJwks", pb.GetJwksRequest(), "198.51.100.11", 2) == ["OK", "OK"]


def backend_errors(metrics_url: str, mode: str) -> float:
    with urllib.request.urlopen(metrics_url, timeout=5) as reply:
        text = reply.read().decode()
    for line in text.splitlines():
        if line.startswith(f'hacs_ratelimit_backend_errors_total{{failure_mode="{mode}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_with_redis_down_the_edges_fail_open_or_closed_as_configured(
    mesh: Mesh, stubs: list[Any]
) -> None:
    # A third edge whose rate-limit replica (and Envoy) fail closed.
    closed = mesh.add_edge(
        "edge-closed",
        {"HACS_RATELIMIT_FAILURE_MODE": "closed"},
        *mesh.first_replica,
    )
    with grpc.insecure_channel(closed.address) as channel:
        closed_stub = tenant_service_pb2_grpc.TenantServiceStub(channel)
        xff = (("x-forwarded-for", "192.0.2.1"),)
        assert call(closed_stub.GetJwks, pb.GetJwksRequest(), xff) == "OK"  # Redis is up
        mesh.redis.stop()
        open_before = backend_errors(mesh.edges[0].ratelimit_metrics, "open")
        closed_before = backend_errors(closed.ratelimit_metrics, "closed")
        # Open: the call goes on (counted nowhere but in the metric).
        assert call(stubs[0].GetJwks, pb.GetJwksRequest(), xff) == "OK"
        # Closed: refused, as unavailable (not as over a limit).
        assert call(closed_stub.GetJwks, pb.GetJwksRequest(), xff) == "UNAVAILABLE"
    assert backend_errors(mesh.edges[0].ratelimit_metrics, "open") == open_before + 1
    assert backend_errors(closed.ratelimit_metrics, "closed") == closed_before + 1
