"""`HACS_TLS=on make up`: the newcomer's platform with TLS on every hop, certificates made
on first start, and the calls its banner prints working."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hacs.client import HacsClient
from hacs.tenant.v1 import tenant_pb2
from hacs.tenant.v1 import tenant_service_pb2 as pb

from services.common.runtime.tls import TlsFiles, channel_credentials
from tests.support.edge import RunningPlatform, start_hacs_up

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    running = start_hacs_up(tmp_path_factory.mktemp("up-tls") / "data", HACS_TLS="on")
    try:
        yield running
    finally:
        assert running.stop() == 0


def credentials(platform: RunningPlatform) -> grpc.ChannelCredentials:
    tls = platform.data_dir / "tls"
    return channel_credentials(TlsFiles(tls / "client.pem", tls / "client-key.pem", tls / "ca.pem"))


def edge(platform: RunningPlatform) -> str:
    return platform.edge.replace("127.0.0.1", "localhost")


async def test_the_banner_calls_work_over_tls(platform: RunningPlatform) -> None:
    banner = platform.log.read_text()
    certs = platform.data_dir / "tls"
    assert f"-cacert {certs / 'ca.pem'}" in banner and "-plaintext" not in banner
    async with HacsClient(
        edge(platform), api_key=platform.operator_key, credentials=credentials(platform)
    ) as operator:
        created = await operator.tenant.CreateTenant(
            pb.CreateTenantRequest(
                tenant_id="tls-ward",
                tenant=tenant_pb2.Tenant(display_name="TLS ward"),
                admin=tenant_pb2.Actor(display_name="Admin"),
            )
        )
    async with HacsClient(
        edge(platform), api_key=created.admin_api_key.secret, credentials=credentials(platform)
    ) as admin:
        reply = await admin.tenant.GetTenant(pb.GetTenantRequest(name="tenants/tls-ward"))
    assert reply.tenant.display_name == "TLS ward"


@pytest.mark.parametrize("target", ["edge", "direct"])
async def test_plaintext_is_refused_on_the_edge_and_the_service_port(
    platform: RunningPlatform, target: str
) -> None:
    address = platform.edge if target == "edge" else platform.direct
    async with grpc.aio.insecure_channel(address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_certificates_were_made_once_and_kept(platform: RunningPlatform) -> None:
    tls: Path = platform.data_dir / "tls"
    assert {p.name for p in tls.glob("*.pem")} >= {"ca.pem", "edge.pem", "serve.pem", "client.pem"}
    assert oct((tls / "ca-key.pem").stat().st_mode & 0o777) == "0o600"
