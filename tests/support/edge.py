"""`hacs up` run as a newcomer runs it, on free ports, for the end-to-end tests."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from services.tooling.fuzz import launcher
from tests.support.postgres import free_port

# `hacs up` as a newcomer runs it: the launcher the fuzzer uses too.
RunningPlatform = launcher.Running


def start_hacs_up(data_dir: Path, database_url: str = "", **env: str) -> RunningPlatform:
    return launcher.start(data_dir, HACS_DATABASE_URL=database_url, **env)


def start_serve(
    name: str,
    log_dir: Path,
    env: dict[str, str],
    cwd: Path | None = None,
    *,
    tls_ca: Path | None = None,
) -> tuple[subprocess.Popen[bytes], str, str]:
    """One `hacs serve` process on free ports; returns (process, grpc address, http address).

    `cwd`: where `python -m services.cli` finds the `services` package first (another build's).
    `tls_ca`: the process serves TLS (HACS_TLS=on in `env`); its readiness is read over
    https, verified against this CA.
    """
    # A port found free can be taken before the server binds it (an outgoing connection's
    # ephemeral port, another test's server): start again on new ports, a few times.
    for attempt in range(3):
        grpc_addr, http_addr = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        environ = {
            **os.environ,
            "HACS_GRPC_LISTEN": grpc_addr,
            "HACS_HTTP_LISTEN": http_addr,
            "HACS_SHUTDOWN_GRACE_SECONDS": "2",
            **env,
        }
        log = log_dir / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "services.cli", "serve"],
                env=environ,
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        scheme = "https" if tls_ca else "http"
        try:
            _wait_ready(f"{scheme}://{http_addr}/readyz", process, log, tls_ca)
        except RuntimeError:
            said = log.read_text(errors="replace")
            in_use = "address already in use" in said or "(port in use?)" in said
            if not in_use or attempt == 2:
                raise
            continue
        return process, grpc_addr, http_addr
    raise AssertionError("unreachable")


def start_envoy(config: str, log_dir: Path, edge_port: int) -> subprocess.Popen[bytes]:
    path = log_dir / "envoy.yaml"
    path.write_text(config)
    with (log_dir / "envoy.log").open("wb") as out:
        return subprocess.Popen(
            [
                str(Path(sys.executable).parent / "envoy"),
                "-c",
                str(path),
                "--base-id",
                str(edge_port),
                "--log-level",
                "warn",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _wait_ready(
    url: str, process: subprocess.Popen[bytes], log: Path, tls_ca: Path | None = None
) -> None:
    deadline = time.monotonic() + 90
    context = ssl.create_default_context(cafile=str(tls_ca)) if tls_ca else None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: process exited:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready:\n{log.read_text(errors='replace')[-3000:]}")
