"""A collaboration session on one record, in one process.

The session follows its record in the change log (it is a tail `Follower`),
so it sees every version in order, whoever wrote it and on whichever replica,
and broadcasts each one as EditApplied to its participants. That is what
makes clients converge: they all apply the same versions, in version order,
with the values the server stored.

An edit made here is planned and written under the session's lock (no
pointless etag races between local participants); its details (edit id,
client id, dropped patches) are attached to the version it produced when
that version comes through the log. Versions written elsewhere get their
details from the relay (other replicas) or, for plain record writes, are
described from the record itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC
from typing import TYPE_CHECKING

from hacs.records.v1 import record_pb2
from hacs.sync.v1 import patch_pb2
from hacs.sync.v1 import sync_service_pb2 as pb

from services.common.db.base import utcnow
from services.common.errors import Conflict, FieldViolation, Invalid
from services.kernel.records.envelope import ENVELOPE_MUTABLE
from services.kernel.records.names import RecordName
from services.sync import policies
from services.sync.change_log import LogEvent
from services.sync.edits import MAX_ATTEMPTS, ConcurrentWrite, author_of
from services.sync.field_paths import FieldPath, PathError, get_value, resolve, to_json
from services.sync.merge import Patch, to_value
from services.sync.participants import Participant
from services.sync.session_relay import RelayMessage
from services.sync.stamps import Stamp

if TYPE_CHECKING:
    from services.sync.session_hub import SessionHub

# How long a replica waits for another replica's edit details before describing
# a version from the record alone.
EDIT_DETAILS_GRACE_SECONDS = 0.3
# Versions a session may have waiting before it gives up (participants rejoin).
MAX_QUEUED_VERSIONS = 10_000
PRESENCE_TTL_SECONDS = 30.0


@dataclass
class RemotePresence:
    participant: pb.Participant
    origin: str
    expires: float


def applied_patches(
    record: record_pb2.Record, paths: list[FieldPath]
) -> list[patch_pb2.FieldPatch]:
    """The patches as stored: values read back from the record that was written."""
    document = to_json(record)
    patches = []
    for path in paths:
        value = get_value(document, path)
        if value is None:
            patches.append(patch_pb2.FieldPatch(path=path.text, op=patch_pb2.PATCH_OP_REMOVE))
        else:
            patches.append(
                patch_pb2.FieldPatch(
                    path=path.text, op=patch_pb2.PATCH_OP_SET, value=to_value(value)
                )
            )
    return patches


def described_paths(record: record_pb2.Record, change_paths: list[str]) -> list[FieldPath]:
    """The field paths a change names ("*" = the whole resource and envelope)."""
    resource = record.WhichOneof("resource") or ""
    names = (
        [resource, *ENVELOPE_MUTABLE] if "*" in change_paths or not change_paths else change_paths
    )
    paths = []
    for name in dict.fromkeys(names):
        try:
            paths.append(resolve(name))
        except PathError:
            continue
    return paths


class Session:
    def __init__(self, hub: SessionHub, name: RecordName) -> None:
        self.hub = hub
        self.name = name
        self.key = str(name)
        self.record: record_pb2.Record | None = None
        self.participants: dict[str, Participant] = {}
        self.remote: dict[str, RemotePresence] = {}
        self.edit_lock = asyncio.Lock()
        self._local_edits: dict[int, asyncio.Future[pb.EditApplied | None]] = {}
        self._remote_edits: dict[int, pb.EditApplied] = {}
        self._remote_arrived = asyncio.Event()
        self._events: deque[LogEvent] = deque()
        self._has_events = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.closed = False

    # -- following the record (tail Follower) ----------------------------------

    @property
    def wants_records(self) -> bool:
        return True

    def accepts(self, event: LogEvent) -> bool:
        return event.name == self.key

    def offer(self, event: LogEvent) -> bool:
        if len(self._events) >= MAX_QUEUED_VERSIONS:
            # Not from inside the tail's dispatch: closing detaches followers.
            asyncio.get_running_loop().call_soon(
                self.hub.close_session, self, "the session fell behind its record; rejoin"
            )
            return False
        self._events.append(event)
        self._has_events.set()
        return True

    def start(self, record: record_pb2.Record) -> None:
        self.record = record
        self._task = asyncio.create_task(self._follow(), name=f"sync-session-{self.key}")

    async def stop(self) -> None:
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _follow(self) -> None:
        while True:
            if not self._events:
                self._has_events.clear()
                await self._has_events.wait()
                continue
            event = self._events.popleft()
            assert self.record is not None
            if event.operation in ("DELETE", "PURGE"):
                what = "deleted" if event.operation == "DELETE" else "erased"
                self.hub.close_session(self, f"record {what} in version {event.version}")
                return
            if event.version <= self.record.version:
                continue  # already in the record participants were given
            record = event.record or await self.hub.reader.record_of(self.name.tenant_id, event)
            if record is None:
                self.hub.close_session(self, "record erased")
                return
            applied = await self._describe(event, record)
            self.record = record
            self.broadcast(pb.CollaborateResponse(applied=applied))

    async def _describe(self, event: LogEvent, record: record_pb2.Record) -> pb.EditApplied:
        details = await self._edit_details(event.version)
        if details is None:
            details = pb.EditApplied(
                actor=event.change.actor,
                base_version=event.version - 1,
                patches=applied_patches(
                    record, described_paths(record, list(event.change.changed_paths))
                ),
            )
        details.version = record.version
        details.etag = record.etag
        details.cursor = event.cursor
        return details

    async def _edit_details(self, version: int) -> pb.EditApplied | None:
        local = self._local_edits.pop(version, None)
        if local is not None:
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(asyncio.shield(local), 10.0)
            return None
        if version in self._remote_edits or self.hub.relay is None:
            return self._remote_edits.pop(version, None)
        deadline = time.monotonic() + EDIT_DETAILS_GRACE_SECONDS
        while version not in self._remote_edits and time.monotonic() < deadline:
            self._remote_arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._remote_arrived.wait(), deadline - time.monotonic())
        return self._remote_edits.pop(version, None)

    def remote_edit(self, version: int, details: pb.EditApplied) -> None:
        if self.record is not None and version <= self.record.version:
            return  # that version was described already
        self._remote_edits[version] = details
        self._remote_arrived.set()

    # -- edits -------------------------------------------------------------------

    async def edit(self, participant: Participant, request: pb.EditRequest) -> None:
        caller = participant.caller
        caller.require(f"write:{self.name.info.permission}", self.key)
        try:
            patches = [Patch.from_proto(p, resolve(p.path)) for p in request.patches]
        except PathError as error:
            raise Invalid(FieldViolation("edit.patches", str(error))) from error
        client_time = (
            request.client_time.ToDatetime(tzinfo=UTC) if request.HasField("client_time") else None
        )
        author = author_of(caller, participant.client_id, client_time, utcnow())
        edits = self.hub.edits
        async with self.edit_lock:
            for _ in range(MAX_ATTEMPTS):
                snapshot = await edits.snapshot(self.name, request.base_version, caller)
                current = snapshot.current
                if current is None or snapshot.deleted:
                    participant.send(_conflict(request, [], current.version if current else 0))
                    return
                if not snapshot.versions:
                    raise Invalid(
                        FieldViolation(
                            "edit.base_version",
                            f"{request.base_version} is not a version of {self.key} "
                            f"(the server holds version {current.version})",
                        )
                    )
                try:
                    plan = edits.plan(snapshot, patches, author)
                except PathError as error:
                    raise Invalid(FieldViolation("edit.patches", str(error))) from error
                if plan.rejected:
                    participant.send(_conflict(request, plan.conflicts, current.version))
                    return
                details = pb.EditApplied(
                    edit_id=request.edit_id,
                    client_id=participant.client_id,
                    actor=participant.actor,
                    base_version=request.base_version,
                    dropped=plan.dropped,
                    merged=plan.merged,
                )
                if not plan.applied:  # nothing to write: only the author hears about it
                    details.version, details.etag = current.version, current.etag
                    participant.send(pb.CollaborateResponse(applied=details))
                    return
                produced = current.version + 1
                pending: asyncio.Future[pb.EditApplied | None] = (
                    asyncio.get_running_loop().create_future()
                )
                self._local_edits[produced] = pending
                try:
                    written = await edits.write(caller, plan, Stamp(author.time, author.client_id))
                except ConcurrentWrite:
                    self._local_edits.pop(produced, None)
                    pending.set_result(None)
                    continue
                except BaseException:
                    self._local_edits.pop(produced, None)
                    pending.set_result(None)
                    raise
                details.patches.extend(applied_patches(written, [p.path for p in plan.applied]))
                pending.set_result(details)
                if self.hub.relay is not None:
                    self.hub.relay.publish(
                        RelayMessage(
                            "edit",
                            self.key,
                            version=written.version,
                            payload=details.SerializeToString(),
                        )
                    )
                return
        raise Conflict(f"{self.key} kept changing while the edit was applied; resend it")

    # -- presence ------------------------------------------------------------------

    def presence(self) -> list[pb.Participant]:
        now = time.monotonic()
        listed = {key: p.to_proto() for key, p in self.participants.items()}
        for key, remote in self.remote.items():
            if remote.expires > now and key not in listed:
                listed[key] = remote.participant
        return sorted(listed.values(), key=lambda p: (p.join_time.ToNanoseconds(), p.client_id))

    def broadcast_presence(self) -> None:
        self.broadcast(
            pb.CollaborateResponse(presence=pb.PresenceSnapshot(participants=self.presence()))
        )

    def broadcast(self, message: pb.CollaborateResponse) -> None:
        for participant in list(self.participants.values()):
            participant.send(message)

    def joined_message(self) -> pb.CollaborateResponse:
        assert self.record is not None
        resource = self.record.WhichOneof("resource") or ""
        return pb.CollaborateResponse(
            joined=pb.SessionJoined(
                session_id=session_id(self.key),
                record=self.record,
                participants=self.presence(),
                field_policies=policies.declared_for(resource),
                default_policy=policies.DEFAULT_POLICY,  # type: ignore[arg-type]
            )
        )

    def expire_remote(self) -> bool:
        now = time.monotonic()
        gone = [key for key, remote in self.remote.items() if remote.expires <= now]
        for key in gone:
            del self.remote[key]
        return bool(gone)


def session_id(record_name: str) -> str:
    """One session per record, the same id on every replica."""
    return "sessions/" + hashlib.sha256(record_name.encode()).hexdigest()[:24]


def _conflict(
    request: pb.EditRequest, conflicts: list[patch_pb2.FieldConflict], current_version: int
) -> pb.CollaborateResponse:
    return pb.CollaborateResponse(
        conflict=pb.EditConflict(
            edit_id=request.edit_id, conflicts=conflicts, current_version=current_version
        )
    )
