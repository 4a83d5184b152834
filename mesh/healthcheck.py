"""The container image's HEALTHCHECK: is the `hacs serve` of this container serving?

    python3 -I -m mesh.healthcheck      exit 0 when SERVING, 1 otherwise (the reason on stderr)

It asks the standard gRPC health service for the overall status ("": SERVING once every
hosted service has started) at the address HACS_GRPC_LISTEN names (its loopback when it
binds every interface), configured the way the process is, in each HACS_TLS mode:

* `off`, `external`: a plaintext channel (loopback; or the pod's side of a sidecar that
  carries mTLS, which a check from inside the container never crosses);
* `on`: TLS with the process's own files: HACS_TLS_CERT_FILE, HACS_TLS_KEY_FILE and
  HACS_TLS_CA_FILE, else `<name>.pem`, `<name>-key.pem` and `ca.pem` in HACS_TLS_DIR or
  `$HACS_DATA_DIR/tls`, where <name> is the one service hosted, else `serve` (the server's
  own `tls_files` decides, so the two cannot disagree). The server's certificate is
  verified against the CA under a name that certificate carries: it is the same
  certificate, reached on loopback, and names the Service rather than 127.0.0.1 when it
  comes from cert-manager. The certificate is presented as the client's too, as
  HACS_TLS_CLIENT_AUTH=require (the default) asks.

The services hosted are `serve --only X` from PID 1's command line (`tini -- hacs serve
--only X`, how the chart runs the image) when it is there, else HACS_SERVICES: what
`hacs serve` itself reads. Kubernetes ignores HEALTHCHECK; the chart probes the pods itself
(docs/deploy.md).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.runtime.tls import tls_files
from services.common.settings import Settings

TIMEOUT_SECONDS = 4.0
PID1_CMDLINE = Path("/proc/1/cmdline")


def only_services(argv: Sequence[str]) -> str | None:
    """The value of `--only` in a `hacs serve` command line, if there is one."""
    for index, word in enumerate(argv):
        if word == "--only" and index + 1 < len(argv):
            return argv[index + 1]
        if word.startswith("--only="):
            return word.partition("=")[2]
    return None


def pid1_argv(path: Path | None = None) -> list[str]:
    """PID 1's arguments (tini's: `tini -- hacs serve ...`); empty when unreadable."""
    try:
        raw = (path or PID1_CMDLINE).read_bytes()
    except OSError:
        return []
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


def loopback_target(listen: str) -> str:
    """Where to dial the server that listens on `listen` (host:port), from inside it."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def certificate_name(pem: bytes) -> str:
    """A name the (first) certificate in `pem` is valid for: a DNS name, else an IP, else
    its common name."""
    certificate = x509.load_pem_x509_certificate(pem)
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        names = None
    if names is not None:
        for dns in names.get_values_for_type(x509.DNSName):
            return dns
        for address in names.get_values_for_type(x509.IPAddress):
            return str(address)
    common = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if common:
        return str(common[0].value)
    raise ValueError("the certificate names nothing a client could verify")


def open_channel(environ: Mapping[str, str], argv: Sequence[str]) -> grpc.Channel:
    """A channel to this container's server, as its settings say to reach it."""
    only = only_services(argv)
    settings = Settings.from_env(environ, **({"services": only} if only else {}))
    target = loopback_target(settings.grpc_listen)
    if settings.tls != "on":
        return grpc.insecure_channel(target)
    cert, key, ca = tls_files(settings).read()
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )
    options = [("grpc.ssl_target_name_override", certificate_name(cert))]
    return grpc.secure_channel(target, credentials, options=options)


def check(
    environ: Mapping[str, str] | None = None,
    argv: Sequence[str] | None = None,
    timeout: float = TIMEOUT_SECONDS,
) -> str:
    """The overall health status's name (SERVING, NOT_SERVING, ...)."""
    environ = os.environ if environ is None else environ
    channel = open_channel(environ, pid1_argv() if argv is None else argv)
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=timeout
        )
    finally:
        channel.close()
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def main() -> int:
    try:
        status = check()
    except grpc.RpcError as exc:
        print(f"unhealthy: {exc.code().name}: {exc.details()}", file=sys.stderr)  # type: ignore[attr-defined]
        return 1
    except (OSError, ValueError) as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    if status != "SERVING":
        print(f"unhealthy: {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
