"""Prometheus metrics: RED (rate, errors, duration) per method and per tenant.

The per-tenant counter lets operators see who drives load and errors; the
latency histogram is per method only, to keep its series count bounded.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "hacs_grpc_requests",
    "gRPC calls handled, by method, status code and tenant",
    ["service", "method", "code", "tenant"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "hacs_grpc_request_duration_seconds",
    "Time from the call's start to its status, by method",
    ["service", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
IN_FLIGHT = Gauge(
    "hacs_grpc_requests_in_flight",
    "Calls being served now, by method",
    ["service", "method"],
    registry=REGISTRY,
)


def split_method(full_method: str) -> tuple[str, str]:
    """'/hacs.tenant.v1.TenantService/GetTenant' -> (service, method) names."""
    service, _, method = full_method.lstrip("/").partition("/")
    return service, method
