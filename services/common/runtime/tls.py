"""TLS for the gRPC port, the ops HTTP port and calls to other services.

HACS_TLS=on: the process serves TLS with its certificate (HACS_TLS_CERT_FILE,
HACS_TLS_KEY_FILE) and, on the gRPC port, asks every caller for a client certificate
signed by HACS_TLS_CA_FILE (HACS_TLS_CLIENT_AUTH=require, the default): Envoy and the
other services present theirs, a caller without one or with one of another CA is
refused in the handshake. Its own calls to other services present the same certificate
and verify theirs against the same CA.

Certificates are read again when their files change, without a restart: gRPC asks for
the server's certificate before every new connection's handshake, and the files are
checked (at most once a second) then; the HTTP port checks them every second.
Connections already open keep the certificate they began with.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import grpc

from services.common.settings import Settings

log = logging.getLogger(__name__)

CHECK_EVERY_SECONDS = 1.0


@dataclass(frozen=True)
class TlsFiles:
    """A certificate, its key, and the CA that verifies the other side."""

    cert: Path
    key: Path
    ca: Path

    def check(self) -> None:
        """Raise a ValueError naming what is missing or unreadable."""
        for label, path in (("certificate", self.cert), ("key", self.key), ("CA", self.ca)):
            try:
                path.read_bytes()
            except OSError as exc:
                raise ValueError(
                    f"cannot read the TLS {label} {path} ({exc.strerror}); "
                    "run `hacs certs` for development certificates (docs/security.md)"
                ) from exc

    def read(self) -> tuple[bytes, bytes, bytes]:
        """(certificate chain, private key, CA bundle) as PEM."""
        return self.cert.read_bytes(), self.key.read_bytes(), self.ca.read_bytes()

    def stamp(self) -> tuple[tuple[int, int, int], ...]:
        """What changes when a file is replaced: inode, size and modification time."""
        stamps = []
        for path in (self.cert, self.key, self.ca):
            try:
                stat = path.stat()
            except OSError:
                stamps.append((0, 0, 0))
            else:
                stamps.append((stat.st_ino, stat.st_size, stat.st_mtime_ns))
        return tuple(stamps)


def tls_directory(settings: Settings) -> Path:
    """HACS_TLS_DIR, else `$HACS_DATA_DIR/tls` (where `hacs certs` writes)."""
    return Path(settings.tls_dir).expanduser() if settings.tls_dir else settings.data_path / "tls"


def tls_files(settings: Settings) -> TlsFiles:
    """The certificate, key and CA this process uses with HACS_TLS=on: the three
    HACS_TLS_*_FILE settings, else `<dir>/<name>.pem`, `<dir>/<name>-key.pem` and
    `<dir>/ca.pem` in HACS_TLS_DIR, where <name> is the one service hosted, else `serve`."""
    directory = tls_directory(settings)
    hosted = settings.enabled_services
    name = hosted[0] if len(hosted) == 1 else "serve"
    return TlsFiles(
        cert=Path(settings.tls_cert_file) if settings.tls_cert_file else directory / f"{name}.pem",
        key=Path(settings.tls_key_file) if settings.tls_key_file else directory / f"{name}-key.pem",
        ca=Path(settings.tls_ca_file) if settings.tls_ca_file else directory / "ca.pem",
    )


class _Watched:
    """Calls `load` again when the files' stamp changes (checked at most once a second).

    A half-written rotation (a new certificate with the old key) fails to load: the
    previous material stays in use and the next check tries again.
    """

    def __init__(self, files: TlsFiles, load: Callable[[], Any]) -> None:
        self._files = files
        self._load = load
        self._lock = threading.Lock()
        self._stamp = files.stamp()
        self._checked = time.monotonic()
        self.current = load()

    def changed(self) -> Any | None:
        """The newly loaded material if the files changed since the last load, else None."""
        now = time.monotonic()
        if now - self._checked < CHECK_EVERY_SECONDS:
            return None
        with self._lock:
            self._checked = now
            stamp = self._files.stamp()
            if stamp == self._stamp:
                return None
            try:
                loaded = self._load()
            except (OSError, ValueError, ssl.SSLError) as exc:
                log.warning("TLS files %s changed but do not load yet: %s", self._files.cert, exc)
                return None
            self._stamp = stamp
            self.current = loaded
            log.info("TLS certificate %s reloaded", self._files.cert)
            return loaded


def server_credentials(files: TlsFiles, *, require_client_auth: bool) -> grpc.ServerCredentials:
    """gRPC server credentials that follow the files on disk."""

    def load() -> Any:
        cert, key, ca = files.read()
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    watched = _Watched(files, load)
    # The fetcher answers None for "no change" (grpc's documented contract; its stub
    # types the answer as always a configuration).
    fetch = cast(Callable[[], grpc.ServerCertificateConfiguration], watched.changed)
    return grpc.dynamic_ssl_server_credentials(
        watched.current, fetch, require_client_authentication=require_client_auth
    )


def channel_credentials(files: TlsFiles) -> grpc.ChannelCredentials:
    """Credentials for calling another HACS service: verify it, present our certificate."""
    cert, key, ca = files.read()
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )


def http_server_context(files: TlsFiles) -> tuple[ssl.SSLContext, Callable[[], None]]:
    """An SSL context for the ops HTTP port (no client certificate asked: probes and the
    scraper connect there), and a `refresh` to call now and then (the HTTP server does,
    every second): it loads changed files into the same context, which new connections use.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2

    def load() -> ssl.SSLContext:
        # Tried on a scratch context first: a failed load could leave a half-changed one.
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(files.cert, files.key)
        context.load_cert_chain(files.cert, files.key)
        return context

    watched = _Watched(files, load)

    def refresh() -> None:
        watched.changed()

    return context, refresh
