"""The live tail: one reader of each tenant's change log per process, fanned out.

However many streams watch a tenant, the process reads each new change from
the database once and hands the same `LogEvent` to every follower whose
filter matches. A follower attaches at a log position; the attach check and
every dispatch run without an await in between, so a follower receives every
change after its position exactly once — the property that makes the switch
from replay to live gap-free and duplicate-free.

The tail wakes on change notices (the process's ChangeBus: in-process, or
Redis across replicas) and also polls, so a lost notice costs latency, never
a change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Protocol

from services.common.change_bus import ChangeBus
from services.sync.change_log import ChangeLogReader, LogEvent

log = logging.getLogger(__name__)


class Follower(Protocol):
    """A consumer of a tenant's live changes (a Watch stream, a collaboration session)."""

    @property
    def wants_records(self) -> bool: ...

    def accepts(self, event: LogEvent) -> bool: ...

    def offer(self, event: LogEvent) -> bool:
        """Take the event; False means "detach me" (the follower gave up, e.g. overflow)."""
        ...


class TenantTail:
    def __init__(
        self,
        hub: ChangeHub,
        tenant_id: str,
        position: int,
    ) -> None:
        self.hub = hub
        self.tenant_id = tenant_id
        # Every change up to here has been dispatched.
        self.position = position
        self.followers: dict[Follower, int] = {}  # follower -> position it attached at
        self._wake = asyncio.Event()
        self._idle_since = time.monotonic()
        self._task = asyncio.create_task(self._run(), name=f"sync-tail-{tenant_id}")

    def wake(self) -> None:
        self._wake.set()

    def detach(self, follower: Follower) -> None:
        self.followers.pop(follower, None)
        if not self.followers:
            self._idle_since = time.monotonic()

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        while True:
            try:
                await self.catch_up()
            except asyncio.CancelledError:
                raise
            except Exception:  # the database hiccupped: the position did not move, retry
                log.exception(
                    "reading the change log of tenant %s failed; retrying", self.tenant_id
                )
                await asyncio.sleep(1)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.hub.poll_seconds)
            self._wake.clear()
            if not self.followers and time.monotonic() - self._idle_since > self.hub.linger_seconds:
                self.hub.forget(self)
                return

    async def catch_up(self) -> None:
        """Read and dispatch every change after `position`, page by page."""
        while self.followers:
            wanted = [f for f in self.followers if f.wants_records]
            page = await self.hub.reader.read(
                self.tenant_id,
                after=self.position,
                limit=self.hub.page_size,
                wants_record=_any_accepts(wanted) if wanted else None,
            )
            # No await from here to the end of the loop body: attach() sees either
            # none or all of this page dispatched.
            for event in page.events:
                self._dispatch(event)
            self.position = max(self.position, page.scanned_to)
            if page.scanned_to >= page.head:
                return

    def _dispatch(self, event: LogEvent) -> None:
        dropped = []
        for follower, attached_at in self.followers.items():
            if (
                event.sequence > attached_at
                and follower.accepts(event)
                and not follower.offer(event)
            ):
                dropped.append(follower)
        for follower in dropped:
            self.detach(follower)
        self.position = event.sequence


def _any_accepts(followers: list[Follower]) -> Callable[[LogEvent], bool]:
    return lambda event: any(f.accepts(event) for f in followers)


class ChangeHub:
    """Every tenant tail of this process, woken by the change bus."""

    def __init__(
        self,
        reader: ChangeLogReader,
        bus: ChangeBus,
        *,
        page_size: int = 500,
        poll_seconds: float = 2.0,
        linger_seconds: float = 30.0,
    ) -> None:
        self.reader = reader
        self.page_size = page_size
        self.poll_seconds = poll_seconds
        self.linger_seconds = linger_seconds
        self._bus = bus
        self._tails: dict[str, TenantTail] = {}
        self._listener: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen(), name="sync-change-hub")

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        for tail in list(self._tails.values()):
            await tail.stop()
        self._tails.clear()

    def attach(self, tenant_id: str, follower: Follower, after: int) -> int | None:
        """Follow a tenant's changes after `after`.

        Returns None when attached; otherwise the tail is already past `after`
        and the caller must first replay up to the returned position itself
        (from the log), then attach again.
        """
        tail = self._tails.get(tenant_id)
        if tail is None:
            tail = self._tails[tenant_id] = TenantTail(self, tenant_id, after)
        if tail.position > after:
            return tail.position
        tail.followers[follower] = after
        tail.wake()  # a change may have landed between the caller's read and now
        return None

    def detach(self, tenant_id: str, follower: Follower) -> None:
        tail = self._tails.get(tenant_id)
        if tail is not None:
            tail.detach(follower)

    def position(self, tenant_id: str) -> int:
        """How far this process has dispatched a tenant's log (0 when nobody follows it)."""
        tail = self._tails.get(tenant_id)
        return tail.position if tail is not None else 0

    def forget(self, tail: TenantTail) -> None:
        if self._tails.get(tail.tenant_id) is tail and not tail.followers:
            del self._tails[tail.tenant_id]

    async def _listen(self) -> None:
        subscription = self._bus.subscribe()
        try:
            while True:
                notice = await subscription.next()
                tail = self._tails.get(notice.tenant_id)
                if tail is not None and notice.sequence > tail.position:
                    tail.wake()
        finally:
            subscription.close()
