"""`hacs serve --workers 2`: two worker processes on one port behave as one platform.

Real processes on loopback (the supervisor and its workers, embedded SQLite): each worker is
reached on its own address (workers.json) so the test knows which one it talks to. What one
worker learns, the other must know at once: a revoked key, a change to watch; both write the
same SQLite file and one audit chain; a killed worker comes back; no worker outlives its
supervisor.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from hacs.records.v1 import record_pb2, record_service_pb2_grpc
from hacs.records.v1 import record_service_pb2 as records_pb
from hacs.search.v1 import search_service_pb2 as search_pb
from hacs.search.v1 import search_service_pb2_grpc
from hacs.sync.v1 import sync_service_pb2 as sync_pb
from hacs.sync.v1 import sync_service_pb2_grpc
from hacs.tenant.v1 import tenant_pb2, tenant_service_pb2_grpc
from hacs.tenant.v1 import tenant_service_pb2 as pb

from services.common.audit_verify import verify
from services.common.db.engine import Database
from tests.support.edge import start_serve
from tests.support.harness import bearer

pytestmark = pytest.mark.e2e

BOUND_SECONDS = 5.0  # HACS_REVOCATION_SECONDS: without the hub, the other worker trusts this long


@dataclass
class Workers:
    supervisor: subprocess.Popen[bytes]
    data: Path
    shared: str  # the gRPC port both serve
    http: str  # the metrics and health port both serve

    def document(self) -> dict[str, object]:
        return json.loads((self.data / "workers.json").read_text())  # type: ignore[no-any-return]

    def own(self, index: int) -> str:
        return str(self.document()["workers"][index]["grpc"])  # type: ignore[index]

    def pid(self, index: int) -> int:
        return int(self.document()["workers"][index]["pid"])  # type: ignore[index]


def _start(root: Path) -> Workers:
    data = root / "data"
    supervisor, grpc_addr, http_addr = start_serve(
        "workers",
        root,
        {
            "HACS_DATA_DIR": str(data),
            "HACS_SERVICES": "tenant,records,sync",
            "HACS_WORKERS": "2",
            "HACS_REVOCATION_SECONDS": str(BOUND_SECONDS),
        },
    )
    deadline = time.monotonic() + 60
    while not (data / "workers.json").exists():  # written once every worker serves
        assert supervisor.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    return Workers(supervisor, data, grpc_addr, http_addr)


def _stop(workers: Workers) -> None:
    if workers.supervisor.poll() is None:
        workers.supervisor.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            workers.supervisor.wait(timeout=60)


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    started = _start(tmp_path_factory.mktemp("workers"))
    yield started
    _stop(started)


@dataclass
class Tenant:
    tenant_id: str
    admin: str  # token
    agent_key: str  # an API key's resource name
    agent: str  # a token issued from that key


async def _tenant(workers: Workers, tenant_id: str) -> Tenant:
    operator_key = (workers.data / "operator.key").read_text().strip()
    async with grpc.aio.insecure_channel(workers.own(0)) as channel:
        stub = tenant_service_pb2_grpc.TenantServiceStub(channel)
        operator = await stub.IssueToken(pb.IssueTokenRequest(api_key=operator_key))
        created = await stub.CreateTenant(
            pb.CreateTenantRequest(
                tenant_id=tenant_id,
                tenant=tenant_pb2.Tenant(display_name=tenant_id.title()),
                admin=tenant_pb2.Actor(display_name="Admin"),
            ),
            metadata=bearer(operator.access_token),
        )
        admin = await stub.IssueToken(pb.IssueTokenRequest(api_key=created.admin_api_key.secret))
        key = await stub.CreateApiKey(
            pb.CreateApiKeyRequest(parent=created.admin_api_key.name.rsplit("/apiKeys/", 1)[0]),
            metadata=bearer(admin.access_token),
        )
        agent = await stub.IssueToken(pb.IssueTokenRequest(api_key=key.api_key.secret))
    return Tenant(tenant_id, admin.access_token, key.api_key.name, agent.access_token)


def _patient(family: str) -> record_pb2.Record:
    record = record_pb2.Record()
    record.patient.name.add(family=family, given=["Ada"])
    return record


async def _create(target: str, tenant: Tenant, family: str) -> record_pb2.Record:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = record_service_pb2_grpc.RecordServiceStub(channel)
        reply = await stub.CreateRecord(
            records_pb.CreateRecordRequest(
                parent=f"tenants/{tenant.tenant_id}", record=_patient(family)
            ),
            metadata=bearer(tenant.admin),
            timeout=30,
        )
    return reply.record


async def _list(target: str, tenant: Tenant, token: str) -> grpc.StatusCode:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = record_service_pb2_grpc.RecordServiceStub(channel)
        try:
            await stub.ListRecords(
                records_pb.ListRecordsRequest(parent=f"tenants/{tenant.tenant_id}"),
                metadata=bearer(token),
                timeout=10,
            )
        except grpc.aio.AioRpcError as error:
            return error.code()
    return grpc.StatusCode.OK


async def test_a_key_revoked_on_one_worker_is_refused_by_the_other_at_once(
    workers: Workers,
) -> None:
    tenant = await _tenant(workers, "revoked")
    # Worker 1 admits the agent's token and remembers that for up to the bound.
    assert await _list(workers.own(1), tenant, tenant.agent) == grpc.StatusCode.OK
    async with grpc.aio.insecure_channel(workers.own(0)) as channel:
        await tenant_service_pb2_grpc.TenantServiceStub(channel).RevokeApiKey(
            pb.RevokeApiKeyRequest(name=tenant.agent_key), metadata=bearer(tenant.admin)
        )
    revoked = time.monotonic()
    while (code := await _list(workers.own(1), tenant, tenant.agent)) == grpc.StatusCode.OK:
        # The hub carries worker 0's announcement in milliseconds; without it, worker 1
        # would keep admitting the token until its remembered answer is BOUND_SECONDS old.
        assert time.monotonic() - revoked < 1.0, "worker 1 still admits a revoked key"
        await asyncio.sleep(0.05)
    assert code == grpc.StatusCode.UNAUTHENTICATED


async def test_a_watch_on_one_worker_sees_a_write_made_on_the_other(workers: Workers) -> None:
    tenant = await _tenant(workers, "watched")
    async with grpc.aio.insecure_channel(workers.own(1)) as channel:
        stub = sync_service_pb2_grpc.SyncServiceStub(channel)
        stream = stub.Watch(
            sync_pb.WatchRequest(parent=f"tenants/{tenant.tenant_id}"),
            metadata=bearer(tenant.admin),
        )
        await asyncio.sleep(0.5)  # the stream is open and live before the write
        created = await _create(workers.own(0), tenant, "Lovelace")
        async with asyncio.timeout(20):
            async for event in stream:
                if event.HasField("change") and event.change.change.name == created.name:
                    break
        stream.cancel()


async def test_both_workers_write_one_database_and_one_audit_chain(workers: Workers) -> None:
    tenant = await _tenant(workers, "busy")
    writes = [_create(workers.own(i % 2), tenant, f"Family{i}") for i in range(60)]
    created = await asyncio.gather(*writes)
    assert len({r.name for r in created}) == 60
    db = Database(f"sqlite+aiosqlite:///{workers.data / 'hacs.db'}")
    try:
        report = await verify(db, tenant.tenant_id, [])
    finally:
        await db.close()
    assert report.intact, report.problems
    assert report.events >= 60  # every create (and the tenant's set-up) audited, in one chain


async def test_one_scrape_counts_the_calls_of_every_worker(workers: Workers) -> None:
    tenant = await _tenant(workers, "metered")
    for index, calls in ((0, 3), (1, 4)):
        for _ in range(calls):
            assert await _list(workers.own(index), tenant, tenant.admin) == grpc.StatusCode.OK
    wanted = (
        'hacs_grpc_requests_total{code="OK",method="ListRecords",'
        'service="hacs.records.v1.RecordService",tenant="metered"} 7.0'
    )
    # Several scrapes, so both workers answer some (the kernel picks one per connection):
    # each one sums both.
    for _ in range(6):
        text = await asyncio.to_thread(_scrape, f"http://{workers.http}/metrics")
        assert wanted in text, [line for line in text.splitlines() if "metered" in line]


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return str(reply.read().decode())


async def test_a_killed_worker_is_started_again_on_its_own_address(
    tmp_path: Path,
) -> None:
    workers = _start(tmp_path)
    try:
        own, pid = workers.own(1), workers.pid(1)
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 90
        while workers.pid(1) == pid:
            assert time.monotonic() < deadline, "worker 1 was not started again"
            await asyncio.sleep(0.2)
        assert workers.own(1) == own
        tenant = await _tenant(workers, "restarted")
        assert await _list(own, tenant, tenant.admin) == grpc.StatusCode.OK
    finally:
        _stop(workers)


async def test_workers_stop_when_their_supervisor_dies(tmp_path: Path) -> None:
    workers = _start(tmp_path)
    pids = [workers.pid(0), workers.pid(1)]
    workers.supervisor.send_signal(signal.SIGKILL)
    workers.supervisor.wait(timeout=30)
    deadline = time.monotonic() + 60
    while alive := [p for p in pids if _alive(p)]:
        assert time.monotonic() < deadline, f"workers {alive} outlived their supervisor"
        await asyncio.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (ended, not yet reaped by its vanished parent's heir) is not alive.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return False


async def test_workers_share_milvus_lite_through_the_supervisor(tmp_path: Path) -> None:
    """Search in two workers on the embedded defaults: Milvus Lite's data is opened by one
    process (the supervisor's Lite server), worker 0 indexes, and either worker finds what
    was written through the other."""
    data = tmp_path / "data"
    supervisor, _, _ = start_serve(
        "search-workers",
        tmp_path,
        {
            "HACS_DATA_DIR": str(data),
            "HACS_SERVICES": "tenant,records,search",
            "HACS_WORKERS": "2",
        },
    )
    workers = Workers(supervisor, data, "", "")
    try:
        deadline = time.monotonic() + 120
        while not (data / "workers.json").exists():
            assert supervisor.poll() is None and time.monotonic() < deadline
            await asyncio.sleep(0.1)
        tenant = await _tenant(workers, "searched")
        created = await _create(workers.own(1), tenant, "Lindqvist")
        for index in (1, 0):
            async with grpc.aio.insecure_channel(workers.own(index)) as channel:
                stub = search_service_pb2_grpc.SearchServiceStub(channel)
                request = search_pb.SearchRequest(
                    parent=f"tenants/{tenant.tenant_id}", query="Lindqvist", top_k=5
                )
                for _ in range(300):  # until worker 0's indexer has it
                    found = await stub.Search(request, metadata=bearer(tenant.admin))
                    if found.hits:
                        break
                    await asyncio.sleep(0.2)
                assert [h.name for h in found.hits][:1] == [created.name], index
    finally:
        _stop(workers)
    assert supervisor.returncode == 0
