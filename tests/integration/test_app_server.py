"""The shared runtime, seen from outside: health per service, contract-only
services, the ops HTTP endpoint (metrics, readiness, JWKS), start-up checks."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hacs.sync.v1 import sync_service_pb2, sync_service_pb2_grpc
from hacs.tenant.v1 import tenant_service_pb2 as pb

from services.app.registry import ServiceSpec
from services.app.server import HacsServer
from tests.support.harness import Harness, bearer, make_settings, running_platform


@pytest.fixture
async def without_sync_build(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> AsyncIterator[Harness]:
    """A server whose SyncService has no build (as a release without it would ship)."""
    real = ServiceSpec.wiring.fget  # type: ignore[attr-defined]

    def wiring(spec: ServiceSpec) -> str:
        return "services.sync.not_built" if spec.key == "sync" else str(real(spec))

    monkeypatch.setattr(ServiceSpec, "wiring", property(wiring))
    settings = make_settings(
        tmp_path / "data", f"sqlite+aiosqlite:///{tmp_path / 'x.db'}", services="tenant,sync"
    )
    async with running_platform(settings) as harness:
        yield harness


async def test_health_is_reported_per_service(without_sync_build: Harness) -> None:
    health = health_pb2_grpc.HealthStub(without_sync_build.channel)
    statuses = {
        name: (await health.Check(health_pb2.HealthCheckRequest(service=name))).status
        for name in ("", "hacs.tenant.v1.TenantService", "hacs.sync.v1.SyncService")
    }
    assert statuses == {
        "": health_pb2.HealthCheckResponse.SERVING,
        "hacs.tenant.v1.TenantService": health_pb2.HealthCheckResponse.SERVING,
        "hacs.sync.v1.SyncService": health_pb2.HealthCheckResponse.NOT_SERVING,
    }
    with pytest.raises(grpc.aio.AioRpcError) as unknown:  # not hosted by this process
        await health.Check(health_pb2.HealthCheckRequest(service="hacs.search.v1.SearchService"))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


async def test_contract_only_services_authenticate_then_say_unimplemented(
    without_sync_build: Harness,
) -> None:
    sync = sync_service_pb2_grpc.SyncServiceStub(without_sync_build.channel)
    request = sync_service_pb2.GetSyncCursorRequest(parent="tenants/platform")
    with pytest.raises(grpc.aio.AioRpcError) as anonymous:
        await sync.GetSyncCursor(request)
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await sync.GetSyncCursor(
            request, metadata=bearer(await without_sync_build.operator_token())
        )
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "does not serve it yet" in (caught.value.details() or "")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_ops_endpoint_serves_metrics_readiness_and_the_jwks(hacs: Harness) -> None:
    tenant = await hacs.new_tenant("metered")
    await hacs.tenant.GetTenant(
        pb.GetTenantRequest(name=tenant.name), metadata=bearer(tenant.admin_token)
    )
    base = f"http://127.0.0.1:{hacs.server.http_port}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/readyz") as ready:
            assert ready.status == 200
        async with http.get(f"{base}/metrics") as metrics:
            text = await metrics.text()
        async with http.get(f"{base}/.well-known/jwks.json") as jwks:
            served = json.loads(await jwks.text())
    assert (
        'hacs_grpc_requests_total{code="OK",method="GetTenant",'
        'service="hacs.tenant.v1.TenantService",tenant="metered"} 1.0'
    ) in text
    published = await hacs.tenant.GetJwks(pb.GetJwksRequest())
    assert served == json.loads(published.jwks_json)
    assert [k["kid"] for k in served["keys"]] == list(published.key_ids)


async def test_a_service_without_the_tenant_service_needs_a_jwks_url(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path / "data", f"sqlite+aiosqlite:///{tmp_path / 'x.db'}", services="records"
    )
    server = HacsServer(settings)
    with pytest.raises(RuntimeError, match="HACS_JWKS_URL"):
        await server.start()
    await server.stop(0)


async def test_a_database_behind_the_code_is_refused_without_auto_migrate(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path / "data", f"sqlite+aiosqlite:///{tmp_path / 'x.db'}", auto_migrate="false"
    )
    server = HacsServer(settings)
    with pytest.raises(RuntimeError, match="hacs migrate"):
        await server.start()
    await server.stop(0)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    "raw",
    [
        b"\x0a\x05ab",  # a string field whose length runs past the end
        b"\x0a\x02\xff\xfe",  # a string field that is not UTF-8
        b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",  # no valid tag at all
    ],
)
async def test_bytes_that_are_not_the_request_message_get_invalid_argument(
    hacs: Harness, raw: bytes
) -> None:
    # Straight to the service port: no Envoy in between to reject anything first.
    issue = hacs.channel.unary_unary("/hacs.tenant.v1.TenantService/IssueToken")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await issue(raw)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = refused.value.details() or ""
    assert "hacs.tenant.v1.IssueTokenRequest" in details and "class" not in details
    # And on a client stream, for a caller who passed authentication.
    tenant = await hacs.new_tenant()
    push = hacs.channel.stream_unary("/hacs.rag.v1.RagService/IngestDocuments")

    async def requests() -> AsyncIterator[bytes]:
        yield raw

    with pytest.raises(grpc.aio.AioRpcError) as streamed:
        await push(requests(), metadata=bearer(tenant.admin_token))
    assert streamed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "hacs.rag.v1.IngestDocumentsRequest" in (streamed.value.details() or "")
    # And as the one request of a server stream (found by `hacs fuzz`, seed 1, #134: UNKNOWN).
    watch = hacs.channel.unary_stream("/hacs.sync.v1.SyncService/Watch")
    with pytest.raises(grpc.aio.AioRpcError) as watched:
        async for _ in watch(raw, metadata=bearer(tenant.admin_token)):
            pass
    assert watched.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "hacs.sync.v1.WatchRequest" in (watched.value.details() or "")
