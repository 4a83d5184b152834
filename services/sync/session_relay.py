"""What collaboration sessions on different replicas tell each other, via Redis (or, between
the workers of one `hacs serve --workers N`, the supervisor's hub).

Edits themselves travel through the change log (every replica's session sees
every version of its record, in order). What the log does not carry goes
here: who is in the session (presence) and the edit details of a version
(edit id, client id, dropped patches) so participants on other replicas get
the same EditApplied the author's replica built. Pub/sub is enough: presence
is refreshed periodically and expires, and a lost edit detail only means the
remote replica describes that version from the record itself.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

import redis.asyncio as redis_asyncio
from redis.exceptions import RedisError

from services.common.runtime.relay import RelayClient

log = logging.getLogger(__name__)

CHANNEL = "hacs:sync:sessions"


@dataclass(frozen=True)
class RelayMessage:
    # "presence" | "leave" | "hello" | "edit"
    kind: str
    session: str  # the record name
    origin: str = ""
    participant: str = ""  # "actor|client_id"
    version: int = 0
    payload: bytes = b""  # a serialized Participant or EditApplied

    def encode(self) -> str:
        return json.dumps(
            {
                "k": self.kind,
                "s": self.session,
                "o": self.origin,
                "p": self.participant,
                "v": self.version,
                "b": base64.b64encode(self.payload).decode(),
            }
        )

    @classmethod
    def decode(cls, text: str) -> RelayMessage:
        data = json.loads(text)
        return cls(
            kind=str(data["k"]),
            session=str(data["s"]),
            origin=str(data["o"]),
            participant=str(data["p"]),
            version=int(data["v"]),
            payload=base64.b64decode(data["b"]),
        )


class SessionRelay(Protocol):
    origin: str

    def start(
        self, on_message: Callable[[RelayMessage], None], on_reconnect: Callable[[], None]
    ) -> None: ...

    def publish(self, message: RelayMessage) -> None: ...

    async def close(self) -> None: ...


class RedisSessionRelay:
    """Messages to and from the sessions of other replicas on one pub/sub channel."""

    def __init__(self, url: str, *, channel: str = CHANNEL, max_queued: int = 10_000) -> None:
        self.origin = uuid.uuid4().hex[:12]
        self._url = url
        self._channel = channel
        self._client = redis_asyncio.from_url(url, decode_responses=True)
        self._outbox: asyncio.Queue[RelayMessage] = asyncio.Queue(maxsize=max_queued)
        self._tasks: list[asyncio.Task[None]] = []
        self._last_warning = 0.0

    def start(
        self, on_message: Callable[[RelayMessage], None], on_reconnect: Callable[[], None]
    ) -> None:
        self._tasks = [
            asyncio.create_task(self._send(), name="sync-relay-send"),
            asyncio.create_task(self._receive(on_message, on_reconnect), name="sync-relay-recv"),
        ]

    def publish(self, message: RelayMessage) -> None:
        """Queue a message (in order); when Redis cannot keep up the oldest give way."""
        stamped = replace(message, origin=self.origin)
        if self._outbox.full():
            self._outbox.get_nowait()
        self._outbox.put_nowait(stamped)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._client.aclose()

    async def _send(self) -> None:
        while True:
            message = await self._outbox.get()
            try:
                await self._client.publish(self._channel, message.encode())
            except (RedisError, OSError) as exc:
                self._warn(f"could not publish a session message ({exc!r})")

    async def _receive(
        self, on_message: Callable[[RelayMessage], None], on_reconnect: Callable[[], None]
    ) -> None:
        backoff = 0.1
        first = True
        while True:
            pubsub = self._client.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                if not first:
                    on_reconnect()  # presence may have been missed while away
                first = False
                backoff = 0.1
                while True:
                    item = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5.0)
                    if item is None or item.get("type") != "message":
                        continue
                    try:
                        message = RelayMessage.decode(item["data"])
                    except (ValueError, KeyError, TypeError):
                        continue
                    if message.origin != self.origin:
                        on_message(message)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self._warn(f"session relay connection lost ({exc!r}); reconnecting")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_warning > 30:
            self._last_warning = now
            log.warning(message)


class HubSessionRelay:
    """The same messages between the workers of one `hacs serve --workers N`, through the
    supervisor's hub (services/common/runtime/relay.py) instead of Redis."""

    def __init__(self, relay: RelayClient, *, channel: str = CHANNEL) -> None:
        self.origin = uuid.uuid4().hex[:12]
        self._relay = relay
        self._channel = channel

    def start(
        self, on_message: Callable[[RelayMessage], None], on_reconnect: Callable[[], None]
    ) -> None:
        def heard(text: str) -> None:
            try:
                message = RelayMessage.decode(text)
            except (ValueError, KeyError, TypeError):
                return
            if message.origin != self.origin:
                on_message(message)

        self._relay.subscribe(self._channel, heard)

    def publish(self, message: RelayMessage) -> None:
        stamped = replace(message, origin=self.origin)
        self._relay.publish(self._channel, stamped.encode())

    async def close(self) -> None:
        return None
