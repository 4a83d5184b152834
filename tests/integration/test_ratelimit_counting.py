"""The global rate limit's counting, on a real redis-server (no mocks).

Token buckets (GCRA in one Lua script): a bucket's size passes at once, then the refill
rate; weights; two OS processes racing for one bucket get exactly its size between them;
keys expire once full; calls without a tenant are counted per client; the tenant's plan
limit is read from the registry; and when Redis is down the failure mode answers (open:
allowed, closed: UNAVAILABLE), with the metric counting it either way.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from hacs.tenant.v1 import tenant_pb2
from hacs.third_party.envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from hacs.third_party.envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from redis.asyncio import Redis

from services.common.errors import Unavailable
from services.common.runtime.metrics import REGISTRY
from services.ratelimit.buckets import RedisBuckets
from services.ratelimit.limiter import GlobalRateLimiter
from services.ratelimit.policy import CREDENTIAL, OPEN, TENANT, MethodWeights, Policy
from services.ratelimit.wiring import redis_client
from tests.support.harness import make_settings, running_platform
from tests.support.postgres import free_port
from tests.support.redis import RedisServer, redis_url  # noqa: F401  (the fixture)

REPO = Path(__file__).resolve().parents[2]
ANSWER = "/hacs.rag.v1.RagService/Answer"
GET_TENANT = "/hacs.tenant.v1.TenantService/GetTenant"


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:  # noqa: F811
    client = redis_client(redis_url)
    yield client
    await client.aclose()


def fresh() -> str:
    return f"test:{uuid.uuid4().hex}"


async def test_a_bucket_passes_its_size_at_once_then_refills_at_its_rate(redis: Redis) -> None:
    buckets, key = RedisBuckets(redis), fresh()
    # 600 calls a minute (one per 100 ms), a bucket of 5.
    taken = [await buckets.take(key, calls_per_minute=600, size=5, cost=1) for _ in range(7)]
    assert [t.allowed for t in taken] == [True] * 5 + [False] * 2
    assert [t.remaining for t in taken[:5]] == [4, 3, 2, 1, 0]
    assert 0 < taken[5].retry_after_seconds <= 0.1
    assert 0.4 < taken[4].full_in_seconds <= 0.5
    await asyncio.sleep(0.25)  # two tokens back, not three
    again = [await buckets.take(key, calls_per_minute=600, size=5, cost=1) for _ in range(3)]
    assert [t.allowed for t in again] == [True, True, False]


async def test_a_weighted_call_takes_its_weight_and_never_more_than_the_bucket(
    redis: Redis,
) -> None:
    buckets, key = RedisBuckets(redis), fresh()
    costs = [await buckets.take(key, calls_per_minute=1, size=25, cost=10) for _ in range(3)]
    assert [t.allowed for t in costs] == [True, True, False]
    assert costs[1].remaining == 5
    cheap = await buckets.take(key, calls_per_minute=1, size=25, cost=1)
    assert cheap.allowed and cheap.remaining == 4  # the refusal took nothing
    # A call dearer than a whole bucket costs the whole bucket: possible, once full.
    whole = fresh()
    first = await buckets.take(whole, calls_per_minute=1, size=3, cost=10)
    second = await buckets.take(whole, calls_per_minute=1, size=3, cost=1)
    assert first.allowed and first.remaining == 0 and not second.allowed


async def test_keys_expire_when_the_bucket_is_full_again(redis: Redis) -> None:
    buckets, key = RedisBuckets(redis), fresh()
    await buckets.take(key, calls_per_minute=6000, size=10, cost=3)  # 10 ms a token
    ttl = await redis.pttl(f"hacs:ratelimit:{key}")
    assert 0 < ttl <= 30
    await asyncio.sleep(0.05)
    assert await redis.exists(f"hacs:ratelimit:{key}") == 0


RACER = """
import asyncio, json, sys, time
sys.path[:0] = sys.argv[5:]
from redis.asyncio import Redis
from services.ratelimit.buckets import RedisBuckets

async def main(url, key, attempts, start):
    redis = Redis.from_url(url)  # patient timeouts: this counts, it does not time Redis
    buckets = RedisBuckets(redis)
    await redis.incr(key + ":ready")  # both begin when both are ready
    while int(await redis.get(key + ":ready")) < 2 and time.time() < start:
        await asyncio.sleep(0.001)
    async def worker():
        allowed = 0
        for _ in range(attempts // 10):
            taken = await buckets.take(key, calls_per_minute=1, size=400, cost=1)
            allowed += taken.allowed
        return allowed
    results = await asyncio.gather(*(worker() for _ in range(10)))
    await redis.aclose()
    print(json.dumps(sum(results)))

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
"""


def test_two_processes_racing_for_one_bucket_get_exactly_its_size(redis_url: str) -> None:  # noqa: F811
    key = fresh()
    paths = [str(REPO), str(REPO / "clients" / "python")]
    start = str(time.time() + 30)  # the latest either waits for the other
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, redis_url, key, "600", start, *paths],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    allowed = [json.loads(r.communicate(timeout=60)[0]) for r in racers]
    assert all(r.returncode == 0 for r in racers)
    # 1,200 attempts, a bucket of 400 refilled at one a minute: 400 pass, no more, no fewer.
    assert sum(allowed) == 400, allowed
    assert all(a > 0 for a in allowed), allowed  # both really raced


def limiter(
    redis: Redis,
    *,
    tenant_limit: int = 60,
    failure_mode: str = "open",
    burst_percent: int = 100,
    credential: int = 3,
    open_calls: int = 4,
) -> GlobalRateLimiter:
    async def plan(tenant_id: str) -> int:
        return tenant_limit

    policy = Policy(
        tenant_limit=plan,
        weights=MethodWeights.parse("RagService/Answer=10,SearchService/*=2"),
        credential_calls_per_minute=credential,
        open_calls_per_minute=open_calls,
    )
    return GlobalRateLimiter(
        policy, RedisBuckets(redis), burst_percent=burst_percent, failure_mode=failure_mode
    )


def tenant_call(tenant: str, method: str = GET_TENANT) -> list[tuple[str, str]]:
    return [("tenant", tenant), ("method", method)]


def anonymous(address: str, method: str) -> list[tuple[str, str]]:
    credential = method.rsplit("/", 1)[-1] in ("IssueToken", "ExchangeToken", "SignInWithPassword")
    if credential or method.startswith("/auth/"):
        return [("caller", "anonymous"), ("remote_address", address), ("open", "token")]
    return [
        ("caller", "anonymous"),
        ("remote_address", address),
        ("open", "other"),
        ("method", method),
    ]


async def allowed(limit: GlobalRateLimiter, descriptor: list[tuple[str, str]], times: int) -> int:
    verdicts = [(await limit.check([descriptor]))[0] for _ in range(times)]
    return sum(v.allowed for v in verdicts)


async def test_a_tenants_limit_with_burst_and_weights(redis: Redis) -> None:
    tenant = uuid.uuid4().hex[:8]
    # 60 a minute, burst 50 %: 30 at once; an Answer costs 10.
    limit = limiter(redis, tenant_limit=60, burst_percent=50)
    assert await allowed(limit, tenant_call(tenant, ANSWER), 4) == 3
    [verdict] = await limit.check([tenant_call(tenant)])
    assert not verdict.allowed  # the Answers spent the bucket: a Get is refused too
    assert verdict.charge is not None and verdict.charge.kind == TENANT
    assert verdict.charge.calls_per_minute == 60 and verdict.size == 30
    other = uuid.uuid4().hex[:8]
    assert await allowed(limit, tenant_call(other), 31) == 30  # another tenant: its own


async def test_calls_without_a_tenant_are_limited_per_client(redis: Redis) -> None:
    limit = limiter(redis, credential=3, open_calls=4)
    client, neighbour = f"203.0.113.{uuid.uuid4().int % 250}", "198.51.100.9"
    # The credential methods and browser sign-in share one bucket per client.
    sign_ins = [
        "/hacs.tenant.v1.TenantService/IssueToken",
        "/hacs.tenant.v1.TenantService/ExchangeToken",
        "/hacs.tenant.v1.TenantService/SignInWithPassword",
        "/auth/oidc/ward/hospital/callback?code=x&state=y",
    ]
    results = [await allowed(limit, anonymous(client, m), 1) for m in sign_ins]
    assert results == [1, 1, 1, 0]
    [refused] = await limit.check([anonymous(client, sign_ins[0])])
    assert refused.charge is not None and refused.charge.kind == CREDENTIAL
    # A flood of GetJwks from that client starves neither its health checks nor anyone's.
    jwks = "/hacs.tenant.v1.TenantService/GetJwks"
    assert await allowed(limit, anonymous(client, jwks), 10) == 4
    assert await allowed(limit, anonymous(client, "/grpc.health.v1.Health/Check"), 4) == 4
    assert await allowed(limit, anonymous(neighbour + client, jwks), 4) == 4
    [over] = await limit.check([anonymous(client, jwks)])
    assert over.charge is not None and over.charge.kind == OPEN
    # A query string does not make a bucket of its own.
    assert await allowed(limit, anonymous(client, jwks + "?fresh=1"), 1) == 0


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_redis_down_fails_open_or_closed_and_is_counted_either_way() -> None:
    server = RedisServer()
    server.start()
    client = redis_client(server.url)
    try:
        opened = limiter(client, failure_mode="open")
        closed = limiter(client, failure_mode="closed")
        tenant = uuid.uuid4().hex[:8]
        assert (await opened.check([tenant_call(tenant)]))[0].allowed  # counted in Redis
        server.stop()
        before = {
            mode: counter("hacs_ratelimit_backend_errors_total", failure_mode=mode)
            for mode in ("open", "closed")
        }
        started = time.monotonic()
        [verdict] = await opened.check([tenant_call(tenant)])
        assert verdict.allowed and verdict.charge is None  # let through, not counted
        with pytest.raises(Unavailable):
            await closed.check([tenant_call(tenant)])
        assert time.monotonic() - started < 1.0  # answered well inside Envoy's wait
        for mode in ("open", "closed"):
            assert counter("hacs_ratelimit_backend_errors_total", failure_mode=mode) == (
                before[mode] + 1
            )
    finally:
        await client.aclose()
        server.stop()


def descriptor(*entries: tuple[str, str]) -> ratelimit_pb2.RateLimitDescriptor:
    return ratelimit_pb2.RateLimitDescriptor(
        entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key=k, value=v) for k, v in entries]
    )


async def test_hacs_serve_hosts_the_service_with_each_tenants_plan_limit(
    tmp_path: Path,
    redis_url: str,  # noqa: F811
) -> None:
    """`tenant,ratelimit` in one process: the limit is the tenant's plan (with its override)."""
    settings = make_settings(
        tmp_path / "data",
        f"sqlite+aiosqlite:///{tmp_path / 'hacs.db'}",
        services="tenant,ratelimit",
        redis_url=redis_url,
        ratelimit_burst_percent="100",
    )
    async with running_platform(settings) as hacs:
        small = await hacs.new_tenant(limits=tenant_pb2.TenantLimits(calls_per_minute=5))
        big = await hacs.new_tenant()  # the free plan: 600 a minute
        stub = rls_pb2_grpc.RateLimitServiceStub(hacs.channel)
        codes = []
        for _ in range(7):
            reply = await stub.ShouldRateLimit(
                rls_pb2.RateLimitRequest(
                    domain="hacs",
                    descriptors=[descriptor(("tenant", small.tenant_id), ("method", GET_TENANT))],
                ),
                timeout=5,
            )
            codes.append(reply.overall_code)
        ok, over = rls_pb2.RateLimitResponse.OK, rls_pb2.RateLimitResponse.OVER_LIMIT
        assert codes == [ok] * 5 + [over] * 2
        assert reply.statuses[0].current_limit.requests_per_unit == 5
        assert [(h.key, h.value) for h in reply.response_headers_to_add] == [
            ("x-hacs-rate-limited", TENANT)
        ]
        reply = await stub.ShouldRateLimit(
            rls_pb2.RateLimitRequest(
                domain="hacs",
                descriptors=[descriptor(("tenant", big.tenant_id), ("method", ANSWER))],
            ),
            timeout=5,
        )
        assert reply.overall_code == ok
        assert reply.statuses[0].current_limit.requests_per_unit == 600
        assert reply.statuses[0].limit_remaining == 590  # an Answer costs 10


async def test_closed_mode_answers_unavailable_over_grpc(tmp_path: Path) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    settings = make_settings(
        tmp_path / "data",
        f"sqlite+aiosqlite:///{tmp_path / 'hacs.db'}",
        services="ratelimit",
        redis_url=dead,
        ratelimit_failure_mode="closed",
    )
    async with running_platform(settings) as hacs:
        stub = rls_pb2_grpc.RateLimitServiceStub(hacs.channel)
        request = rls_pb2.RateLimitRequest(
            domain="hacs", descriptors=[descriptor(("tenant", "anyone"), ("method", GET_TENANT))]
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ShouldRateLimit(request, timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
