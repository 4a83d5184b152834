"""The rate-limit service's Prometheus counters (on its `/metrics`, beside the RED metrics)."""

from __future__ import annotations

from prometheus_client import Counter

from services.common.runtime.metrics import REGISTRY

DECISIONS = Counter(
    "hacs_ratelimit_decisions",
    "Calls the global rate limit counted, by bucket kind and decision (ok, over_limit)",
    ["bucket", "decision"],
    registry=REGISTRY,
)
BACKEND_ERRORS = Counter(
    "hacs_ratelimit_backend_errors",
    "Checks that could not be counted (Redis or the tenant registry failed), by the failure "
    "mode that answered them: open (allowed) or closed (refused with UNAVAILABLE)",
    ["failure_mode"],
    registry=REGISTRY,
)
