"""The one gRPC server that hosts any subset of HACS services.

`HacsServer.start()` opens the platform (database, migrations, keys), sets
up the kernel modules the chosen services declare, builds their servicers,
registers health (per service) and reflection, and listens. `stop()`
drains: health flips to NOT_SERVING so Envoy and Kubernetes stop sending new
calls, in-flight calls get the grace period, then the database closes.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.app.registry import BY_KEY, kernel_modules
from services.common.runtime.gc_tuning import tune_garbage_collection
from services.common.runtime.http import OpsHttpServer
from services.common.runtime.interceptors import (
    AdmissionInterceptor,
    AuditInterceptor,
    AuthInterceptor,
    ErrorMappingInterceptor,
    InterceptorChain,
    MetricsInterceptor,
    ValidationInterceptor,
)
from services.common.runtime.platform import Platform, open_platform
from services.common.runtime.tls import server_credentials, tls_files
from services.common.runtime.tracing import tracing_interceptors
from services.common.settings import Settings
from services.kernel.modules import Kernel
from services.kernel.tenancy.standing import TenancyRegistry

log = logging.getLogger(__name__)

KEEPALIVE_OPTIONS = [
    # Ping idle connections so dead peers (a vanished pod, a NAT timeout) are
    # noticed within a minute, and allow Envoy's pings as often as every 10 s.
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
]
MAX_CONNECTION_AGE_GRACE_MS = 60_000


def connection_options(settings: Settings) -> list[tuple[str, int]]:
    """Keepalive, and connections recycled now and then so load rebalances across replicas
    (HACS_GRPC_MAX_CONNECTION_AGE_SECONDS; 0 keeps them: a process no balancer fronts)."""
    age = settings.grpc_max_connection_age_seconds
    if not age:
        return list(KEEPALIVE_OPTIONS)
    return [
        *KEEPALIVE_OPTIONS,
        ("grpc.max_connection_age_ms", age * 1000),
        ("grpc.max_connection_age_grace_ms", MAX_CONNECTION_AGE_GRACE_MS),
    ]


@dataclass
class HacsServer:
    settings: Settings
    platform: Platform | None = None
    kernel: Kernel | None = None
    grpc_port: int = 0
    http_port: int = 0
    hosted: tuple[str, ...] = ()
    _server: grpc.aio.Server | None = None
    _health: health.aio.HealthServicer | None = None  # type: ignore[name-defined]
    _http: OpsHttpServer | None = None
    _serving: dict[str, bool] = field(default_factory=dict)

    async def start(self) -> None:
        settings = self.settings
        self.hosted = settings.enabled_services
        specs = [BY_KEY[key] for key in self.hosted]
        if settings.tls == "on":  # before anything opens: a missing file stops the start
            tls_files(settings).check()
        self.platform = platform = await open_platform(
            settings, TenancyRegistry, verifies_tokens=any(spec.takes_tokens for spec in specs)
        )
        self.kernel = kernel = Kernel(platform, kernel_modules(self.hosted))

        open_methods = [m for spec in specs for m in spec.open_methods]
        chain = InterceptorChain(
            [
                MetricsInterceptor(platform.usage, platform.metering),
                ErrorMappingInterceptor(),
                AuthInterceptor(platform.verifier, open_methods),
                AuditInterceptor(platform.audit),
                AdmissionInterceptor(platform.admission, platform.limiter),
                ValidationInterceptor(),
            ]
        )
        limit = settings.max_message_bytes
        server = grpc.aio.server(
            interceptors=[*tracing_interceptors(settings.otel_exporter, self.hosted), chain],
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                *connection_options(settings),
                # The workers of one `hacs serve --workers N` share its port (the kernel
                # spreads connections over them); a lone process must own its port, so a
                # second server started on it by mistake fails instead of taking half the
                # calls.
                ("grpc.so_reuseport", 1 if settings.relay_socket else 0),
            ],
        )

        health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        for spec in specs:
            await spec.register(kernel, server)
            self._serving[spec.full_name] = spec.implemented
        tune_garbage_collection()  # start-up objects are in place: freeze them
        names = [spec.full_name for spec in specs]
        reflection.enable_server_reflection(
            [
                *names,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            server,
        )

        credentials = (
            server_credentials(
                tls_files(settings), require_client_auth=settings.tls_client_auth == "require"
            )
            if settings.tls == "on"
            else None
        )

        def bind(address: str) -> int:
            bound = (
                server.add_secure_port(address, credentials)
                if credentials is not None
                else server.add_insecure_port(address)
            )
            if bound == 0:
                raise RuntimeError(f"cannot listen on {address} (port in use?)")
            return bound

        host, _, port = settings.grpc_listen.rpartition(":")
        self.grpc_port = bind(f"{host}:{port}")
        own = ""
        if settings.worker_grpc_listen:  # a worker's own address, beside the shared one
            own_host = settings.worker_grpc_listen.rpartition(":")[0]
            own = f"{own_host}:{bind(settings.worker_grpc_listen)}"
        await server.start()
        self._server = server
        self._health = health_servicer
        for name, serving in self._serving.items():
            await health_servicer.set(name, _status(serving))
        await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)

        self._http = OpsHttpServer(
            platform, self._ready, tls=tls_files(settings) if settings.tls == "on" else None
        )
        self.http_port = await self._http.start(
            settings.http_listen, shared=bool(settings.relay_socket)
        )
        if platform.relay is not None:  # tell the supervisor this worker serves
            platform.relay.hello(settings.worker_index, os.getpid(), own)
        log.info(
            "hacs serving %s (kernel modules: %s): gRPC%s on %s:%d, metrics/health/JWKS on %s://%s",
            ", ".join(self.hosted),
            ", ".join(kernel.modules) or "none",
            " (TLS)" if settings.tls == "on" else "",
            host,
            self.grpc_port,
            "https" if settings.tls == "on" else "http",
            settings.http_listen.rsplit(":", 1)[0] + f":{self.http_port}",
        )

    def _ready(self) -> bool:
        return self._server is not None and self._health is not None

    async def stop(self, grace: float | None = None) -> None:
        grace = self.settings.shutdown_grace_seconds if grace is None else grace
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        if self._http is not None:
            await self._http.stop()
        if self._server is not None:
            log.info("draining in-flight calls (up to %.0fs)", grace)
            await self._server.stop(grace)
        if self.platform is not None:
            await self.platform.close()
        self._server = None

    async def wait(self) -> None:
        assert self._server is not None
        await self._server.wait_for_termination()


def _status(serving: bool) -> health_pb2.HealthCheckResponse.ServingStatus.ValueType:
    return (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
