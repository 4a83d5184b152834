"""Prometheus metrics: RED (rate, errors, duration) per method and per tenant.

The per-tenant counter lets operators see who drives load and errors; the
latency histogram is per method only, to keep its series count bounded.

The workers of `hacs serve --workers N` share one metrics port, and a scrape reaches
whichever worker the kernel picks: each worker writes its values to files in
PROMETHEUS_MULTIPROC_DIR (set by the supervisor; prometheus_client's multiprocess mode,
chosen when the library is first imported), and every worker answers a scrape with the
sum over all of them (`exposition`), counts of workers that have exited included.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

REGISTRY = CollectorRegistry(auto_describe=True)
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"

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
    multiprocess_mode="livesum",  # across workers: the calls being served now, by all
)


def exposition() -> bytes:
    """The text a scrape gets: this process's metrics, or every worker's summed."""
    if not os.environ.get(MULTIPROCESS_DIR):
        return generate_latest(REGISTRY)
    combined = CollectorRegistry()
    MultiProcessCollector(combined)  # type: ignore[no-untyped-call]
    return generate_latest(combined)


def split_method(full_method: str) -> tuple[str, str]:
    """'/hacs.tenant.v1.TenantService/GetTenant' -> (service, method) names."""
    service, _, method = full_method.lstrip("/").partition("/")
    return service, method
