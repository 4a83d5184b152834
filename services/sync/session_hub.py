"""Every collaboration session of this process: join, leave, and news from other replicas.

A session exists while it has local participants. It attaches to the live
tail *before* reading the record, so no version can fall between the record
a joiner is given and the first EditApplied it receives (versions already in
the record are skipped).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from hacs.sync.v1 import sync_service_pb2 as pb

from services.common.caller import Caller
from services.common.errors import NotFound
from services.kernel.records.access import may_access
from services.kernel.records.names import RecordName, parse_record_name
from services.sync.change_log import ChangeLogReader
from services.sync.edits import RecordEdits
from services.sync.participants import Participant
from services.sync.session_relay import RelayMessage, SessionRelay
from services.sync.sessions import PRESENCE_TTL_SECONDS, RemotePresence, Session
from services.sync.tail import ChangeHub

PRESENCE_REFRESH_SECONDS = 10.0


class SessionHub:
    def __init__(
        self,
        changes: ChangeHub,
        reader: ChangeLogReader,
        edits: RecordEdits,
        relay: SessionRelay | None = None,
    ) -> None:
        self.changes = changes
        self.reader = reader
        self.edits = edits
        self.relay = relay
        self._sessions: dict[str, Session] = {}
        self._opening: dict[str, asyncio.Lock] = {}
        self._refresher: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.relay is not None:
            self.relay.start(self._on_relay, self._announce_all)
            self._refresher = asyncio.create_task(self._refresh(), name="sync-presence-refresh")

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        for session in list(self._sessions.values()):
            self.close_session(session, "the server is shutting down; rejoin")
            await session.stop()
        if self.relay is not None:
            await self.relay.close()

    # -- joining and leaving --------------------------------------------------------

    async def join(self, caller: Caller, join: pb.JoinSession) -> tuple[Session, Participant]:
        name = parse_record_name(join.record, "join.record")
        permission = f"read:{name.info.permission}"
        if name.tenant_id != caller.tenant_id or not caller.can(permission):
            raise NotFound(name.info.name, join.record)  # existence is not disclosed
        caller.require(permission, join.record)
        session = await self._session(name)
        if session.record is None or not may_access(caller, session.record):
            raise NotFound(name.info.name, join.record)  # another owner's: not disclosed
        participant = Participant(caller, join.client_id, join.state or pb.PRESENCE_STATE_VIEWING)
        earlier = session.participants.pop(participant.key, None)
        if earlier is not None:
            earlier.close("joined again from another stream")
        session.participants[participant.key] = participant
        participant.send(session.joined_message())
        self._presence_changed(session, participant)
        return session, participant

    def leave(self, session: Session, participant: Participant) -> None:
        participant.close()
        if session.participants.get(participant.key) is not participant:
            return
        del session.participants[participant.key]
        if self.relay is not None:
            self.relay.publish(RelayMessage("leave", session.key, participant=participant.key))
        if session.participants:
            session.broadcast_presence()
        else:
            self._forget(session)

    def update_presence(
        self, session: Session, participant: Participant, update: pb.PresenceUpdate
    ) -> None:
        participant.state = update.state or participant.state
        participant.field = update.field
        participant.seen()
        self._presence_changed(session, participant)

    def close_session(self, session: Session, reason: str) -> None:
        """End the session for every local participant (record deleted, shutdown...)."""
        for participant in list(session.participants.values()):
            participant.close(reason)
            if self.relay is not None:
                self.relay.publish(RelayMessage("leave", session.key, participant=participant.key))
        session.participants.clear()
        self._forget(session)

    async def _session(self, name: RecordName) -> Session:
        key = str(name)
        session = self._sessions.get(key)
        if session is not None:
            return session
        lock = self._opening.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                session = self._sessions.get(key)
                if session is not None:
                    return session
                session = await self._open(name)
                self._sessions[key] = session
        finally:
            if not lock.locked():
                self._opening.pop(key, None)
        if self.relay is not None:
            self.relay.publish(RelayMessage("hello", key))
        return session

    async def _open(self, name: RecordName) -> Session:
        session = Session(self, name)
        # Follow first, read second: a version written in between is in the
        # record or comes through the tail, never neither.
        after = await self.reader.head(name.tenant_id)
        while (target := self.changes.attach(name.tenant_id, session, after)) is not None:
            after = target
        record = await self.edits.current(name, None)  # joiners are checked one by one
        if record is None or record.HasField("delete_time"):
            self.changes.detach(name.tenant_id, session)
            raise NotFound(name.info.name, str(name))
        session.start(record)
        return session

    def _forget(self, session: Session) -> None:
        if session.closed:
            return
        session.closed = True
        if self._sessions.get(session.key) is session:
            del self._sessions[session.key]
        self.changes.detach(session.name.tenant_id, session)
        asyncio.get_running_loop().create_task(session.stop())

    # -- presence across replicas ------------------------------------------------------

    def _presence_changed(self, session: Session, participant: Participant) -> None:
        session.broadcast_presence()
        self._announce(session, participant)

    def _announce(self, session: Session, participant: Participant) -> None:
        if self.relay is not None:
            self.relay.publish(
                RelayMessage(
                    "presence",
                    session.key,
                    participant=participant.key,
                    payload=participant.to_proto().SerializeToString(),
                )
            )

    def _announce_all(self) -> None:
        for session in list(self._sessions.values()):
            for participant in list(session.participants.values()):
                self._announce(session, participant)
            if self.relay is not None:
                self.relay.publish(RelayMessage("hello", session.key))

    def _on_relay(self, message: RelayMessage) -> None:
        session = self._sessions.get(message.session)
        if session is None:
            return
        if message.kind == "presence":
            session.remote[message.participant] = RemotePresence(
                pb.Participant.FromString(message.payload),
                message.origin,
                time.monotonic() + PRESENCE_TTL_SECONDS,
            )
            session.broadcast_presence()
        elif message.kind == "leave":
            remote = session.remote.get(message.participant)
            if remote is not None and remote.origin == message.origin:
                del session.remote[message.participant]
                session.broadcast_presence()
        elif message.kind == "hello":
            for participant in list(session.participants.values()):
                self._announce(session, participant)
        elif message.kind == "edit":
            session.remote_edit(message.version, pb.EditApplied.FromString(message.payload))

    async def _refresh(self) -> None:
        """Re-announce local participants; drop remote ones whose replica went quiet."""
        while True:
            await asyncio.sleep(PRESENCE_REFRESH_SECONDS)
            for session in list(self._sessions.values()):
                for participant in list(session.participants.values()):
                    self._announce(session, participant)
                if session.expire_remote():
                    session.broadcast_presence()
