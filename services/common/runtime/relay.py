"""Between the worker processes of one `hacs serve --workers N`: messages and shared values.

The embedded platform has no Redis. When `hacs serve` runs several worker processes, the
supervisor (the process that started them, services/app/supervisor.py) runs a `RelayHub` on
a Unix socket in a directory only its user can open, and each worker connects to it once
(`RelayClient`). The hub carries what Redis carries between the replicas of the mesh:

* messages on named channels, to every other worker: change notices ("tenant T's change log
  grew": the indexer and Watch streams of every worker wake), registry announcements
  ("forget what you know of tenant T": a revocation reaches every worker at once), and the
  collaboration sessions' presence and edit details;
* a small table of values that expire (sync's write stamps).

Nothing here is a source of truth or carries authority: the database is and does. A lost
message costs time, never correctness (readers re-read the change log from their cursors;
admission trusts what it read for at most HACS_REVOCATION_SECONDS), so a worker whose
socket buffer is full loses messages rather than stall the others.

The hub's end is the worker's end: when its connection drops (the supervisor died), the
client calls `on_lost`, and the worker stops (no worker outlives its supervisor).

Wire format: one JSON object per line.
  worker -> hub: {"op": "hello", "worker": i, "pid": p, "grpc": addr}
                 {"op": "sub", "ch": C}            {"op": "pub", "ch": C, "data": D}
                 {"op": "put", "key": K, "field": F, "value": V, "ttl": seconds}
                 {"op": "get", "id": N, "key": K, "fields": [F, ...]}
  hub -> worker: {"op": "msg", "ch": C, "data": D}  {"op": "got", "id": N, "values": {F: V}}
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.common.change_bus import ChangeNotice, LocalChangeBus, Subscription

log = logging.getLogger(__name__)

# A line longer than this is not ours: the connection is closed.
MAX_LINE_BYTES = 4 * 1024 * 1024
# Bytes waiting to be sent to one worker past which messages to it are dropped.
MAX_BACKLOG_BYTES = 16 * 1024 * 1024
# Values the hub holds at most; past it the least recently written keys go first.
MAX_KEYS = 100_000
GET_TIMEOUT_SECONDS = 0.5

CHANGES = "changes"
REGISTRY = "registry"


@dataclass
class WorkerInfo:
    """What a worker said of itself when it connected."""

    index: int
    pid: int
    grpc: str


@dataclass(eq=False)  # one per connection, hashed by identity
class _Peer:
    writer: asyncio.StreamWriter
    channels: set[str] = field(default_factory=set)
    worker: WorkerInfo | None = None
    dropped: int = 0


class RelayHub:
    """The supervisor's end: fans messages out and keeps the shared values."""

    def __init__(
        self,
        socket_path: Path,
        on_hello: Callable[[WorkerInfo], None] | None = None,
        on_gone: Callable[[WorkerInfo], None] | None = None,
    ) -> None:
        self.socket_path = socket_path
        self._on_hello = on_hello
        self._on_gone = on_gone
        self._peers: set[_Peer] = set()
        self._values: OrderedDict[str, tuple[float, dict[str, str]]] = OrderedDict()
        self._server: asyncio.AbstractServer | None = None
        self._closed = False

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(
            self._serve, path=str(self.socket_path), limit=MAX_LINE_BYTES
        )
        self.socket_path.chmod(0o600)

    async def close(self) -> None:
        self._closed = True
        if self._server is not None:
            self._server.close()
            for peer in list(self._peers):
                peer.writer.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._closed:  # accepted just before the hub closed
            writer.close()
            return
        peer = _Peer(writer)
        self._peers.add(peer)
        try:
            while line := await reader.readline():
                try:
                    request = json.loads(line)
                    self._handle(peer, request)
                except (ValueError, KeyError, TypeError) as exc:
                    log.warning("relay: a malformed message from a worker (%r); ignored", exc)
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass  # a line past MAX_LINE_BYTES, or the worker went away mid-line
        finally:
            self._peers.discard(peer)
            writer.close()
            if peer.worker is not None and self._on_gone is not None:
                self._on_gone(peer.worker)

    def _handle(self, peer: _Peer, request: dict[str, Any]) -> None:
        op = request["op"]
        if op == "pub":
            line = _line({"op": "msg", "ch": request["ch"], "data": request["data"]})
            for other in self._peers:
                if other is not peer and request["ch"] in other.channels:
                    self._send(other, line)
        elif op == "sub":
            peer.channels.add(str(request["ch"]))
        elif op == "put":
            self._put(str(request["key"]), str(request["field"]), str(request["value"]), request)
        elif op == "get":
            values = self._get(str(request["key"]), [str(f) for f in request["fields"]])
            self._send(peer, _line({"op": "got", "id": request["id"], "values": values}))
        elif op == "hello":
            peer.worker = WorkerInfo(int(request["worker"]), int(request["pid"]), request["grpc"])
            if self._on_hello is not None:
                self._on_hello(peer.worker)

    def _send(self, peer: _Peer, line: bytes) -> None:
        transport = peer.writer.transport
        if transport.get_write_buffer_size() > MAX_BACKLOG_BYTES:
            peer.dropped += 1
            if peer.dropped in (1, 1000) or peer.dropped % 100_000 == 0:
                log.warning(
                    "relay: worker %s reads too slowly; %d messages to it dropped",
                    peer.worker.index if peer.worker else "?",
                    peer.dropped,
                )
            return
        peer.writer.write(line)

    def _put(self, key: str, name: str, value: str, request: dict[str, Any]) -> None:
        expires = time.monotonic() + float(request.get("ttl", 86_400))
        _, fields = self._values.pop(key, (0.0, {}))
        fields[name] = value
        self._values[key] = (expires, fields)
        while len(self._values) > MAX_KEYS:
            self._values.popitem(last=False)

    def _get(self, key: str, names: list[str]) -> dict[str, str]:
        entry = self._values.get(key)
        if entry is None:
            return {}
        if entry[0] < time.monotonic():
            del self._values[key]
            return {}
        return {n: entry[1][n] for n in names if n in entry[1]}


def _line(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


class RelayClient:
    """A worker's end of the hub."""

    def __init__(self, socket_path: str) -> None:
        self._path = socket_path
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._handlers: dict[str, list[Callable[[str], None]]] = {}
        self._pending: dict[int, asyncio.Future[dict[str, str]]] = {}
        self._ids = itertools.count(1)
        self._task: asyncio.Task[None] | None = None
        self._lost: list[Callable[[], None]] = []
        self._closing = False
        self.lost = False

    async def connect(self) -> None:
        self._reader, self._writer = await asyncio.open_unix_connection(
            self._path, limit=MAX_LINE_BYTES
        )
        self._task = asyncio.create_task(self._read(), name="relay-reader")

    def hello(self, index: int, pid: int, grpc: str) -> None:
        self._write({"op": "hello", "worker": index, "pid": pid, "grpc": grpc})

    def on_lost(self, callback: Callable[[], None]) -> None:
        """Call `callback` when the hub is gone (at once if it is already)."""
        if self.lost:
            callback()
        self._lost.append(callback)

    def subscribe(self, channel: str, handler: Callable[[str], None]) -> None:
        if channel not in self._handlers:
            self._write({"op": "sub", "ch": channel})
        self._handlers.setdefault(channel, []).append(handler)

    def publish(self, channel: str, data: str) -> None:
        """To every other worker subscribed to `channel` (not to this one)."""
        self._write({"op": "pub", "ch": channel, "data": data})

    def put(self, key: str, name: str, value: str, ttl_seconds: float) -> None:
        self._write({"op": "put", "key": key, "field": name, "value": value, "ttl": ttl_seconds})

    async def get(self, key: str, names: list[str]) -> dict[str, str]:
        """The fields of `key` the hub holds; {} if it does not answer in time."""
        request_id = next(self._ids)
        future: asyncio.Future[dict[str, str]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        self._write({"op": "get", "id": request_id, "key": key, "fields": names})
        try:
            return await asyncio.wait_for(future, GET_TIMEOUT_SECONDS)
        except TimeoutError:
            log.warning("relay: the hub did not answer a read in time")
            return {}
        finally:
            self._pending.pop(request_id, None)

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._writer is not None:
            self._writer.close()

    def _write(self, message: dict[str, Any]) -> None:
        if self._writer is None or self._writer.is_closing():
            return  # lost: on_lost is stopping this worker
        self._writer.write(_line(message))

    async def _read(self) -> None:
        assert self._reader is not None
        try:
            while line := await self._reader.readline():
                try:
                    message = json.loads(line)
                    if message["op"] == "msg":
                        for handler in self._handlers.get(message["ch"], ()):
                            handler(message["data"])
                    elif message["op"] == "got":
                        future = self._pending.get(message["id"])
                        if future is not None and not future.done():
                            future.set_result(dict(message["values"]))
                except (ValueError, KeyError, TypeError) as exc:
                    log.warning("relay: a malformed message from the hub (%r); ignored", exc)
        except (ConnectionError, asyncio.LimitOverrunError, ValueError) as exc:
            log.warning("relay: connection to the supervisor failed (%r)", exc)
        if not self._closing:
            log.error("relay: the supervisor is gone; this worker stops")
            self.lost = True
            for callback in self._lost:
                callback()


class RelayChangeBus:
    """Change notices for this worker's readers, and every other worker's, through the hub."""

    def __init__(self, relay: RelayClient) -> None:
        self._relay = relay
        self._local = LocalChangeBus()
        relay.subscribe(CHANGES, self._heard)

    async def publish(self, notice: ChangeNotice) -> None:
        await self._local.publish(notice)
        self._relay.publish(CHANGES, f"{notice.tenant_id} {notice.sequence}")

    def subscribe(self) -> Subscription:
        return self._local.subscribe()

    def _heard(self, data: str) -> None:
        tenant_id, _, sequence = data.rpartition(" ")
        notice = ChangeNotice(tenant_id, int(sequence))
        for subscription in self._local.subscribers():
            subscription.offer(notice)


class RelayAnnouncements:
    """Registry changes told to the other workers (admission's `Announcements`)."""

    def __init__(self, relay: RelayClient) -> None:
        self._relay = relay

    async def publish(self, tenant_id: str) -> None:
        self._relay.publish(REGISTRY, tenant_id)

    def listen(self, forget: Callable[[str], None]) -> None:
        self._relay.subscribe(REGISTRY, forget)

    async def close(self) -> None:
        return None
