"""Per-tenant call rate limits from each tenant's plan (`calls_per_minute`).

Envoy limits at the edge with static numbers; this limiter applies the
tenant's current plan, which operators change at run time. It is a token
bucket per tenant in this process: with N replicas a tenant can reach N times
its limit, which the edge bounds (see the README's rate-limit section).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from services.common.errors import Forbidden, RateLimited

CACHE_SECONDS = 30.0


@dataclass(frozen=True)
class TenantStanding:
    active: bool
    calls_per_minute: int
    max_patients: int = 0


StandingLookup = Callable[[str], Awaitable[TenantStanding | None]]


class _Bucket:
    __slots__ = ("capacity", "tokens", "updated")

    def __init__(self, capacity: float) -> None:
        self.capacity = capacity
        self.tokens = capacity
        self.updated = time.monotonic()


class TenantRateLimiter:
    def __init__(self, lookup: StandingLookup, *, enforce_rate: bool = True) -> None:
        self._lookup = lookup
        # Off (HACS_RATE_LIMIT_ENABLED=false): only the edge limits rates;
        # suspended tenants are still refused.
        self._enforce_rate = enforce_rate
        self._standing: dict[str, tuple[float, TenantStanding | None]] = {}
        self._buckets: dict[str, _Bucket] = {}

    async def check(self, tenant_id: str) -> None:
        """Take one call from the tenant's bucket, or raise RateLimited / Forbidden."""
        standing = await self._standing_of(tenant_id)
        if standing is None or not standing.active:
            raise Forbidden(f"tenant {tenant_id!r} is suspended or does not exist")
        limit = standing.calls_per_minute
        if limit <= 0 or not self._enforce_rate:
            return
        bucket = self._buckets.get(tenant_id)
        if bucket is None or bucket.capacity != limit:
            bucket = self._buckets[tenant_id] = _Bucket(limit)
        now = time.monotonic()
        per_second = limit / 60.0
        bucket.tokens = min(bucket.capacity, bucket.tokens + (now - bucket.updated) * per_second)
        bucket.updated = now
        if bucket.tokens < 1.0:
            raise RateLimited(tenant_id, limit, (1.0 - bucket.tokens) / per_second)
        bucket.tokens -= 1.0

    def forget(self, tenant_id: str) -> None:
        """Drop cached standing (after a plan change in this process)."""
        self._standing.pop(tenant_id, None)

    async def _standing_of(self, tenant_id: str) -> TenantStanding | None:
        cached = self._standing.get(tenant_id)
        now = time.monotonic()
        if cached and now - cached[0] < CACHE_SECONDS:
            return cached[1]
        standing = await self._lookup(tenant_id)
        self._standing[tenant_id] = (now, standing)
        return standing
