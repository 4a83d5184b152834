"""The ops HTTP endpoint: Prometheus metrics, liveness, readiness, and the JWKS
(and the routes hosted services add: the tenant service's browser sign-in).

Envoy's `jwt_authn` fetches `/.well-known/jwks.json` from here; Kubernetes
probes `/healthz` (the process runs) and `/readyz` (it can serve: database
reachable, gRPC server started); Prometheus scrapes `/metrics`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from services.common.errors import Unavailable
from services.common.runtime.metrics import exposition
from services.common.runtime.platform import Platform
from services.common.runtime.tls import TlsFiles, http_server_context


class OpsHttpServer:
    def __init__(
        self, platform: Platform, ready: Callable[[], bool], tls: TlsFiles | None = None
    ) -> None:
        self._platform = platform
        self._ready = ready
        self._tls = tls
        self._runner: web.AppRunner | None = None
        self._refresher: asyncio.Task[None] | None = None

    async def start(self, listen: str, *, shared: bool = False) -> int:
        """Serve on `listen`; `shared`: beside the other workers of one `hacs serve`
        (SO_REUSEPORT), each answering the connections the kernel gives it."""
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        if self._platform.signing_keys is not None:
            app.router.add_get("/.well-known/jwks.json", self._jwks)
        for method, path, handler in self._platform.http_routes:
            app.router.add_route(method, path, handler)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        host, _, port = listen.rpartition(":")
        context = None
        if self._tls is not None:  # HACS_TLS=on: HTTPS, certificates followed on disk
            context, refresh = http_server_context(self._tls)
            self._refresher = asyncio.create_task(_every_second(refresh))
        site = web.TCPSite(
            self._runner, host, int(port), ssl_context=context, reuse_port=shared or None
        )
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[attr-defined]
        return int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]

    async def stop(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        if self._runner is not None:
            await self._runner.cleanup()

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def _readyz(self, _: web.Request) -> web.Response:
        if not self._ready():
            return web.json_response({"status": "starting"}, status=503)
        try:
            await self._platform.db.ping()
        except Unavailable as exc:
            return web.json_response({"status": "unavailable", "reason": exc.message}, status=503)
        return web.json_response({"status": "ready"})

    async def _jwks(self, _: web.Request) -> web.Response:
        keys = self._platform.signing_keys
        assert keys is not None
        return web.Response(
            text=keys.jwks_json(),
            content_type="application/json",
            headers={"Cache-Control": "public, max-age=300"},
        )


async def _every_second(refresh: Callable[[], None]) -> None:
    while True:
        await asyncio.sleep(1.0)
        refresh()
