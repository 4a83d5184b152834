"""`hacs up` in a directory of its own, on free loopback ports, as a child process.

The fuzzer attacks the platform exactly as a newcomer starts it (every service,
SQLite, Milvus Lite, Envoy in front), with only the edge's rate limits raised
(RAISED_EDGE_LIMITS) so that what answers is the platform, not a quota; the
end-to-end tests start it the same way.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT_SECONDS = 240.0
RAISED_EDGE_LIMITS = {
    "HACS_EDGE_CALLS_PER_MINUTE": "1000000",
    "HACS_EDGE_TOKEN_CALLS_PER_MINUTE": "1000000",
    "HACS_EDGE_OPEN_CALLS_PER_MINUTE": "1000000",
}


@dataclass
class Running:
    process: subprocess.Popen[bytes]
    data_dir: Path
    edge: str
    direct: str
    log: Path
    stats: str  # Envoy's stats listener

    @property
    def operator_key(self) -> str:
        return (self.data_dir / "operator.key").read_text().strip()

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> int:
        """SIGTERM, as Ctrl-C would; the exit code (0: it drained cleanly)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(data_dir: Path, **env: str) -> Running:
    ports = {name: free_port() for name in ("grpc", "http", "edge", "stats")}
    data_dir.mkdir(parents=True, exist_ok=True)
    environ = {
        **os.environ,
        "HACS_DATA_DIR": str(data_dir),
        "HACS_DATABASE_URL": "",
        "HACS_GRPC_LISTEN": f"127.0.0.1:{ports['grpc']}",
        "HACS_HTTP_LISTEN": f"127.0.0.1:{ports['http']}",
        "HACS_EDGE_LISTEN_PORT": str(ports["edge"]),
        "HACS_EDGE_STATS_PORT": str(ports["stats"]),
        "HACS_SHUTDOWN_GRACE_SECONDS": "2",
        **env,
    }
    log = data_dir / "hacs-up.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "up"],
            env=environ,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    running = Running(
        process,
        data_dir,
        f"127.0.0.1:{ports['edge']}",
        f"127.0.0.1:{ports['grpc']}",
        log,
        f"127.0.0.1:{ports['stats']}",
    )
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while "HACS is up" not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            running.stop()
            tail = log.read_text(errors="replace")[-4000:]
            raise RuntimeError(f"hacs up did not start (log {log}):\n{tail}")
        time.sleep(0.3)
    return running
