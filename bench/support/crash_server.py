"""A `hacs serve` process that can be killed with SIGKILL and started again in its place.

The process starts in a session of its own, so whatever it started (the embedding
model's process with HACS_EMBEDDING_WORKER=process) is found after a kill by its
process group: a child that outlived the kill is counted (an orphan holding the
data directory is a finding of its own) and then killed, so every restart begins
from nothing but the data directory and the database. Each start uses the same
ports, so clients reconnect to the same address.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.support.postgres import free_port

READY_TIMEOUT = 180.0  # a 2-core machine busy with other work starts slowly
ORPHAN_GRACE = 5.0


class KillableServer:
    def __init__(self, run_dir: Path, env: dict[str, str]) -> None:
        self.run_dir = run_dir
        self.grpc_target = f"127.0.0.1:{free_port()}"
        self.http = f"127.0.0.1:{free_port()}"
        self.env = {
            **os.environ,
            "HACS_GRPC_LISTEN": self.grpc_target,
            "HACS_HTTP_LISTEN": self.http,
            "HACS_SHUTDOWN_GRACE_SECONDS": "2",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def log(self) -> Path:
        return self.run_dir / f"hacs-serve-{self.starts}.log"

    def start(self) -> float:
        """Start and wait for /readyz; returns the seconds it took."""
        started = time.monotonic()
        self.starts += 1
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "services.cli", "serve"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_ready()
        return time.monotonic() - started

    def kill(self) -> int:
        """SIGKILL the server process alone; returns how many of its processes outlived it."""
        process = self._running()
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        # A child reading its parent's pipe (the embedding process) sees EOF and exits on
        # its own: it is an orphan only if it is still there after ORPHAN_GRACE seconds.
        deadline = time.monotonic() + ORPHAN_GRACE
        while (survivors := _group_members(process.pid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        if survivors:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        return len(survivors)

    def stop(self) -> None:
        """SIGTERM (a graceful stop), then SIGKILL the group if it lingers."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def _running(self) -> subprocess.Popen[bytes]:
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError(f"hacs serve is not running:\n{self.log_tail()}")
        return self.process

    def _wait_ready(self) -> None:
        url = f"http://{self.http}/readyz"
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            self._running()  # raises, with the log, when the process exited
            try:
                with urllib.request.urlopen(url, timeout=2) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{url} not ready:\n{self.log_tail()}")


def _group_members(group: int) -> list[int]:
    """Live processes of a process group (zombies are gone already)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields after the command: state, ppid, pgrp, ...
        if int(fields[2]) == group and fields[0] != "Z":
            members.append(int(entry.name))
    return members
