"""Watch: replay a tenant's change log from a cursor, then follow it live.

A stream first reads the log from its cursor at its own pace (replay pulls
pages, so a slow consumer slows only itself), then attaches to the process's
live tail at the exact position replay reached and sends what the tail hands
it. If the tail is already past that position, the stream replays the
difference first; see `ChangeHub.attach` for why that leaves no gap and no
duplicate.

Live, the server holds at most `max_pending` events for a stream. A consumer
that lets more pile up is cut off with RESOURCE_EXHAUSTED (ErrorInfo reason
SLOW_CONSUMER, metadata "cursor": the last event it was sent) and resumes
from there — memory stays bounded whatever the consumer does.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from hacs.sync.v1 import sync_service_pb2 as pb

from services.common.caller import Caller
from services.common.errors import SlowConsumer, Unauthenticated
from services.kernel.records.access import require_own_parent
from services.sync import cursors
from services.sync.change_log import ChangeLogReader, LogBounds, LogEvent
from services.sync.filters import ChangeFilter, WatchFilter, compile_filter
from services.sync.tail import ChangeHub

DEFAULT_HEARTBEAT_SECONDS = 15.0

# Writes one message to the stream's client (the RPC's context.write).
Send = Callable[[pb.WatchResponse], Awaitable[None]]


@dataclass(frozen=True)
class WatchLimits:
    # Live events a stream may have waiting before it counts as a slow consumer.
    max_pending: int = 4096
    # Changes read from the log per replay page.
    replay_page: int = 500


class LiveQueue:
    """A stream's bounded queue of live events (a tail `Follower`)."""

    def __init__(self, change_filter: ChangeFilter, with_records: bool, limit: int) -> None:
        self._filter = change_filter
        self._with_records = with_records
        self._limit = limit
        self._pending: deque[LogEvent] = deque()
        # The stream's wait, when it waits: a bare future, no task per wait.
        self._waiter: asyncio.Future[None] | None = None
        self.overflowed = False

    @property
    def wants_records(self) -> bool:
        return self._with_records

    def accepts(self, event: LogEvent) -> bool:
        return self._filter.matches(event)

    def offer(self, event: LogEvent) -> bool:
        if len(self._pending) >= self._limit:
            self.overflowed = True
            self._pending.clear()  # the consumer resumes from its cursor; free the memory now
            self._wake()
            return False
        self._pending.append(event)
        self._wake()
        return True

    def pop(self) -> LogEvent | None:
        return self._pending.popleft() if self._pending else None

    async def wait(self, seconds: float) -> None:
        """Until an event (or overflow) arrives, or `seconds` pass."""
        if self._pending or self.overflowed:
            return
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(max(seconds, 0.0), _resolve, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None:
            _resolve(self._waiter)


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class _Stream:
    """Where one stream stands: everything up to `after` was sent or did not match."""

    def __init__(
        self, caller: Caller, tenant_id: str, after: int, heartbeat_seconds: float, send: Send
    ) -> None:
        self._send = send
        self.tenant_id = tenant_id
        self.after = after
        self.replayed = 0
        self.heartbeat_seconds = heartbeat_seconds
        self.last_sent = time.monotonic()
        self.expires_at = caller.expires_at.timestamp() if caller.expires_at else None

    @property
    def cursor(self) -> str:
        return cursors.encode(self.tenant_id, self.after)

    async def send(self, message: pb.WatchResponse) -> None:
        await self._send(message)
        self.last_sent = time.monotonic()

    def heartbeat_due_in(self) -> float:
        return self.last_sent + self.heartbeat_seconds - time.monotonic()

    def expires_in(self) -> float:
        return float("inf") if self.expires_at is None else self.expires_at - time.time()

    def check_token(self) -> None:
        if self.expires_in() <= 0:
            raise Unauthenticated(
                "the token expired during the stream; reconnect with a new token and resume "
                f"from cursor {self.cursor}"
            )

    def heartbeat(self, position: int) -> pb.WatchResponse:
        beat = pb.Heartbeat(cursor=cursors.encode(self.tenant_id, position))
        beat.server_time.FromDatetime(datetime.now(UTC))
        return pb.WatchResponse(heartbeat=beat)


@dataclass(frozen=True)
class WatchSpec:
    """One Watch call: what to deliver, from where, how often to beat, records or not."""

    filter: WatchFilter = field(default_factory=WatchFilter)
    resume_cursor: str = ""
    start_at_earliest: bool = False
    heartbeat_seconds: float = 0.0  # 0: the default
    include_records: bool = False


class Watcher:
    def __init__(
        self, reader: ChangeLogReader, hub: ChangeHub, limits: WatchLimits | None = None
    ) -> None:
        self._reader = reader
        self._hub = hub
        self.limits = limits or WatchLimits()

    async def watch(self, caller: Caller, tenant_id: str, request: WatchSpec, send: Send) -> None:
        """Serve one stream, handing each message to `send` (the RPC's write).

        The messages are the wire's: each change's is built once and sent to
        every stream that wants it (change_log.LogEvent), not once per stream.
        """
        change_filter = compile_filter(caller, tenant_id, request.filter)
        start = await self._start(tenant_id, request)
        heartbeat = request.heartbeat_seconds or DEFAULT_HEARTBEAT_SECONDS
        stream = _Stream(caller, tenant_id, start, heartbeat, send)
        with_records = request.include_records
        await self._replay(stream, change_filter, with_records, up_to=None)
        queue = LiveQueue(change_filter, with_records, self.limits.max_pending)
        while (target := self._hub.attach(tenant_id, queue, stream.after)) is not None:
            await self._replay(stream, change_filter, with_records, up_to=target)
        try:
            await stream.send(
                pb.WatchResponse(
                    caught_up=pb.CaughtUp(cursor=stream.cursor, replayed_count=stream.replayed)
                )
            )
            await self._live(stream, queue, with_records)
        finally:
            self._hub.detach(tenant_id, queue)

    async def head(self, caller: Caller, tenant_id: str) -> LogBounds:
        """Where the tenant's log stands now (GetSyncCursor): watch from here for "now on"."""
        require_own_parent(caller, tenant_id, "read:*")
        return await self._reader.bounds(tenant_id)

    async def _start(self, tenant_id: str, request: WatchSpec) -> int:
        if request.resume_cursor:
            after = cursors.decode(request.resume_cursor, "resume_cursor", tenant_id)
            await self._reader.check_resumable(tenant_id, after, "resume_cursor")
            return after
        bounds = await self._reader.bounds(tenant_id)
        if request.start_at_earliest:
            return max(bounds.earliest - 1, 0)
        return bounds.head

    async def _replay(
        self, stream: _Stream, change_filter: ChangeFilter, with_records: bool, up_to: int | None
    ) -> None:
        while True:
            stream.check_token()
            page = await self._reader.read(
                stream.tenant_id,
                after=stream.after,
                limit=self.limits.replay_page,
                up_to=up_to,
                collections=sorted(change_filter.collections),
                wants_record=change_filter.matches if with_records else None,
            )
            for event in page.events:
                if change_filter.matches(event):
                    await stream.send(event.response(with_records))
                    stream.replayed += 1
                stream.after = event.sequence
            stream.after = max(stream.after, page.scanned_to)
            if stream.heartbeat_due_in() <= 0:  # a long scan with nothing to send
                await stream.send(stream.heartbeat(stream.after))
            end = page.head if up_to is None else min(up_to, page.head)
            if stream.after >= end:
                return

    async def _live(self, stream: _Stream, queue: LiveQueue, with_records: bool) -> None:
        while True:
            if queue.overflowed:
                raise SlowConsumer(
                    f"the stream fell more than {self.limits.max_pending} changes behind; "
                    "resume from the cursor in ErrorInfo.metadata['cursor']",
                    cursor=stream.cursor,
                    limit=f"{self.limits.max_pending} pending changes per stream",
                )
            stream.check_token()
            event = queue.pop()
            if event is None:
                due = stream.heartbeat_due_in()
                if due <= 0:
                    position = max(stream.after, self._hub.position(stream.tenant_id))
                    await stream.send(stream.heartbeat(position))
                    continue
                await queue.wait(min(due, stream.expires_in()))
                continue
            if with_records and event.record is None and event.operation != "PURGE":
                # Attached after the tail loaded this page: fetch the version ourselves.
                event = await self._with_record(stream.tenant_id, event)
            await stream.send(event.response(with_records))
            stream.after = event.sequence

    async def _with_record(self, tenant_id: str, event: LogEvent) -> LogEvent:
        copy = LogEvent(
            sequence=event.sequence,
            collection=event.collection,
            name=event.name,
            operation=event.operation,
            version=event.version,
            patients=event.patients,
            labels=event.labels,
            change=event.change,
            cursor=event.cursor,
            record=await self._reader.record_of(tenant_id, event),
        )
        return copy
