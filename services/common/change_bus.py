"""Change notifications: "tenant T's change log now reaches sequence N".

The change log in the database is the source of truth; the bus only tells
readers (the indexer, sync streams) that there is something new to read, so
they need not poll. A reader that misses a notification loses nothing: it
reads the log from its own cursor. In-process here; the mesh uses Redis
(services/sync) so notifications cross replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol


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
