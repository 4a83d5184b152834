"""A participant of a collaboration session: one client stream, its presence, its outbox.

The outbox is bounded: a participant that stops reading while the session
keeps broadcasting is cut off (RESOURCE_EXHAUSTED, SLOW_CONSUMER) rather than
buffered without limit; it rejoins and gets the record as it stands.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp
from hacs.common.v1 import provenance_pb2
from hacs.sync.v1 import sync_service_pb2 as pb

from services.common.caller import Caller
from services.common.errors import SlowConsumer, Unauthenticated

MAX_OUTBOX = 1024


def participant_key(actor: str, client_id: str) -> str:
    return f"{actor}|{client_id}"


def _stamp(when: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


class Participant:
    def __init__(
        self, caller: Caller, client_id: str, state: int, *, limit: int = MAX_OUTBOX
    ) -> None:
        self.caller = caller
        self.client_id = client_id
        self.actor = provenance_pb2.ActorRef(name=caller.actor_name, role=caller.role)
        self.state = state
        self.field = ""
        self.join_time = datetime.now(UTC)
        self.last_seen_time = self.join_time
        self._limit = limit
        self._outbox: deque[pb.CollaborateResponse] = deque()
        self._ready = asyncio.Event()
        self._closed = False
        self._failure: Exception | None = None

    @property
    def key(self) -> str:
        return participant_key(self.caller.actor_name, self.client_id)

    @property
    def closed(self) -> bool:
        return self._closed

    def to_proto(self) -> pb.Participant:
        return pb.Participant(
            actor=self.actor,
            client_id=self.client_id,
            state=self.state,  # type: ignore[arg-type]
            field=self.field,
            join_time=_stamp(self.join_time),
            last_seen_time=_stamp(self.last_seen_time),
        )

    def seen(self) -> None:
        self.last_seen_time = datetime.now(UTC)

    def send(self, message: pb.CollaborateResponse) -> None:
        if self._closed:
            return
        if len(self._outbox) >= self._limit:
            self.fail(
                SlowConsumer(
                    f"the session sent {self._limit} messages this client has not read; "
                    "rejoin to continue",
                    cursor="",
                    limit=f"{self._limit} pending messages per participant",
                )
            )
            return
        self._outbox.append(message)
        self._ready.set()

    def close(self, reason: str = "") -> None:
        """End the stream normally, after a SessionClosed when a reason is given."""
        if self._closed:
            return
        if reason:
            self._outbox.append(pb.CollaborateResponse(closed=pb.SessionClosed(reason=reason)))
        self._closed = True
        self._ready.set()

    def fail(self, error: Exception) -> None:
        """End the stream with an error status (after what was already queued)."""
        if self._failure is None:
            self._failure = error
        self._outbox.clear()
        self._closed = True
        self._ready.set()

    async def messages(self) -> AsyncIterator[pb.CollaborateResponse]:
        """Everything sent to this participant, until it is closed or its token expires."""
        expires_at = self.caller.expires_at.timestamp() if self.caller.expires_at else None
        while True:
            if self._outbox:
                yield self._outbox.popleft()
                continue
            if self._failure is not None:
                raise self._failure
            if self._closed:
                return
            remaining = None if expires_at is None else expires_at - time.time()
            if remaining is not None and remaining <= 0:
                raise Unauthenticated(
                    "the token expired during the session; rejoin with a new token"
                )
            self._ready.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), remaining)
