"""The restore drill's moving parts: Milvus to lose, `hacs serve`, programs, counts, a writer.

bench/support/restore_drill.py puts them together.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import asyncpg
from hacs.client import HacsClient
from hacs.records.v1 import record_service_pb2 as rpb
from pymilvus import MilvusClient

from bench.support import dataset
from bench.support.restore_data import LIVE_TENANT
from tests.support.edge import start_serve
from tests.support.milvus import MilvusServer


class EmptyMilvus(Protocol):
    """A Milvus server for the drill, and the loss of everything in it."""

    uri: str

    def lose_everything(self) -> None: ...


class ReplacedServer:
    """A Milvus server of the drill's own; the loss: it stops, its data directory goes,
    and a new one starts on an empty directory."""

    def __init__(self) -> None:
        self.server = MilvusServer()
        self.uri = ""

    def start(self) -> None:
        self.server.start()
        self.uri = self.server.uri

    def lose_everything(self) -> None:
        self.server.stop()  # removes its data directory
        self.server = MilvusServer()
        self.start()

    def stop(self) -> None:
        self.server.stop()


class DroppedCollections:
    """A Milvus server shared with others (the tests'); the loss: every HACS collection."""

    def __init__(self, uri: str) -> None:
        self.uri = uri

    def lose_everything(self) -> None:
        client = MilvusClient(uri=self.uri)
        try:
            for name in client.list_collections():
                if name.startswith("hacs_"):
                    client.drop_collection(name)
        finally:
            client.close()


@dataclass
class Write:
    record_id: str
    started: float
    acknowledged: float = 0.0


class Serve:
    """One `hacs serve` process of the drill."""

    def __init__(self, run_dir: Path, name: str, env: dict[str, str]) -> None:
        self.run_dir, self.name, self.env = run_dir, name, env
        self.process: subprocess.Popen[bytes] | None = None
        self.target = ""

    def start(self) -> float:
        started = time.monotonic()
        self.process, self.target, _ = start_serve(self.name, self.run_dir, self.env)
        return time.monotonic() - started

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def database_of(url: str) -> str:
    return url.rsplit("/", 1)[1]


def admin_url_of(admin_url: str, database: str) -> str:
    """The administrator's URL of another database on the same server."""
    return admin_url.rsplit("/", 1)[0] + "/" + database


def milvus_counts(uri: str, tenant_id: str) -> dict[str, int]:
    """Rows of the tenant in every HACS collection."""
    client = MilvusClient(uri=uri)
    try:
        counts = {}
        for name in sorted(client.list_collections()):
            if name.startswith("hacs_"):
                rows = client.query(
                    name,
                    filter=f'tenant_id == "{tenant_id}"',
                    output_fields=["count(*)"],
                    consistency_level="Strong",
                )
                counts[name] = int(rows[0]["count(*)"])
        return counts
    finally:
        client.close()


COUNT_EXTRAS = {
    # Not only as many: the same records at the same versions, the same change sequences.
    "records@versions": "SELECT md5(string_agg(tenant_id || '/' || collection || '/' || id "
    "|| '@' || version, ',' ORDER BY tenant_id, collection, id)) FROM records",
    "change_log@sequences": "SELECT md5(string_agg(tenant_id || '#' || sequence, ',' "
    "ORDER BY tenant_id, sequence)) FROM change_log",
}


async def table_counts(conn: asyncpg.Connection) -> dict[str, Any]:
    """Rows of every table of the schema (as the superuser: row-level security aside)."""
    tables = await conn.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
    )
    counts: dict[str, Any] = {}
    for row in tables:
        name = row["tablename"]
        counts[name] = int(await conn.fetchval(f'SELECT count(*) FROM "{name}"'))
    for name, query in COUNT_EXTRAS.items():
        counts[name] = await conn.fetchval(query)
    return counts


class LiveWriter:
    """Creates patients in LIVE_TENANT one after another until stopped."""

    def __init__(self, client: HacsClient) -> None:
        self.client = client
        self.writes: list[Write] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._write())

    async def _write(self) -> None:
        parent = f"tenants/{LIVE_TENANT}"
        n = 0
        while not self._stop.is_set():
            write = Write(f"w{n:06d}", time.time())
            self.writes.append(write)
            await self.client.records.CreateRecord(
                rpb.CreateRecordRequest(
                    parent=parent,
                    record_id=write.record_id,
                    record=dataset.patient_record(n, 7),
                    request_id=f"live-{n}",
                )
            )
            write.acknowledged = time.time()
            n += 1

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task


async def run_program(
    command: list[str], env: dict[str, str] | None = None, log: Path | None = None
) -> tuple[float, bytes]:
    """Run a program to its end; returns (seconds, its standard output)."""
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        *command,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    if log is not None:
        await asyncio.to_thread(log.write_bytes, out + b"\n--- stderr ---\n" + err)
    if process.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command[:3])}… exited with {process.returncode}:\n"
            f"{err.decode(errors='replace')[-3000:]}"
        )
    return time.monotonic() - started, out
