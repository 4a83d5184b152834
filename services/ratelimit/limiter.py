"""The global limiter: each descriptor's bucket taken from, or the failure mode applied.

When a bucket cannot be counted (Redis unreachable or slow, the tenant registry failing),
HACS_RATELIMIT_FAILURE_MODE decides, here as in Envoy (`failure_mode_deny`): `open` answers
OK, so the call goes on (the services' own per-process buckets still bound a tenant);
`closed` answers UNAVAILABLE, which Envoy turns into a refusal of the call. Either way
`hacs_ratelimit_backend_errors_total` counts it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from services.common.errors import Unavailable
from services.ratelimit import metrics
from services.ratelimit.buckets import RedisBuckets, bucket_size
from services.ratelimit.policy import Charge, Policy

log = logging.getLogger(__name__)

FAILURE_LOG_EVERY_SECONDS = 10.0


@dataclass(frozen=True)
class Verdict:
    """The answer for one descriptor; `charge` is None when nothing limits it."""

    allowed: bool
    charge: Charge | None = None
    size: int = 0
    remaining: int = 0
    full_in_seconds: float = 0.0


class GlobalRateLimiter:
    def __init__(
        self, policy: Policy, buckets: RedisBuckets, *, burst_percent: int, failure_mode: str
    ) -> None:
        if failure_mode not in ("open", "closed"):
            raise ValueError(f"failure_mode must be open or closed, got {failure_mode!r}")
        self._policy = policy
        self._buckets = buckets
        self._burst_percent = burst_percent
        self._failure_mode = failure_mode
        self._last_logged = float("-inf")
        metrics.BACKEND_ERRORS.labels(failure_mode)  # exported from the start, at 0

    async def check(
        self, descriptors: Sequence[Sequence[tuple[str, str]]], hits: int = 1
    ) -> list[Verdict]:
        """One verdict per descriptor; all of them are charged (Envoy sends one per call)."""
        try:
            return [await self._check_one(entries, max(1, hits)) for entries in descriptors]
        except Exception as exc:  # any backend fault: the failure mode answers
            metrics.BACKEND_ERRORS.labels(self._failure_mode).inc()
            self._log_failure(exc)
            if self._failure_mode == "closed":
                raise Unavailable(
                    "the global rate limit cannot be counted now; try again shortly"
                ) from exc
            return [Verdict(allowed=True) for _ in descriptors]

    async def _check_one(self, entries: Sequence[tuple[str, str]], hits: int) -> Verdict:
        charge = await self._policy.charge(entries, hits)
        if charge is None:
            return Verdict(allowed=True)
        size = bucket_size(charge.calls_per_minute, self._burst_percent)
        taken = await self._buckets.take(
            charge.key, calls_per_minute=charge.calls_per_minute, size=size, cost=charge.cost
        )
        metrics.DECISIONS.labels(charge.kind, "ok" if taken.allowed else "over_limit").inc()
        return Verdict(
            allowed=taken.allowed,
            charge=charge,
            size=int(size),
            remaining=taken.remaining,
            full_in_seconds=taken.full_in_seconds,
        )

    def _log_failure(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._last_logged >= FAILURE_LOG_EVERY_SECONDS:  # not once per call
            self._last_logged = now
            log.warning(
                "global rate limit not counted (failure mode %s): %s: %s",
                self._failure_mode,
                type(exc).__name__,
                exc,
            )
