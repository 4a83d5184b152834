"""Nothing in plaintext: client -> Envoy (TLS, client certificate required) -> services
(mTLS) -> each other (mTLS), and the JWKS over https.

Three `hacs serve` processes as three pods (tenant + records, embedding, search calling
the embedding process) with HACS_TLS=on, each with its own certificate of one CA made by
`hacs certs`' code, and the real Envoy rendered by mesh/envoy with TLS on both sides. A
search through the edge crosses every hop: Envoy -> search, search -> embedding (the query
vector), search -> tenant (the JWKS), and the edge's own JWKS fetch.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hacs.client import HacsClient
from hacs.records.v1 import record_service_pb2 as rpb
from hacs.search.v1 import search_service_pb2 as spb
from hacs.tenant.v1 import tenant_pb2
from hacs.tenant.v1 import tenant_service_pb2 as tpb

from mesh.envoy.render import EdgeSettings, EdgeTls, Upstream, render, render_sds
from services.common.runtime.certificates import CertificateAuthority, ensure_certificates
from services.common.runtime.tls import TlsFiles, channel_credentials
from services.tenant.api_keys import new_secret
from tests.support import clinical
from tests.support.edge import start_envoy, start_serve
from tests.support.postgres import create_database, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

TENANT = "ward-tls"
NAMES = ("tenant", "embedding", "search", "edge", "client")


def serve_env(tls: Path, name: str) -> dict[str, str]:
    return {
        "HACS_TLS": "on",
        "HACS_TLS_CERT_FILE": str(tls / f"{name}.pem"),
        "HACS_TLS_KEY_FILE": str(tls / f"{name}-key.pem"),
        "HACS_TLS_CA_FILE": str(tls / "ca.pem"),
    }


@pytest.fixture(scope="module")
def mesh(
    tmp_path_factory: pytest.TempPathFactory, postgres_admin_url: str
) -> Iterator[dict[str, str]]:
    root = tmp_path_factory.mktemp("mesh-tls")
    tls = root / "tls"
    ensure_certificates(tls, NAMES)
    database_url = asyncio.run(create_database(postgres_admin_url))
    service_key = new_secret("platform")[1]
    processes: list[subprocess.Popen[bytes]] = []
    try:
        tenant, tenant_grpc, tenant_http = start_serve(
            "tenant",
            root,
            {
                **serve_env(tls, "tenant"),
                "HACS_SERVICES": "tenant,records",
                "HACS_DATABASE_URL": database_url,
                "HACS_DATA_DIR": str(root / "tenant-data"),
                "HACS_BOOTSTRAP_SERVICE_KEY": service_key,
            },
            tls_ca=tls / "ca.pem",
        )
        processes.append(tenant)
        jwks = f"https://{tenant_http}/.well-known/jwks.json"
        common = {"HACS_DATABASE_URL": database_url, "HACS_AUTO_MIGRATE": "false"}
        common["HACS_JWKS_URL"] = jwks
        embedding, embedding_grpc, _ = start_serve(
            "embedding",
            root,
            {
                **common,
                **serve_env(tls, "embedding"),
                "HACS_SERVICES": "embedding",
                "HACS_DATA_DIR": str(root / "embedding-data"),
            },
            tls_ca=tls / "ca.pem",
        )
        processes.append(embedding)
        search, search_grpc, _ = start_serve(
            "search",
            root,
            {
                **common,
                **serve_env(tls, "search"),
                "HACS_SERVICES": "search",
                "HACS_DATA_DIR": str(root / "search-data"),
                "HACS_EMBEDDING_URL": embedding_grpc,
                "HACS_TENANT_URL": tenant_grpc,
                "HACS_SERVICE_API_KEY": service_key,
            },
            tls_ca=tls / "ca.pem",
        )
        processes.append(search)

        edge_port = free_port()
        edge = EdgeSettings(
            upstreams={
                "hacs.tenant.v1.TenantService": Upstream.parse(tenant_grpc),
                "hacs.records.v1.RecordService": Upstream.parse(tenant_grpc),
                "hacs.embedding.v1.EmbeddingService": Upstream.parse(embedding_grpc),
                "hacs.search.v1.SearchService": Upstream.parse(search_grpc),
            },
            listen_host="127.0.0.1",
            listen_port=edge_port,
            stats_port=free_port(),
            admin_socket=str(root / "envoy-admin.sock"),
            jwks_uri=jwks,
            access_log_path=str(root / "envoy-access.log"),
            tls=EdgeTls(
                sds_dir=str(root / "sds"),
                cert=str(tls / "edge.pem"),
                key=str(tls / "edge-key.pem"),
                ca=str(tls / "ca.pem"),
                client_certificates="require",
            ),
        )
        for path, text in render_sds(edge).items():
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text)
        envoy = start_envoy(render(edge), root, edge_port)
        processes.append(envoy)
        _wait_edge(f"localhost:{edge_port}", tls, envoy, root)
        yield {
            "edge": f"localhost:{edge_port}",
            "edge_port": str(edge_port),
            "embedding": embedding_grpc,
            "tls": str(tls),
            "operator_key": (root / "tenant-data/operator.key").read_text().strip(),
            "search_log": str(root / "search.log"),
        }
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait(timeout=30)


def client(tls: Path) -> grpc.ChannelCredentials:
    return channel_credentials(TlsFiles(tls / "client.pem", tls / "client-key.pem", tls / "ca.pem"))


def _wait_edge(target: str, tls: Path, envoy: subprocess.Popen[bytes], root: Path) -> None:
    deadline = time.monotonic() + 60
    with grpc.secure_channel(target, client(tls)) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if envoy.poll() is not None:
                raise RuntimeError((root / "envoy.log").read_text(errors="replace")[-3000:])
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status == 1:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.3)
    raise RuntimeError(f"no healthy answer through the TLS edge:\n{_tail(root / 'envoy.log')}")


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:]


async def test_a_search_through_the_edge_crosses_every_hop_encrypted(
    mesh: dict[str, str],
) -> None:
    tls = Path(mesh["tls"])
    credentials = client(tls)
    async with HacsClient(
        mesh["edge"], api_key=mesh["operator_key"], credentials=credentials
    ) as operator:
        created = await operator.tenant.CreateTenant(
            tpb.CreateTenantRequest(
                tenant_id=TENANT,
                tenant=tenant_pb2.Tenant(display_name="TLS ward"),
                admin=tenant_pb2.Actor(display_name="Admin"),
            )
        )
    admin_key = created.admin_api_key.secret
    async with HacsClient(mesh["edge"], api_key=admin_key, credentials=credentials) as ward:
        await ward.records.CreateRecord(
            rpb.CreateRecordRequest(
                parent=f"tenants/{TENANT}",
                record_id="p1",
                record=clinical.patient("Lindqvist", "Maja", "female"),
            )
        )
        for _ in range(300):
            status = await ward.search.GetIndexStatus(
                spb.GetIndexStatusRequest(parent=f"tenants/{TENANT}")
            )
            if status.indexed_sequence and status.indexed_sequence >= status.head_sequence:
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError(f"the indexer never caught up:\n{_tail(Path(mesh['search_log']))}")
        found = await ward.search.Search(
            spb.SearchRequest(parent=f"tenants/{TENANT}", query="Lindqvist", top_k=5)
        )
    assert found.hits and found.hits[0].name == f"tenants/{TENANT}/patients/p1"


async def refused(target: str, credentials: grpc.ChannelCredentials | None) -> bool:
    channel = (
        grpc.aio.secure_channel(target, credentials)
        if credentials
        else grpc.aio.insecure_channel(target)
    )
    async with channel:
        try:
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
        except grpc.aio.AioRpcError as exc:
            return exc.code() == grpc.StatusCode.UNAVAILABLE
    return False


async def test_the_edge_and_the_services_refuse_plaintext_and_strangers(
    mesh: dict[str, str], tmp_path: Path
) -> None:
    tls = Path(mesh["tls"])
    ca_only = grpc.ssl_channel_credentials((tls / "ca.pem").read_bytes())
    stranger = CertificateAuthority(tmp_path / "stranger")
    stranger.create()
    stranger.issue("client")
    foreign = channel_credentials(
        TlsFiles(
            stranger.directory / "client.pem", stranger.directory / "client-key.pem", tls / "ca.pem"
        )
    )
    for target in (mesh["edge"], mesh["embedding"].replace("127.0.0.1", "localhost")):
        assert await refused(target, None), f"{target} answered plaintext"
        assert await refused(target, ca_only), f"{target} answered a client without a certificate"
        assert await refused(target, foreign), f"{target} answered a certificate of another CA"
        assert not await refused(target, client(tls))


def edge_serial(port: int, tls: Path) -> int:
    context = ssl.create_default_context(cafile=str(tls / "ca.pem"))
    context.load_cert_chain(tls / "client.pem", tls / "client-key.pem")
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as wrapped,
    ):
        der = wrapped.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


async def test_envoy_serves_a_rotated_certificate_without_a_restart(mesh: dict[str, str]) -> None:
    tls, port = Path(mesh["tls"]), int(mesh["edge_port"])
    before = await asyncio.to_thread(edge_serial, port, tls)
    CertificateAuthority(tls).issue("edge")  # `hacs certs --rotate --names edge`
    wanted = x509.load_pem_x509_certificate((tls / "edge.pem").read_bytes()).serial_number
    assert wanted != before
    for _ in range(100):
        if await asyncio.to_thread(edge_serial, port, tls) == wanted:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("Envoy still serves the old certificate after 10 s")
    assert not await refused(mesh["edge"], client(tls))


def test_browser_sign_in_routes_reach_the_tenant_service_through_the_edge(
    mesh: dict[str, str],
) -> None:
    import urllib.error
    import urllib.request

    tls = Path(mesh["tls"])
    context = ssl.create_default_context(cafile=str(tls / "ca.pem"))
    context.load_cert_chain(tls / "client.pem", tls / "client-key.pem")
    url = f"https://{mesh['edge']}/auth/oidc/{TENANT}/nobody/login?return_to=x"
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(url, timeout=10, context=context)
    assert caught.value.code == 404  # HACS's own answer: no such provider
    assert "Sign-in failed" in caught.value.read().decode()
