"""Tracing: with an exporter configured every call becomes a span; with none, no cost.

No OTLP collector runs here: the server is started with the console exporter
and the test reads the same spans through OpenTelemetry's in-memory exporter,
added to the server's tracer provider.
"""

from __future__ import annotations

from pathlib import Path

from hacs.tenant.v1 import tenant_service_pb2 as pb
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.common.runtime.tracing import tracing_interceptors
from tests.support.harness import bearer, make_settings, running_platform


async def test_each_call_is_a_span_named_for_its_method(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path / "data",
        f"sqlite+aiosqlite:///{tmp_path / 'hacs.db'}",
        services="tenant",
        otel_exporter="console",
    )
    async with running_platform(settings) as hacs:
        provider = trace.get_tracer_provider()
        assert isinstance(provider, TracerProvider)
        memory = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(memory))
        token = await hacs.operator_token()
        await hacs.tenant.ListTenants(pb.ListTenantsRequest(page_size=5), metadata=bearer(token))
    spans = {s.name: s for s in memory.get_finished_spans()}
    assert {
        "/hacs.tenant.v1.TenantService/IssueToken",
        "/hacs.tenant.v1.TenantService/ListTenants",
    } <= set(spans)
    listed = spans["/hacs.tenant.v1.TenantService/ListTenants"]
    assert listed.kind == trace.SpanKind.SERVER
    assert listed.attributes is not None
    assert listed.attributes["rpc.grpc.status_code"] == 0


def test_no_exporter_means_no_tracing_interceptor() -> None:
    assert tracing_interceptors("none", ("tenant",)) == []
