"""A real Milvus standalone server for the tests, started on a free loopback port.

The embedded default is Milvus Lite; the mesh points HACS_MILVUS_URI at a
Milvus server. This starts one: the `milvus` wheel (a Milvus 2.3.5
standalone build with embedded etcd and local storage), installed by
`scripts/install_milvus_server.sh` into its own environment (`.venv-milvus`,
pinned in requirements/milvus-server.txt) because its dependencies do not
mix with the platform's. Data lives in a temporary directory removed on stop.

Milvus 2.3 predates BM25 functions (2.5), so with a 2.3 server the platform's
lexical engine is the embedded SQLite one (`HACS_LEXICAL_ENGINE=auto`); the dense path,
the partition key and the tenant filters are the server's.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.postgres import free_port

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_SECONDS = 180
INTERNAL_PORTS = (
    "--etcd-port",
    "--root-coord-port",
    "--proxy-internal-port",
    "--query-coord-port",
    "--query-node-port",
    "--index-coord-port",
    "--index-node-port",
    "--data-coord-port",
    "--data-node-port",
)


def server_binary() -> Path:
    configured = os.environ.get("HACS_TEST_MILVUS_SERVER")
    binary = Path(configured) if configured else REPO / ".venv-milvus" / "bin" / "milvus-server"
    if not binary.exists():
        raise RuntimeError(
            f"no Milvus server at {binary}: run scripts/install_milvus_server.sh "
            "(`make test` does), or set HACS_TEST_MILVUS_SERVER to a milvus-server binary"
        )
    return binary


class MilvusServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="hacs-milvus-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        from pymilvus import MilvusClient

        log_path = self.root / "milvus.log"
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    str(server_binary()),
                    "--data",
                    str(self.root / "data"),
                    "--proxy-port",
                    str(self.port),
                    # Every internal port free too: the defaults are fixed numbers, and a
                    # server still shutting down (or another test run) would hold them.
                    *(arg for flag in INTERNAL_PORTS for arg in (flag, str(free_port()))),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its etcd and milvus children stop with the group
            )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            try:
                client = MilvusClient(uri=self.uri, timeout=2)
                client.get_server_version()
                client.close()
                return
            except Exception:  # not up yet: connection refused or not ready
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                logs = self.root / "data" / "logs"
                output = "\n".join(
                    _tail(path)
                    for path in (log_path, logs / "milvus-stdout.log", logs / "milvus-stderr.log")
                )
                code = self.process.poll()
                self.stop()
                raise RuntimeError(
                    f"the Milvus server did not start (exit status {code}):\n{output}"
                )
            time.sleep(1)

    def stop(self) -> None:
        """Stop the whole process group: the wrapper and the `milvus` binary it runs.

        The binary can outlive its wrapper (a server still starting up ignores
        SIGTERM), and a leftover one holds etcd's fixed peer port (2380), so the
        next server on this machine could not start: wait for every member of
        the group to exit, and kill what is left.
        """
        try:
            if self.process is not None:
                group = self.process.pid
                _signal_group(group, signal.SIGTERM)
                deadline = time.monotonic() + 30
                while _group_alive(group) and time.monotonic() < deadline:
                    self.process.poll()  # reap the wrapper so it does not linger
                    time.sleep(0.2)
                if _group_alive(group):
                    _signal_group(group, signal.SIGKILL)
                self.process.wait(timeout=10)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _signal_group(group: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signum)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-3000:]
    except OSError:
        return "(no log)"
