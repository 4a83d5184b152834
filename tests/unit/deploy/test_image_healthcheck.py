"""The image's HEALTHCHECK (mesh/healthcheck.py) against real gRPC servers, in each HACS_TLS
mode: plaintext for off and external, TLS with the process's own files for on (the default
file names, and cert-manager's names through HACS_TLS_*_FILE with a certificate that names
the Service only, as cert-manager's do), and it fails when the server is not SERVING or
does not trust it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from mesh import healthcheck
from services.common.runtime.certificates import CertificateAuthority

SERVE_SEARCH = ["tini", "--", "hacs", "serve", "--only", "search"]


class Server:
    def __init__(self, credentials: grpc.ServerCredentials | None) -> None:
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        address = "127.0.0.1:0"
        self.port = (
            self.server.add_secure_port(address, credentials)
            if credentials
            else self.server.add_insecure_port(address)
        )
        self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        self.server.start()

    def stop(self) -> None:
        self.server.stop(grace=None)


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.stop()


def _tls_server(servers: list[Server], cert: Path, key: Path, ca: Path) -> Server:
    credentials = grpc.ssl_server_credentials(
        [(key.read_bytes(), cert.read_bytes())],
        root_certificates=ca.read_bytes(),
        require_client_auth=True,  # HACS_TLS_CLIENT_AUTH=require, the default
    )
    server = Server(credentials)
    servers.append(server)
    return server


def _service_only_certificate(ca: CertificateAuthority, directory: Path) -> tuple[Path, Path]:
    """A certificate like cert-manager's for the chart: the Service's names, no loopback."""
    ca_key = serialization.load_pem_private_key(ca.key_path.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_path.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    names = ["hacs-search", "hacs-search.hacs.svc", "hacs-search.hacs.svc.cluster.local"]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "tls.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (directory / "ca.crt").write_bytes(ca.cert_path.read_bytes())
    return directory / "tls.crt", directory / "tls.key"


@pytest.mark.parametrize(
    ("mode", "host"), [("off", "127.0.0.1"), ("external", "0.0.0.0"), ("external", "[::]")]
)
def test_plaintext_modes_ask_the_loopback(
    servers: list[Server], tmp_path: Path, mode: str, host: str
) -> None:
    server = Server(None)
    servers.append(server)
    environ = {
        "HACS_TLS": mode,
        "HACS_DATA_DIR": str(tmp_path),
        "HACS_GRPC_LISTEN": f"{host}:{server.port}",
        "HACS_HTTP_LISTEN": "127.0.0.1:9464",
    }
    if host == "[::]":  # the server listens on 127.0.0.1 here: ::1 finds nothing
        with pytest.raises(grpc.RpcError):
            healthcheck.check(environ, [], timeout=1)
        return
    assert healthcheck.check(environ, []) == "SERVING"
    server.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert healthcheck.check(environ, []) == "NOT_SERVING"


def test_tls_with_the_default_files_of_the_one_service_hosted(
    servers: list[Server], tmp_path: Path
) -> None:
    ca = CertificateAuthority(tmp_path / "tls")
    ca.create()
    issued = ca.issue("search")
    server = _tls_server(servers, issued.cert, issued.key, ca.cert_path)
    environ = {
        "HACS_TLS": "on",
        "HACS_DATA_DIR": str(tmp_path),  # the files: $HACS_DATA_DIR/tls/search.pem, ...
        "HACS_GRPC_LISTEN": f"0.0.0.0:{server.port}",
        "HACS_HTTP_LISTEN": "0.0.0.0:9464",
    }
    # `serve --only search` on PID 1's command line, or HACS_SERVICES, picks search.pem.
    assert healthcheck.check(environ, SERVE_SEARCH) == "SERVING"
    assert healthcheck.check({**environ, "HACS_SERVICES": "search"}, []) == "SERVING"
    # Hosting several services, the process's files are serve.pem: none here.
    with pytest.raises(OSError):
        healthcheck.check(environ, ["tini", "--", "hacs", "serve"])
    assert healthcheck.only_services(["hacs", "serve", "--only=rag,memory"]) == "rag,memory"


def test_tls_with_cert_manager_files_naming_the_service_only(
    servers: list[Server], tmp_path: Path
) -> None:
    ca = CertificateAuthority(tmp_path / "ca")
    ca.create()
    cert, key = _service_only_certificate(ca, tmp_path / "etc-hacs-tls")
    server = _tls_server(servers, cert, key, ca.cert_path)
    environ = {
        "HACS_TLS": "on",
        "HACS_DATA_DIR": str(tmp_path / "data"),
        "HACS_GRPC_LISTEN": f"0.0.0.0:{server.port}",
        "HACS_HTTP_LISTEN": "0.0.0.0:9464",
        "HACS_TLS_CERT_FILE": str(cert),
        "HACS_TLS_KEY_FILE": str(key),
        "HACS_TLS_CA_FILE": str(tmp_path / "etc-hacs-tls" / "ca.crt"),
    }
    assert healthcheck.certificate_name(cert.read_bytes()) == "hacs-search"
    assert healthcheck.check(environ, SERVE_SEARCH) == "SERVING"


def test_tls_fails_when_the_server_does_not_trust_the_certificate(
    servers: list[Server], tmp_path: Path
) -> None:
    ours = CertificateAuthority(tmp_path / "tls")
    ours.create()
    ours.issue("search")
    theirs = CertificateAuthority(tmp_path / "other")
    theirs.create()
    issued = theirs.issue("search")
    server = _tls_server(servers, issued.cert, issued.key, theirs.cert_path)
    environ = {
        "HACS_TLS": "on",
        "HACS_DATA_DIR": str(tmp_path),
        "HACS_GRPC_LISTEN": f"0.0.0.0:{server.port}",
        "HACS_HTTP_LISTEN": "0.0.0.0:9464",
    }
    with pytest.raises(grpc.RpcError) as refused:
        healthcheck.check(environ, SERVE_SEARCH, timeout=2)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]


def test_main_exits_1_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(healthcheck, "PID1_CMDLINE", tmp_path / "no-such-cmdline")
    for name in ("HACS_TLS", "HACS_TLS_CERT_FILE", "HACS_TLS_KEY_FILE", "HACS_TLS_CA_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HACS_TLS", "on")
    monkeypatch.setenv("HACS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HACS_GRPC_LISTEN", "0.0.0.0:1")
    monkeypatch.setenv("HACS_HTTP_LISTEN", "0.0.0.0:9464")
    monkeypatch.delenv("HACS_SERVICES", raising=False)
    assert healthcheck.main() == 1
    assert "unhealthy" in capsys.readouterr().err
