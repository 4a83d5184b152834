"""Sync across replicas through a real Redis, in one test process.

Two servers on one PostgreSQL: the first hosts tenant, records and sync, the
second only sync (verifying tokens against the first's JWKS, as in the mesh).
Change notices, collaboration presence and edit details cross between them
through Redis only. (tests/e2e/test_sync_mesh.py runs the same layout as
separate processes behind Envoy.)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from hacs.records.v1.record_service_pb2 import GetRecordRequest

from services.common.change_bus import ChangeNotice, RedisChangeBus
from tests.support import clinical
from tests.support.harness import Harness, make_settings, running_platform
from tests.support.postgres import create_database
from tests.support.redis import redis_url  # noqa: F401  (the fixture)
from tests.support.sync import (
    Collab,
    SyncClient,
    WatchLog,
    metformin_order,
    read_until,
    server_view,
    set_field,
)

pytestmark = pytest.mark.postgres


@dataclass
class Replicas:
    first: Harness  # tenant + records + sync
    second: grpc.aio.Channel  # sync only


@pytest.fixture
async def replicas(
    postgres_admin_url: str,
    redis_url: str,  # noqa: F811
    tmp_path: Path,
) -> AsyncIterator[Replicas]:
    database_url = await create_database(postgres_admin_url)
    first_settings = make_settings(
        tmp_path / "first", database_url, services="tenant,records,sync", redis_url=redis_url
    )
    async with running_platform(first_settings) as first:
        jwks = f"http://127.0.0.1:{first.server.http_port}/.well-known/jwks.json"
        second_settings = make_settings(
            tmp_path / "second",
            database_url,
            services="sync",
            redis_url=redis_url,
            jwks_url=jwks,
            auto_migrate="false",
        )
        async with running_platform(second_settings) as second:
            yield Replicas(first, second.channel)


async def test_notices_cross_processes_through_redis(redis_url: str) -> None:  # noqa: F811
    here, there = RedisChangeBus(redis_url), RedisChangeBus(redis_url)
    try:
        listening = there.subscribe()
        mine = here.subscribe()
        await asyncio.sleep(0.2)  # the reader has found the stream's end
        await here.publish(ChangeNotice("acme", 7))
        assert await asyncio.wait_for(listening.next(), 5) == ChangeNotice("acme", 7)
        assert await asyncio.wait_for(mine.next(), 5) == ChangeNotice("acme", 7)
        with pytest.raises(TimeoutError):  # not echoed back to its own process
            await asyncio.wait_for(mine.next(), 0.5)
    finally:
        await here.close()
        await there.close()


async def test_a_write_on_one_replica_reaches_watchers_of_the_other(replicas: Replicas) -> None:
    tenant = await replicas.first.new_tenant()
    writer = SyncClient(replicas.first.channel, tenant, tenant.admin_token)
    watchers = [
        SyncClient(channel, tenant, tenant.admin_token)
        for channel in (replicas.first.channel, replicas.second)
    ]
    streams = [w.watch() for w in watchers]
    logs = [await read_until(s, WatchLog(), caught_up=True) for s in streams]
    patient = await writer.create(clinical.patient())
    for value in (6.1, 6.8, 7.4):
        await writer.create(clinical.hba1c(patient.name, value))
    for stream, log in zip(streams, logs, strict=True):
        await read_until(stream, log, changes=4)
        stream.cancel()
    assert logs[0].sequences == logs[1].sequences == [1, 2, 3, 4]
    assert [c.cursor for c in logs[0].changes] == [c.cursor for c in logs[1].changes]


async def test_collaborators_on_different_replicas_see_each_other_and_converge(
    replicas: Replicas,
) -> None:
    first = replicas.first
    tenant = await first.new_tenant()
    _, lee = await first.new_actor(tenant, "dr-lee", "physician")
    _, ode = await first.new_actor(tenant, "dr-ode", "physician")
    admin = SyncClient(first.channel, tenant, tenant.admin_token)
    patient = await admin.create(clinical.patient())
    order = (await admin.create(metformin_order(patient.name))).name
    a = Collab(SyncClient(first.channel, tenant, lee))
    b = Collab(SyncClient(replicas.second, tenant, ode))
    await a.join(order, "lee-tab")
    await b.join(order, "ode-tab")
    await a.expect("presence", lambda m: len(m.presence.participants) == 2)
    await b.expect("presence", lambda m: len(m.presence.participants) == 2)

    await asyncio.gather(
        a.edit("a1", 1, [set_field("medication_request.note", ["from lee"])]),
        b.edit("b1", 1, [set_field("labels.ward", "renal")]),
    )
    for client in (a, b):
        for edit_id in ("a1", "b1"):  # edit ids travel between replicas too
            await client.expect("applied", lambda m, e=edit_id: m.applied.edit_id == e)  # type: ignore[misc]
    reply = await admin.records.GetRecord(GetRecordRequest(name=order), metadata=admin.md)
    record = reply.record
    assert record.version == 3
    assert a.view() == b.view() == server_view(record)

    b.call.cancel()  # Ode's replica tells Lee's that Ode left
    await a.expect(
        "presence", lambda m: [p.client_id for p in m.presence.participants] == ["lee-tab"]
    )
    a.call.cancel()
