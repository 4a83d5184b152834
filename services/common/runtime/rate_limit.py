"""Per-tenant call rate limits from each tenant's plan (`calls_per_minute`), per process.

The tenant's global limit is the edge's: Envoy asks the rate-limit service
(`services/ratelimit`), which counts every replica's calls in Redis. This limiter is
the ceiling of one replica, kept in memory on purpose: it costs no network round trip,
it still holds when Redis is down and the edge fails open, and it bounds calls that do
not come through the edge (one service calling another). It applies the tenant's
current plan (admission reads it, within HACS_REVOCATION_SECONDS) with the same bucket
size as the global limit (HACS_RATELIMIT_BURST_PERCENT), so for calls through the edge
it never refuses what the global limit allowed, unless one replica gets more than a
tenant's whole limit. With N replicas and no edge limit a tenant can reach N times its
limit (docs/security.md, "Global rate limits").
"""

from __future__ import annotations

import time

from services.common.errors import RateLimited
from services.common.runtime.admission import TenantStanding


class _Bucket:
    __slots__ = ("capacity", "tokens", "updated")

    def __init__(self, capacity: float) -> None:
        self.capacity = capacity
        self.tokens = capacity
        self.updated = time.monotonic()


class TenantRateLimiter:
    def __init__(self, *, enforce_rate: bool = True, burst_percent: int = 100) -> None:
        # Off (HACS_RATE_LIMIT_ENABLED=false): only the edge limits rates.
        self._enforce_rate = enforce_rate
        self._burst = burst_percent / 100.0
        self._buckets: dict[str, _Bucket] = {}

    def take(self, tenant_id: str, standing: TenantStanding) -> None:
        """Take one call from the tenant's bucket, or raise RateLimited."""
        limit = standing.calls_per_minute
        if limit <= 0 or not self._enforce_rate:
            return
        capacity = max(1.0, limit * self._burst)
        bucket = self._buckets.get(tenant_id)
        if bucket is None or bucket.capacity != capacity:
            bucket = self._buckets[tenant_id] = _Bucket(capacity)
        now = time.monotonic()
        per_second = limit / 60.0
        bucket.tokens = min(bucket.capacity, bucket.tokens + (now - bucket.updated) * per_second)
        bucket.updated = now
        if bucket.tokens < 1.0:
            raise RateLimited(tenant_id, limit, (1.0 - bucket.tokens) / per_second)
        bucket.tokens -= 1.0
