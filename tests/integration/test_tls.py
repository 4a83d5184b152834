"""HACS_TLS=on: the service's ports speak TLS, the gRPC port asks for a client certificate
of the HACS CA, and a certificate rotated on disk is served without a restart.

Real handshakes on loopback: the in-process server, gRPC clients with and without
certificates, and the ops HTTP port read with Python's ssl module.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hacs.tenant.v1 import tenant_service_pb2 as tpb
from hacs.tenant.v1 import tenant_service_pb2_grpc

from services.app.server import HacsServer
from services.common.runtime import tls as tls_module
from services.common.runtime.certificates import CertificateAuthority
from services.common.runtime.tls import TlsFiles, channel_credentials
from tests.support.harness import make_settings


@pytest.fixture
def authority(tmp_path: Path) -> CertificateAuthority:
    ca = CertificateAuthority(tmp_path / "tls")
    ca.create()
    for name in ("serve", "client"):
        ca.issue(name)
    return ca


@pytest.fixture
async def server(
    tmp_path: Path, authority: CertificateAuthority, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[HacsServer]:
    monkeypatch.setattr(tls_module, "CHECK_EVERY_SECONDS", 0.0)  # see a rotation at once
    settings = make_settings(
        tmp_path / "data", "", tls="on", tls_dir=str(authority.directory), services="tenant"
    )
    # One service hosted: its certificate is <dir>/tenant.pem; give it the serve one.
    for suffix in (".pem", "-key.pem"):
        (authority.directory / f"tenant{suffix}").write_bytes(
            (authority.directory / f"serve{suffix}").read_bytes()
        )
    server = HacsServer(settings)
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=0)


def client_files(ca: CertificateAuthority) -> TlsFiles:
    return TlsFiles(ca.directory / "client.pem", ca.directory / "client-key.pem", ca.cert_path)


async def health(target: str, credentials: grpc.ChannelCredentials | None) -> grpc.StatusCode:
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
            return exc.code()
    return grpc.StatusCode.OK


async def test_only_a_client_with_a_certificate_of_the_hacs_ca_gets_in(
    server: HacsServer, authority: CertificateAuthority, tmp_path: Path
) -> None:
    target = f"localhost:{server.grpc_port}"
    assert await health(target, channel_credentials(client_files(authority))) == grpc.StatusCode.OK
    async with grpc.aio.secure_channel(target, channel_credentials(client_files(authority))) as ch:
        jwks = await tenant_service_pb2_grpc.TenantServiceStub(ch).GetJwks(tpb.GetJwksRequest())
        assert jwks.key_ids

    no_certificate = grpc.ssl_channel_credentials(authority.cert_path.read_bytes())
    assert await health(target, no_certificate) == grpc.StatusCode.UNAVAILABLE
    assert await health(target, None) == grpc.StatusCode.UNAVAILABLE  # plaintext

    stranger = CertificateAuthority(tmp_path / "stranger")
    stranger.create()
    stranger.issue("client")
    foreign = TlsFiles(
        stranger.directory / "client.pem",
        stranger.directory / "client-key.pem",
        authority.cert_path,  # it trusts the server; the server does not trust it
    )
    assert await health(target, channel_credentials(foreign)) == grpc.StatusCode.UNAVAILABLE


def served_serial(port: int, ca: Path) -> int:
    context = ssl.create_default_context(cafile=str(ca))
    with (
        ssl.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as wrapped,
    ):
        der = wrapped.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def file_serial(path: Path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number


async def test_a_rotated_certificate_is_served_without_a_restart(
    server: HacsServer, authority: CertificateAuthority
) -> None:
    directory = authority.directory
    http_port = server.http_port
    before = file_serial(directory / "tenant.pem")
    assert await asyncio.to_thread(served_serial, http_port, authority.cert_path) == before

    authority.issue("tenant")  # `hacs certs --rotate --names tenant`
    after = file_serial(directory / "tenant.pem")
    assert after != before

    # gRPC: the next connection's handshake gets the new certificate.
    credentials = channel_credentials(client_files(authority))
    assert await health(f"localhost:{server.grpc_port}", credentials) == grpc.StatusCode.OK
    assert served_grpc_serial(server.grpc_port, authority) == after
    # HTTP (metrics, JWKS): checked every second.
    for _ in range(50):
        if await asyncio.to_thread(served_serial, http_port, authority.cert_path) == after:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the HTTP port still serves the old certificate")


def served_grpc_serial(port: int, ca: CertificateAuthority) -> int:
    """The certificate the gRPC port presents in a new handshake (mTLS: we present ours)."""
    context = ssl.create_default_context(cafile=str(ca.cert_path))
    context.load_cert_chain(ca.directory / "client.pem", ca.directory / "client-key.pem")
    context.set_alpn_protocols(["h2"])
    with (
        ssl.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as wrapped,
    ):
        der = wrapped.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_the_server_names_missing_certificate_files(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", "", tls="on", tls_dir=str(tmp_path / "none"))
    with pytest.raises(ValueError, match=r"hacs certs"):
        asyncio.run(HacsServer(settings).start())
