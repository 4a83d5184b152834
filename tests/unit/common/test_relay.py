"""The hub between the workers of one `hacs serve --workers N`, on a real Unix socket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.common.change_bus import ChangeNotice
from services.common.runtime import relay as relay_module
from services.common.runtime.relay import (
    RelayAnnouncements,
    RelayChangeBus,
    RelayClient,
    RelayHub,
    WorkerInfo,
)


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[RelayHub]:
    hub = RelayHub(tmp_path / "relay.sock")
    await hub.start()
    yield hub
    await hub.close()


async def _client(hub: RelayHub) -> RelayClient:
    client = RelayClient(str(hub.socket_path))
    await client.connect()
    return client


async def _settle() -> None:
    """Let lines cross the socket and be handled on both ends."""
    for _ in range(20):
        await asyncio.sleep(0.01)


async def test_the_socket_is_its_owners_alone(hub: RelayHub) -> None:
    assert hub.socket_path.stat().st_mode & 0o777 == 0o600


async def test_a_change_notice_wakes_the_readers_of_every_other_worker(hub: RelayHub) -> None:
    a, b, c = [await _client(hub) for _ in range(3)]
    bus_a, bus_b, bus_c = RelayChangeBus(a), RelayChangeBus(b), RelayChangeBus(c)
    here, there, elsewhere = bus_a.subscribe(), bus_b.subscribe(), bus_c.subscribe()
    await _settle()  # the subscriptions reach the hub before the publish does
    await bus_a.publish(ChangeNotice("north", 42))
    for subscription in (here, there, elsewhere):
        notice = await asyncio.wait_for(subscription.next(), timeout=5)
        assert notice == ChangeNotice("north", 42)
    await _settle()
    # Exactly once each: the hub does not echo a notice back to the worker that sent it.
    assert here._queue.empty() and there._queue.empty()
    for client in (a, b, c):
        await client.close()


async def test_a_registry_announcement_makes_the_other_workers_forget_the_tenant(
    hub: RelayHub,
) -> None:
    a, b = await _client(hub), await _client(hub)
    forgotten: list[str] = []
    RelayAnnouncements(b).listen(forgotten.append)
    await _settle()
    await RelayAnnouncements(a).publish("south")
    await _settle()
    assert forgotten == ["south"]
    await a.close()
    await b.close()


async def test_shared_values_are_read_by_other_workers_and_expire(hub: RelayHub) -> None:
    a, b = await _client(hub), await _client(hub)
    a.put("stamps:r1", "3", "value-3", ttl_seconds=60)
    a.put("stamps:r1", "4", "value-4", ttl_seconds=60)
    a.put("stamps:r2", "1", "gone soon", ttl_seconds=0.05)
    await _settle()
    assert await b.get("stamps:r1", ["3", "4", "5"]) == {"3": "value-3", "4": "value-4"}
    assert await b.get("stamps:r2", ["1"]) == {}  # expired
    assert await b.get("nothing", ["1"]) == {}
    await a.close()
    await b.close()


async def test_the_hub_holds_a_bounded_number_of_keys(
    hub: RelayHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(relay_module, "MAX_KEYS", 3)
    a = await _client(hub)
    for i in range(5):
        a.put(f"k{i}", "f", str(i), ttl_seconds=60)
    await _settle()
    found = {i for i in range(5) if await a.get(f"k{i}", ["f"])}
    assert found == {2, 3, 4}  # the least recently written went first
    await a.close()


async def test_malformed_lines_are_ignored_and_the_hub_keeps_serving(hub: RelayHub) -> None:
    _reader, writer = await asyncio.open_unix_connection(str(hub.socket_path))
    writer.write(b'not json\n{"op": "pub"}\n{"op": "nonsense"}\n')
    await writer.drain()
    a, b = await _client(hub), await _client(hub)
    heard: list[str] = []
    b.subscribe("news", heard.append)
    await _settle()
    a.publish("news", "still here")
    await _settle()
    assert heard == ["still here"]
    writer.close()
    for client in (a, b):
        await client.close()


async def test_hello_tells_the_supervisor_who_serves(tmp_path: Path) -> None:
    said: list[WorkerInfo] = []
    gone: list[WorkerInfo] = []
    hub = RelayHub(tmp_path / "relay.sock", on_hello=said.append, on_gone=gone.append)
    await hub.start()
    a = await _client(hub)
    a.hello(1, 4242, "127.0.0.1:5555")
    await _settle()
    assert said == [WorkerInfo(1, 4242, "127.0.0.1:5555")]
    await a.close()
    await _settle()
    assert gone == said
    await hub.close()


async def test_a_worker_learns_its_supervisor_is_gone(tmp_path: Path) -> None:
    hub = RelayHub(tmp_path / "relay.sock")
    await hub.start()
    a = await _client(hub)
    lost = asyncio.Event()
    a.on_lost(lost.set)
    await _settle()  # the hub has taken the connection
    await hub.close()
    await asyncio.wait_for(lost.wait(), timeout=5)
    assert a.lost
    late = asyncio.Event()
    a.on_lost(late.set)  # registered after the loss: called at once
    assert late.is_set()
    a.publish("news", "into the void")  # a lost hub swallows writes; it does not raise
    await a.close()


async def test_a_read_the_hub_does_not_answer_returns_nothing(tmp_path: Path) -> None:
    """A hub that accepts but never answers: the read gives up quickly, with nothing."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    server = await asyncio.start_unix_server(silent, path=str(tmp_path / "silent.sock"))
    client = RelayClient(str(tmp_path / "silent.sock"))
    await client.connect()
    assert await client.get("k", ["f"]) == {}
    await client.close()
    server.close()
