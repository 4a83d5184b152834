"""Sync in the mesh layout: separate processes, PostgreSQL, Redis, Envoy in front.

Records are written through one process (tenant + records); two
`hacs serve --only sync` replicas learn of every write through Redis and read
the change log themselves. Both deliver the same ordered stream; a client
that is cut off — by itself, or by its replica crashing and restarting —
resumes from its last cursor, on either replica, and receives every change
exactly once. Envoy serves Watch and PushChanges to a browser over gRPC-Web
(HTTP/1.1, application/grpc-web+proto).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
import pytest
from hacs.records.v1 import record_service_pb2 as records_pb
from hacs.records.v1 import record_service_pb2_grpc
from hacs.sync.v1 import sync_service_pb2 as pb
from hacs.tenant.v1 import tenant_pb2, tenant_service_pb2_grpc
from hacs.tenant.v1 import tenant_service_pb2 as tenant_pb

from mesh.envoy.render import HACS_SERVICES, EdgeSettings, Upstream, render
from services.sync import cursors
from tests.support import clinical
from tests.support.edge import start_envoy, start_serve
from tests.support.harness import NewTenant, bearer
from tests.support.postgres import create_database, free_port
from tests.support.redis import RedisServer
from tests.support.sync import (
    SyncClient,
    WatchLog,
    metformin_order,
    read_until,
    set_field,
)

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

ORIGIN = "https://ward.example"
SYNC = "hacs.sync.v1.SyncService"


@dataclass
class Mesh:
    root: Path
    edge: str
    writer: str  # tenant + records
    replicas: list[str]  # sync only, [a, b]
    processes: dict[str, subprocess.Popen[bytes]]
    replica_env: dict[str, str]
    tenant: NewTenant | None = None

    def restart_replica(self, index: int, *, crash: bool) -> None:
        """Stop replica `index` (SIGKILL for a crash, else SIGTERM) and start it again."""
        name = f"sync-{'ab'[index]}"
        process = self.processes[name]
        process.send_signal(signal.SIGKILL if crash else signal.SIGTERM)
        process.wait(timeout=30)
        env = {**self.replica_env, "HACS_GRPC_LISTEN": self.replicas[index]}
        self.processes[name], _, _ = start_serve(f"{name}-again", self.root, env)


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
async def mesh(
    tmp_path_factory: pytest.TempPathFactory, postgres_admin_url: str, redis_server: RedisServer
) -> AsyncIterator[Mesh]:
    root: Path = tmp_path_factory.mktemp("sync-mesh")
    database_url = await create_database(postgres_admin_url)
    common = {
        "HACS_DATABASE_URL": database_url,
        "HACS_REDIS_URL": redis_server.url,
        "HACS_SHUTDOWN_GRACE_SECONDS": "1",
    }
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        processes["writer"], writer, writer_http = start_serve(
            "writer",
            root,
            {**common, "HACS_SERVICES": "tenant,records", "HACS_DATA_DIR": str(root / "w")},
        )
        jwks = f"http://{writer_http}/.well-known/jwks.json"
        replica_env = {
            **common,
            "HACS_SERVICES": "sync",
            "HACS_DATA_DIR": str(root / "sync"),
            "HACS_AUTO_MIGRATE": "false",
            "HACS_JWKS_URL": jwks,
        }
        replicas = []
        for name in ("sync-a", "sync-b"):
            processes[name], address, _ = start_serve(name, root, replica_env)
            replicas.append(address)
        upstreams = {service: Upstream.parse(writer) for service in HACS_SERVICES}
        upstreams[SYNC] = Upstream.parse(replicas[0])
        edge_port = free_port()
        settings = EdgeSettings(
            upstreams=upstreams,
            listen_host="127.0.0.1",
            listen_port=edge_port,
            stats_port=free_port(),
            jwks_uri=jwks,
            access_log_path=str(root / "access.log"),
            cors_allowed_origins=[ORIGIN],
        )
        processes["envoy"] = start_envoy(render(settings), root, edge_port)
        edge = f"127.0.0.1:{edge_port}"
        with grpc.insecure_channel(edge) as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
        mesh = Mesh(root, edge, writer, replicas, processes, replica_env)
        mesh.tenant = await _new_tenant(edge, (root / "w/operator.key").read_text().strip())
        yield mesh
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=30)


async def _new_tenant(edge: str, operator_key: str) -> NewTenant:
    """A tenant made through Envoy (retrying while Envoy fetches the JWKS)."""
    async with grpc.aio.insecure_channel(edge) as channel:
        tenants = tenant_service_pb2_grpc.TenantServiceStub(channel)
        operator = await tenants.IssueToken(tenant_pb.IssueTokenRequest(api_key=operator_key))
        deadline = time.monotonic() + 30
        while True:
            try:
                reply = await tenants.CreateTenant(
                    tenant_pb.CreateTenantRequest(
                        tenant_id="sync-ward",
                        tenant=tenant_pb2.Tenant(display_name="Sync Ward"),
                        admin=tenant_pb2.Actor(display_name="Ward Admin"),
                    ),
                    metadata=bearer(operator.access_token),
                    timeout=10,
                )
                break
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.UNAUTHENTICATED or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.3)
        key = reply.admin_api_key.secret
        token = await tenants.IssueToken(tenant_pb.IssueTokenRequest(api_key=key))
    return NewTenant("sync-ward", key, token.access_token)


async def _write(mesh: Mesh, count: int, pause: float = 0.0) -> list[str]:
    """`count` observations written through the records process; returns their names."""
    assert mesh.tenant is not None
    names = []
    async with grpc.aio.insecure_channel(mesh.writer) as channel:
        sync = SyncClient(channel, mesh.tenant, mesh.tenant.admin_token)
        patient = await sync.create(clinical.patient())
        names.append(patient.name)
        for i in range(count - 1):
            names.append((await sync.create(clinical.hba1c(patient.name, 5 + i / 100))).name)
            if pause:
                await asyncio.sleep(pause)
    return names


async def _head(mesh: Mesh) -> str:
    assert mesh.tenant is not None
    async with grpc.aio.insecure_channel(mesh.replicas[1]) as channel:
        return (await SyncClient(channel, mesh.tenant, mesh.tenant.admin_token).head()).cursor


async def test_both_replicas_deliver_the_same_ordered_stream(mesh: Mesh) -> None:
    assert mesh.tenant is not None
    start = await _head(mesh)
    channels = [grpc.aio.insecure_channel(address) for address in mesh.replicas]
    try:
        streams = [
            SyncClient(c, mesh.tenant, mesh.tenant.admin_token).watch(cursor=start)
            for c in channels
        ]
        logs = [await read_until(s, WatchLog(), caught_up=True) for s in streams]
        names = await _write(mesh, 12)
        for stream, log in zip(streams, logs, strict=True):
            await read_until(stream, log, changes=12)
            stream.cancel()
    finally:
        for channel in channels:
            await channel.close()
    assert [c.change.name for c in logs[0].changes] == names
    assert logs[0].sequences == logs[1].sequences
    assert [c.cursor for c in logs[0].changes] == [c.cursor for c in logs[1].changes]


async def test_exactly_once_across_a_disconnect_and_a_replica_crash(mesh: Mesh) -> None:
    assert mesh.tenant is not None
    start = await _head(mesh)
    first = cursors.try_decode(start)
    assert first is not None
    total = 40
    writer = asyncio.create_task(_write(mesh, total, pause=0.03))
    received: list[pb.ChangeEvent] = []

    async def watch_on(replica: int, cursor: str, until: int) -> str:
        """Watch on one replica from `cursor` until `until` changes arrived in all."""
        async with grpc.aio.insecure_channel(mesh.replicas[replica]) as channel:
            client = SyncClient(channel, mesh.tenant, mesh.tenant.admin_token)  # type: ignore[arg-type]
            stream = client.watch(cursor=cursor)
            log = await read_until(stream, WatchLog(), changes=until - len(received), seconds=60)
            stream.cancel()  # a forced disconnect, mid-stream
        received.extend(log.changes)
        return log.last_cursor

    cursor = await watch_on(0, start, 10)  # on replica A
    cursor = await watch_on(1, cursor, 20)  # resumed on replica B
    mesh.restart_replica(1, crash=True)  # B crashes and comes back
    cursor = await watch_on(1, cursor, 30)  # resumed on the restarted B
    await writer
    await watch_on(0, cursor, total)  # and the rest on A
    assert [e.change.sequence for e in received] == list(
        range(first.sequence + 1, first.sequence + total + 1)
    )


async def test_watch_and_push_over_grpc_web_through_envoy(mesh: Mesh) -> None:
    assert mesh.tenant is not None
    headers = {
        "content-type": "application/grpc-web+proto",
        "x-grpc-web": "1",
        "x-user-agent": "grpc-web-javascript/0.1",
        "authorization": f"Bearer {mesh.tenant.admin_token}",
        "origin": ORIGIN,
    }
    request = pb.WatchRequest(parent=mesh.tenant.name, resume_cursor=await _head(mesh))
    url = f"http://{mesh.edge}/{SYNC}/Watch"
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, data=_frame(request.SerializeToString()), headers=headers) as response,
    ):
        assert response.status == 200 and response.version == aiohttp.HttpVersion11
        assert response.headers["content-type"].startswith("application/grpc-web")
        assert response.headers["access-control-allow-origin"] == ORIGIN
        caught_up = pb.WatchResponse.FromString(await _read_frame(response))
        assert caught_up.WhichOneof("event") == "caught_up"
        [name] = await _write(mesh, 1)
        event = pb.WatchResponse.FromString(await _read_frame(response))
        assert event.change.change.name == name  # a live event, over HTTP/1.1

    async with grpc.aio.insecure_channel(mesh.writer) as channel:
        writer = SyncClient(channel, mesh.tenant, mesh.tenant.admin_token)
        patient = await writer.create(clinical.patient("Okafor", "Ada"))
        order = await writer.create(metformin_order(patient.name))
    push = pb.PushChangesRequest(
        parent=mesh.tenant.name,
        client_id="browser-tab",
        changes=[
            pb.OfflineChange(
                change_id="n1",
                operation=2,  # UPDATE
                name=order.name,
                base_version=1,
                patches=[set_field("medication_request.note", ["seen on the ward round"])],
            )
        ],
    )
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://{mesh.edge}/{SYNC}/PushChanges",
            data=_frame(push.SerializeToString()),
            headers=headers,
        ) as response,
    ):
        reply = pb.PushChangesResponse.FromString(await _read_frame(response))
        trailers = await _read_frame(response, trailer=True)
    assert reply.results[0].outcome == pb.PUSH_OUTCOME_APPLIED
    assert b"grpc-status:0" in trailers.replace(b" ", b"")

    async with grpc.aio.insecure_channel(mesh.edge) as channel:
        records = record_service_pb2_grpc.RecordServiceStub(channel)
        current = await records.GetRecord(
            records_pb.GetRecordRequest(name=order.name), metadata=bearer(mesh.tenant.admin_token)
        )
    assert list(current.record.medication_request.note) == ["seen on the ward round"]


def _frame(payload: bytes, flag: int = 0) -> bytes:
    """A gRPC(-Web) message frame: flag byte, 4-byte big-endian length, payload."""
    return bytes([flag]) + len(payload).to_bytes(4, "big") + payload


async def _read_frame(response: aiohttp.ClientResponse, *, trailer: bool = False) -> bytes:
    header = await asyncio.wait_for(response.content.readexactly(5), 20)
    payload = await response.content.readexactly(int.from_bytes(header[1:], "big"))
    assert bool(header[0] & 0x80) == trailer, f"frame flag {header[0]:#x}: {payload[:200]!r}"
    return payload
