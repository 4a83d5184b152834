"""OpenTelemetry tracing for every gRPC call (opentelemetry-instrumentation-grpc)."""

from __future__ import annotations

import logging

import grpc
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import aio_server_interceptor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)

log = logging.getLogger(__name__)

_provider: TracerProvider | None = None


def configure_tracing(exporter_name: str, service_names: tuple[str, ...]) -> TracerProvider:
    """Install the process's tracer provider once; spans go to `exporter_name`."""
    global _provider
    if _provider is not None:
        return _provider
    provider = TracerProvider(
        resource=Resource.create({"service.name": "hacs", "hacs.services": ",".join(service_names)})
    )
    exporter: SpanExporter | None = None
    if exporter_name == "console":
        exporter = ConsoleSpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    elif exporter_name == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found]
                OTLPSpanExporter,
            )
        except ImportError as exc:
            raise RuntimeError(
                "HACS_OTEL_EXPORTER=otlp needs the opentelemetry-exporter-otlp package"
            ) from exc
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _provider = provider
    return provider


def tracing_interceptors(
    exporter_name: str, service_names: tuple[str, ...]
) -> list[grpc.aio.ServerInterceptor]:
    """The server's tracing interceptor, or none when spans would go nowhere.

    With HACS_OTEL_EXPORTER=none a span per call would be built and dropped:
    pure cost on every call's path (measurable at search's call rates).
    """
    if exporter_name == "none":
        return []
    provider = configure_tracing(exporter_name, service_names)
    return [aio_server_interceptor(tracer_provider=provider)]  # type: ignore[no-untyped-call]
