"""The Collaborate stream: join first, then presence and edits, until leave or close.

Requests are read by their own task while the stream writes the
participant's outbox, so a client that is busy sending edits still receives
broadcasts, and a slow reader never stalls the session's other participants.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from hacs.sync.v1 import sync_service_pb2 as pb

from services.common.caller import Caller
from services.common.errors import FieldViolation, Invalid
from services.sync.participants import Participant
from services.sync.session_hub import SessionHub
from services.sync.sessions import Session


class Collaboration:
    def __init__(self, hub: SessionHub) -> None:
        self._hub = hub

    async def run(
        self,
        caller: Caller,
        requests: AsyncIterator[pb.CollaborateRequest],
        send: Callable[[pb.CollaborateResponse], Awaitable[None]],
    ) -> None:
        """Serve one session stream, handing each message to `send` (the RPC's write)."""
        first = await anext(requests, None)
        if first is None:
            return
        if first.WhichOneof("payload") != "join":
            raise Invalid(FieldViolation("join", "the first message of a session must be join"))
        session, participant = await self._hub.join(caller, first.join)
        reader = asyncio.create_task(self._read(session, participant, requests))
        try:
            async for message in participant.messages():
                await send(message)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            self._hub.leave(session, participant)

    async def _read(
        self,
        session: Session,
        participant: Participant,
        requests: AsyncIterator[pb.CollaborateRequest],
    ) -> None:
        try:
            async for request in requests:
                participant.seen()
                kind = request.WhichOneof("payload")
                if kind == "presence":
                    self._hub.update_presence(session, participant, request.presence)
                elif kind == "edit":
                    await session.edit(participant, request.edit)
                elif kind == "leave":
                    break
                elif kind == "join":
                    raise Invalid(
                        FieldViolation("join", "this stream has joined already; open another")
                    )
            participant.close()
        except asyncio.CancelledError:
            raise
        except Exception as error:  # the stream ends with this error's status
            participant.fail(error)
