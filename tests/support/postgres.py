"""A real PostgreSQL server for the tests, started on a free loopback port.

Uses the Debian PostgreSQL binaries (`scripts/install_system_deps.sh`
installs them). As root, the server runs as the `postgres` user, since
PostgreSQL refuses to run as root. HACS connects as `hacs`, an ordinary role
that owns its database: not a superuser, so row-level security applies to it.
Set HACS_TEST_POSTGRES_ADMIN_URL to use an existing server instead.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg

APP_ROLE = "hacs"
APP_PASSWORD = "hacs-test-password"


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    which = shutil.which(name)
    if which:
        return which
    raise RuntimeError(
        f"PostgreSQL's {name} is not installed; "
        "run scripts/install_system_deps.sh (apt-get install postgresql)"
    )


def postgres_binary(name: str) -> str:
    """A PostgreSQL program (`pg_dump`, `pg_restore`…) of the newest installed version."""
    return _bin(name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="hacs-pg-"))
        self.data = self.root / "data"
        self.as_root = os.geteuid() == 0
        self.admin_url = ""

    def _run(self, *args: str) -> None:
        cmd = ["runuser", "-u", "postgres", "--", *args] if self.as_root else list(args)
        subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def start(self) -> None:
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")
        self._run(
            _bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8"
        )
        self._run(
            _bin("pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-o",
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off",
            "-w",
            "start",
        )
        self.admin_url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def restart(self) -> None:
        """Stop and start again (fast shutdown) with the same port and socket directory:
        settings written with ALTER SYSTEM take effect."""
        # pg_ctl restart reuses the start options (port, socket dir) from postmaster.opts.
        self._run(
            _bin("pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-w",
            "-m",
            "fast",
            "restart",
        )

    def stop(self) -> None:
        try:
            self._run(_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


async def create_database(admin_url: str) -> str:
    """A fresh database owned by the unprivileged app role; returns its SQLAlchemy URL."""
    name = f"hacs_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(admin_url)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", APP_ROLE)
        if not exists:
            await conn.execute(
                f"CREATE ROLE {APP_ROLE} LOGIN PASSWORD '{APP_PASSWORD}' "
                "NOSUPERUSER NOBYPASSRLS NOCREATEROLE NOCREATEDB"
            )
        await conn.execute(f"CREATE DATABASE {name} OWNER {APP_ROLE}")
    finally:
        await conn.close()
    host_port = admin_url.split("@", 1)[1].split("/", 1)[0]
    return f"postgresql+asyncpg://{APP_ROLE}:{APP_PASSWORD}@{host_port}/{name}"
