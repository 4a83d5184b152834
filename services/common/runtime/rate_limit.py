"""Per-tenant call rate limits from each tenant's plan (`calls_per_minute`).

Envoy limits at the edge with static numbers; this limiter applies the
tenant's current plan, which operators change at run time (admission reads
it, within HACS_REVOCATION_SECONDS). It is a token bucket per tenant in this
process: with N replicas a tenant can reach N times its limit, which the edge
bounds (see the README's rate-limit section).
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
    def __init__(self, *, enforce_rate: bool = True) -> None:
        # Off (HACS_RATE_LIMIT_ENABLED=false): only the edge limits rates.
        self._enforce_rate = enforce_rate
        self._buckets: dict[str, _Bucket] = {}

    def take(self, tenant_id: str, standing: TenantStanding) -> None:
        """Take one call from the tenant's bucket, or raise RateLimited."""
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
