"""Change notifications: "tenant T's change log now reaches sequence N".

The change log in the database is the source of truth; the bus only tells
readers (the indexer, sync streams) that there is something new to read, so
they need not poll. A reader that misses a notification loses nothing: it
reads the log from its own cursor. In-process by default (`LocalChangeBus`);
with HACS_REDIS_URL set, `RedisChangeBus` carries notices between processes,
so a write on one replica wakes the readers of every other one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import redis.asyncio as redis_asyncio
from redis.exceptions import RedisError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChangeNotice:
    tenant_id: str
    sequence: int


class ChangeBus(Protocol):
    async def publish(self, notice: ChangeNotice) -> None: ...

    def subscribe(self) -> Subscription: ...


class Subscription:
    """A bounded queue of notices; when it overflows, the oldest are dropped
    (the reader re-reads the log from its cursor, so nothing is lost)."""

    def __init__(self, bus: LocalChangeBus, size: int = 1024) -> None:
        self._bus = bus
        self._queue: asyncio.Queue[ChangeNotice] = asyncio.Queue(maxsize=size)

    def offer(self, notice: ChangeNotice) -> None:
        if self._queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self._queue.get_nowait()
        self._queue.put_nowait(notice)

    async def next(self) -> ChangeNotice:
        return await self._queue.get()

    async def __aiter__(self) -> AsyncIterator[ChangeNotice]:
        while True:
            yield await self._queue.get()

    def close(self) -> None:
        self._bus.unsubscribe(self)


class LocalChangeBus:
    def __init__(self) -> None:
        self._subscribers: set[Subscription] = set()

    async def publish(self, notice: ChangeNotice) -> None:
        for subscription in list(self._subscribers):
            subscription.offer(notice)

    def subscribe(self) -> Subscription:
        subscription = Subscription(self)
        self._subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)

    def subscribers(self) -> list[Subscription]:
        return list(self._subscribers)


class RedisChangeBus:
    """Notices through one Redis stream, so every replica hears every write.

    A stream rather than pub/sub: a replica whose connection drops resumes
    reading after the last entry it saw, so a short Redis outage delays
    notices instead of losing them (the stream keeps the newest `max_entries`).
    Publishing never fails a write (it has committed already): if Redis is
    unreachable the notice is logged as lost and readers fall back to polling
    the log. Same-process readers are woken directly, without the round trip.
    """

    def __init__(
        self,
        url: str,
        *,
        stream: str = "hacs:changes",
        max_entries: int = 100_000,
        publish_timeout_seconds: float = 1.0,
    ) -> None:
        self._url = url
        self._stream = stream
        self._max_entries = max_entries
        self._publish_timeout = publish_timeout_seconds
        # Two clients: a blocking XREAD must not hold up publishes.
        self._writer = redis_asyncio.from_url(url, decode_responses=True)
        self._reader_client = redis_asyncio.from_url(url, decode_responses=True)
        self._origin = uuid.uuid4().hex[:12]
        self._local = LocalChangeBus()
        self._reader: asyncio.Task[None] | None = None
        self._last_warning = 0.0

    async def publish(self, notice: ChangeNotice) -> None:
        await self._local.publish(notice)
        fields: dict[Any, Any] = {
            "tenant": notice.tenant_id,
            "sequence": notice.sequence,
            "origin": self._origin,
        }
        try:
            await asyncio.wait_for(
                self._writer.xadd(self._stream, fields, maxlen=self._max_entries, approximate=True),
                self._publish_timeout,
            )
        except (RedisError, OSError, TimeoutError) as exc:
            self._warn(f"could not publish a change notice to Redis ({exc!r}); readers will poll")

    def subscribe(self) -> Subscription:
        if self._reader is None:
            self._reader = asyncio.create_task(self._read(), name="redis-change-bus")
        return self._local.subscribe()

    async def ping(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self._writer.ping(), self._publish_timeout))
        except (RedisError, OSError, TimeoutError):
            return False

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._writer.aclose()
        await self._reader_client.aclose()

    async def _read(self) -> None:
        """Relay every other process's notices to this process's subscribers."""
        last_id: str | None = None
        backoff = 0.1
        while True:
            try:
                if last_id is None:
                    # Start after the newest entry: "$" in a loop would skip entries
                    # added between two reads.
                    newest: Any = await self._reader_client.xrevrange(self._stream, count=1)
                    last_id = str(newest[0][0]) if newest else "0-0"
                replies: Any = await self._reader_client.xread(
                    {self._stream: last_id}, block=5000, count=1000
                )
                backoff = 0.1
                for _stream, entries in replies or ():
                    for entry_id, fields in entries:
                        last_id = str(entry_id)
                        if fields.get("origin") == self._origin:
                            continue
                        await self._local.publish(
                            ChangeNotice(str(fields["tenant"]), int(fields["sequence"]))
                        )
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, KeyError, ValueError) as exc:
                self._warn(f"reading change notices from Redis failed ({exc!r}); retrying")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_warning > 30:  # one line per outage, not one per write
            self._last_warning = now
            log.warning("%s (%s)", message, self._url.rsplit("@", 1)[-1])
