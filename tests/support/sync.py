"""Helpers for the SyncService tests: a client bound to one caller, a Watch reader."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2
from google.protobuf.duration_pb2 import Duration
from google.rpc import error_details_pb2, status_pb2
from hacs.records.v1 import record_pb2, record_service_pb2_grpc
from hacs.records.v1 import record_service_pb2 as records_pb
from hacs.sync.v1 import patch_pb2, sync_service_pb2_grpc
from hacs.sync.v1 import sync_service_pb2 as pb

from services.sync.field_paths import resolve, set_value
from tests.support.harness import NewTenant, bearer


@dataclass
class WatchLog:
    """What one Watch stream received, in order."""

    changes: list[pb.ChangeEvent] = field(default_factory=list)
    heartbeats: list[pb.Heartbeat] = field(default_factory=list)
    caught_up: pb.CaughtUp | None = None

    @property
    def sequences(self) -> list[int]:
        return [c.change.sequence for c in self.changes]

    @property
    def last_cursor(self) -> str:
        return self.changes[-1].cursor if self.changes else ""


class SyncClient:
    def __init__(self, channel: grpc.aio.Channel, tenant: NewTenant, token: str) -> None:
        self.stub = sync_service_pb2_grpc.SyncServiceStub(channel)
        self.records = record_service_pb2_grpc.RecordServiceStub(channel)
        self.tenant = tenant
        self.md = bearer(token)

    def watch(
        self,
        *,
        cursor: str = "",
        earliest: bool = False,
        heartbeat_seconds: int = 0,
        include_records: bool = False,
        parent: str = "",
        **filter_fields: object,
    ) -> grpc.aio.UnaryStreamCall[pb.WatchRequest, pb.WatchResponse]:
        request = pb.WatchRequest(
            parent=parent or self.tenant.name,
            filter=pb.WatchFilter(**filter_fields),  # type: ignore[arg-type]
            resume_cursor=cursor,
            start_at_earliest=earliest,
            include_records=include_records,
        )
        if heartbeat_seconds:
            request.heartbeat_interval.CopyFrom(Duration(seconds=heartbeat_seconds))
        return self.stub.Watch(request, metadata=self.md)

    async def create(self, record: record_pb2.Record, record_id: str = "") -> record_pb2.Record:
        reply = await self.records.CreateRecord(
            records_pb.CreateRecordRequest(
                parent=self.tenant.name, record_id=record_id, record=record
            ),
            metadata=self.md,
        )
        return reply.record

    async def head(self) -> pb.GetSyncCursorResponse:
        return await self.stub.GetSyncCursor(
            pb.GetSyncCursorRequest(parent=self.tenant.name), metadata=self.md
        )


async def read_until(
    stream: grpc.aio.UnaryStreamCall[pb.WatchRequest, pb.WatchResponse],
    log: WatchLog,
    *,
    changes: int | None = None,
    caught_up: bool = False,
    heartbeats: int | None = None,
    seconds: float = 20.0,
) -> WatchLog:
    """Read messages into `log` until it holds what was asked for (or fail after `seconds`)."""

    def satisfied() -> bool:
        return (
            (changes is None or len(log.changes) >= changes)
            and (not caught_up or log.caught_up is not None)
            and (heartbeats is None or len(log.heartbeats) >= heartbeats)
        )

    async def consume() -> None:
        while not satisfied():
            message = await stream.read()
            if message is grpc.aio.EOF:
                raise AssertionError(f"the stream ended early: {await stream.code()}")
            assert isinstance(message, pb.WatchResponse)
            kind = message.WhichOneof("event")
            if kind == "change":
                log.changes.append(message.change)
            elif kind == "heartbeat":
                log.heartbeats.append(message.heartbeat)
            elif kind == "caught_up":
                assert log.caught_up is None, "CaughtUp is sent once per stream"
                log.caught_up = message.caught_up

    await asyncio.wait_for(consume(), seconds)
    return log


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    """The ErrorInfo detail of a failed call's google.rpc.Status."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)  # type: ignore[arg-type]
            for detail in status.details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return info
    raise AssertionError(f"no ErrorInfo in {error!r}")


async def fails_with(call: object) -> grpc.aio.AioRpcError:
    """Await a call (or drain a stream) that must fail; return its error."""
    try:
        if hasattr(call, "read"):  # a response stream: read it to its end
            while await call.read() is not grpc.aio.EOF:  # type: ignore[attr-defined]
                pass
        else:
            await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as error:
        return error
    raise AssertionError("the call succeeded")


# -- Collaborate -------------------------------------------------------------------

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


def metformin_order(patient_name: str, mg: float = 500) -> record_pb2.Record:
    """A MedicationRequest: metformin, `mg` twice daily (dose fields never merge silently)."""
    record = record_pb2.Record()
    order = record.medication_request
    order.status = "active"
    order.intent = "order"
    order.medication_codeable_concept.coding.add(
        system=RXNORM, code="860975", display="metformin hydrochloride 500 MG Oral Tablet"
    )
    order.subject.reference = patient_name
    order.note.append("take with meals")
    json_format.ParseDict({"dosage_instruction": dose(mg)}, order)
    return record


def dose(mg: float) -> list[dict[str, Any]]:
    return [
        {
            "text": f"{mg:g} mg twice daily",
            "dose_and_rate": [{"dose_quantity": {"value": mg, "unit": "mg"}}],
        }
    ]


def set_field(path: str, value: Any) -> patch_pb2.FieldPatch:
    return patch_pb2.FieldPatch(
        path=path,
        op=patch_pb2.PATCH_OP_SET,
        value=json_format.ParseDict(value, struct_pb2.Value()),
    )


class Collab:
    """One Collaborate stream, and the record as this client sees it."""

    def __init__(self, sync: SyncClient) -> None:
        self.call = sync.stub.Collaborate(metadata=sync.md)
        self.inbox: list[pb.CollaborateResponse] = []
        self.document: dict[str, Any] = {}
        self.version = 0

    async def join(
        self, record: str, client_id: str, state: int = pb.PRESENCE_STATE_VIEWING
    ) -> pb.SessionJoined:
        await self.call.write(
            pb.CollaborateRequest(
                join=pb.JoinSession(record=record, client_id=client_id, state=state)  # type: ignore[arg-type]
            )
        )
        joined = (await self.expect("joined")).joined
        self.document = json_format.MessageToDict(joined.record, preserving_proto_field_name=True)
        self.version = joined.record.version
        return joined

    async def edit(
        self,
        edit_id: str,
        base_version: int,
        patches: list[patch_pb2.FieldPatch],
        client_time: datetime | None = None,
    ) -> None:
        request = pb.EditRequest(edit_id=edit_id, base_version=base_version, patches=patches)
        if client_time is not None:
            request.client_time.FromDatetime(client_time)
        await self.call.write(pb.CollaborateRequest(edit=request))

    async def expect(
        self,
        kind: str,
        where: Callable[[pb.CollaborateResponse], bool] = lambda _: True,
        seconds: float = 15.0,
    ) -> pb.CollaborateResponse:
        """The first message of `kind` (matching `where`) not taken yet, reading as needed."""

        async def find() -> pb.CollaborateResponse:
            position = 0
            while True:
                while position < len(self.inbox):
                    message = self.inbox[position]
                    position += 1
                    if message.WhichOneof("payload") == kind and where(message):
                        self.inbox.remove(message)
                        return message
                message = await self.call.read()
                if message is grpc.aio.EOF:
                    raise AssertionError(f"the session ended before a {kind!r} arrived")
                assert isinstance(message, pb.CollaborateResponse)
                if message.WhichOneof("payload") == "applied":
                    self._apply(message.applied)
                self.inbox.append(message)

        return await asyncio.wait_for(find(), seconds)

    async def finish(self, seconds: float = 15.0) -> grpc.StatusCode:
        """Read the stream to its end (a status follows the messages before it)."""

        async def drain() -> grpc.StatusCode:
            while (message := await self.call.read()) is not grpc.aio.EOF:
                assert isinstance(message, pb.CollaborateResponse)
                self.inbox.append(message)
            return await self.call.code()

        return await asyncio.wait_for(drain(), seconds)

    def _apply(self, applied: pb.EditApplied) -> None:
        """Apply a broadcast edit as a client would: in version order, the values sent."""
        if not applied.patches:
            return  # an edit that wrote nothing (every patch lost or already there)
        assert applied.version == self.version + 1, (applied.version, self.version)
        for patch in applied.patches:
            path = resolve(patch.path)
            value = json_format.MessageToDict(patch.value) if patch.op == 1 else None
            set_value(self.document, path, value)
        self.version = applied.version

    def view(self) -> dict[str, Any]:
        """The parts of the record edits touch (resource and labels)."""
        return {k: v for k, v in self.document.items() if k in ("medication_request", "labels")}


def server_view(record: record_pb2.Record) -> dict[str, Any]:
    document = json_format.MessageToDict(record, preserving_proto_field_name=True)
    return {k: v for k, v in document.items() if k in ("medication_request", "labels")}
