"""Builds the rate-limit servicer: Redis buckets, the tenants' plan limits, the settings."""

from __future__ import annotations

import grpc
from hacs.third_party.envoy.service.ratelimit.v3 import rls_pb2_grpc
from redis.asyncio import BlockingConnectionPool, Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from services.kernel.modules import Kernel
from services.kernel.tenancy.plans import DEFAULT_PLAN, PLANS
from services.ratelimit.buckets import RedisBuckets
from services.ratelimit.limiter import GlobalRateLimiter
from services.ratelimit.policy import MethodWeights, Policy
from services.ratelimit.servicer import RateLimitServicer

KERNEL_MODULES = ("tenancy",)

# Envoy waits 500 ms for an answer (mesh/envoy/render.py); a Redis that has not answered
# in 200 ms (one retry: 400 ms) counts as down, and the failure mode answers in time.
REDIS_TIMEOUT_SECONDS = 0.2
# Checks in flight share these connections (a check waits for a free one, up to the
# timeout above): one script run is a few microseconds in Redis.
REDIS_CONNECTIONS = 32


def redis_client(url: str) -> Redis:
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=REDIS_CONNECTIONS,
        timeout=REDIS_TIMEOUT_SECONDS,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), 1),
    )
    return Redis.from_pool(pool)


async def rate_limit_servicer(kernel: Kernel) -> RateLimitServicer:
    platform = kernel.platform
    settings = platform.settings
    if not settings.redis_url:
        raise RuntimeError("the rate-limit service counts in Redis: set HACS_REDIS_URL")
    redis = redis_client(settings.redis_url)
    platform.on_close(redis.aclose)
    default = PLANS[DEFAULT_PLAN].calls_per_minute

    async def tenant_limit(tenant_id: str) -> int:
        """The tenant's plan limit as admission reads it (remembered for at most
        HACS_REVOCATION_SECONDS, forgotten at once when the tenant service announces a
        change); a tenant the registry does not know gets the default plan's."""
        standing = await platform.admission.standing(tenant_id)
        return standing.calls_per_minute if standing and standing.calls_per_minute else default

    policy = Policy(
        tenant_limit=tenant_limit,
        weights=MethodWeights.parse(settings.ratelimit_weights),
        credential_calls_per_minute=settings.edge_token_calls_per_minute,
        open_calls_per_minute=settings.edge_open_calls_per_minute,
    )
    limiter = GlobalRateLimiter(
        policy,
        RedisBuckets(redis),
        burst_percent=settings.ratelimit_burst_percent,
        failure_mode=settings.ratelimit_failure_mode,
    )
    return RateLimitServicer(limiter)


async def register(kernel: Kernel, server: grpc.aio.Server) -> None:
    rls_pb2_grpc.add_RateLimitServiceServicer_to_server(await rate_limit_servicer(kernel), server)
