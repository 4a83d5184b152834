"""The clients of the crash test: each writes records and remembers memories in a loop.

A client's writes follow one another (patient n, its observation, a memory about
that patient, patient n + 1, ...), each with its own record id and idempotency key
(`request_id`). A write is retried with the same key until the server acknowledges
it (an OK answer), so a write whose first attempt died with the server is answered,
after the restart, by the replay of the first attempt when that one had committed.
Only an OK answer counts as acknowledged: what a failed attempt did is unknown, and
it is never assumed either way.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import grpc
from google.protobuf.message import Message
from hacs.memory.v1 import memory_service_pb2 as mpb
from hacs.memory.v1 import memory_service_pb2_grpc
from hacs.records.v1 import memory_block_pb2, record_pb2, record_service_pb2_grpc
from hacs.records.v1 import record_service_pb2 as rpb

from tests.support import clinical

# What a dying or restarting server answers; the write's outcome is unknown.
TRANSIENT = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
    }
)
CALL_TIMEOUT = 30.0  # a first Remember after a restart waits for the model to load
RETRY_PAUSE = (0.05, 0.25)  # seconds between attempts, drawn per attempt
FAMILIES = ("Garcia", "Okafor", "Nguyen", "Kowalski", "Haddad", "Tanaka", "Silva", "Ivanova")
SYMPTOMS = (
    "dizziness on standing",
    "a persistent dry cough",
    "swelling of both ankles",
    "blurred vision in the evening",
    "numbness in the left foot",
    "night sweats for a week",
    "chest tightness on stairs",
    "a rash after the new antibiotic",
)
# Fast reconnects: the server comes back on the same port within seconds.
CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
    ("grpc.use_local_subchannel_pool", 1),  # one connection per client
)


@dataclass(frozen=True)
class Ack:
    """An acknowledged write: what the server answered OK."""

    name: str
    kind: str  # patient | observation | memory
    version: int
    fingerprint: str  # a field the write set, to tell the record from another one
    patient: str  # the patient it is about (the patient itself for a patient)
    client: int
    attempts: int
    acknowledged_at: float  # time.monotonic()


@dataclass
class Tally:
    """What the clients did, summed over all of them."""

    acknowledged: list[Ack] = field(default_factory=list)
    failed_attempts: Counter[str] = field(default_factory=Counter)  # by status code
    # Failed attempts begun and ended while the server was up, with no kill between.
    failed_while_up: Counter[str] = field(default_factory=Counter)
    # Acknowledged on a retry whose answer was the first attempt's (created before it).
    replayed: int = 0
    # A retry refused ALREADY_EXISTS: an earlier attempt committed but its key did not replay.
    idempotency_failures: list[str] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)  # other refusals, by code


@dataclass
class _Write:
    kind: str
    name: str
    request: Message
    fingerprint: str
    patient: str = ""
    attempts: int = 0


class Writer:
    """One client: its own connection, its own sequence of writes.

    `server_epoch()` is even while the server is up and odd while it is down (it
    moves on at each kill and each restart), so a failure can be told apart from
    the kills: one begun and ended in the same even epoch happened on a live server.
    """

    def __init__(
        self,
        number: int,
        target: str,
        tenant_id: str,
        token: Callable[[], str],
        tally: Tally,
        *,
        seed: int,
        server_epoch: Callable[[], int],
    ) -> None:
        self.number = number
        self._tenant = tenant_id
        self._token = token
        self._tally = tally
        self._rng = random.Random(seed * 1_000 + number)
        self._server_epoch = server_epoch
        self._channel = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
        self._records = record_service_pb2_grpc.RecordServiceStub(self._channel)
        self._memory = memory_service_pb2_grpc.MemoryServiceStub(self._channel)
        self._step = 0
        self._pending: _Write | None = None
        self._patient = ""  # this client's last acknowledged patient
        self.in_call = False
        self.go = asyncio.Event()  # cleared: wait before the next attempt
        self.stopping = False
        self.last: dict[str, Ack] = {}  # this client's last acknowledged write of each kind

    async def close(self) -> None:
        await self._channel.close()

    async def run(self) -> None:
        """Write until told to stop; a write begun is finished (acknowledged) first."""
        while not (self.stopping and self._pending is None):
            await self.go.wait()
            if self._pending is None:
                self._pending = self._next_write()
            write = self._pending
            write.attempts += 1
            epoch, started = self._server_epoch(), time.time()
            self.in_call = True
            try:
                reply = await self._send(write)
            except grpc.aio.AioRpcError as error:
                self.in_call = False
                self._failed(write, error.code(), epoch)
                await asyncio.sleep(self._rng.uniform(*RETRY_PAUSE))
                continue
            self.in_call = False
            self._acknowledged(write, reply, started)

    async def _send(self, write: _Write) -> record_pb2.Record:
        metadata = (("authorization", f"Bearer {self._token()}"),)
        if write.kind == "memory":
            assert isinstance(write.request, mpb.RememberRequest)
            remembered = await self._memory.Remember(
                write.request, metadata=metadata, timeout=CALL_TIMEOUT
            )
            return remembered.memories[0]
        assert isinstance(write.request, rpb.CreateRecordRequest)
        created = await self._records.CreateRecord(
            write.request, metadata=metadata, timeout=CALL_TIMEOUT
        )
        return created.record

    def _failed(self, write: _Write, code: grpc.StatusCode, epoch: int) -> None:
        self._tally.failed_attempts[code.name] += 1
        if self._server_epoch() == epoch and epoch % 2 == 0:
            self._tally.failed_while_up[code.name] += 1
        if code in TRANSIENT or code == grpc.StatusCode.UNAUTHENTICATED:
            return  # retried with the same request_id
        if code == grpc.StatusCode.ALREADY_EXISTS and write.attempts > 1:
            self._tally.idempotency_failures.append(write.name)
        else:
            self._tally.rejected[code.name] += 1
        self._pending = None  # not retried: the next write
        self._step += 1

    def _acknowledged(self, write: _Write, record: record_pb2.Record, started: float) -> None:
        created = record.create_time.ToDatetime(tzinfo=UTC)
        if write.attempts > 1 and created < datetime.fromtimestamp(started, UTC):
            self._tally.replayed += 1  # an earlier attempt's write, answered from its key
        ack = Ack(
            name=record.name,
            kind=write.kind,
            version=record.version,
            fingerprint=write.fingerprint,
            patient=write.patient or record.name,
            client=self.number,
            attempts=write.attempts,
            acknowledged_at=time.monotonic(),
        )
        self._tally.acknowledged.append(ack)
        self.last[write.kind] = ack
        if write.kind == "patient":
            self._patient = record.name
        self._pending = None
        self._step += 1

    def _next_write(self) -> _Write:
        """Patient, observation, memory, in turn; the last two about the last patient."""
        n, kind = self._step // 3, ("patient", "observation", "memory")[self._step % 3]
        if not self._patient:
            kind = "patient"
        parent = f"tenants/{self._tenant}"
        key = f"c{self.number}-{n:05d}"
        request_id = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
        if kind == "patient":
            given = f"Crash{self.number}x{n}"
            rng = self._rng
            born = f"{rng.randint(1930, 1999)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
            record = clinical.patient(
                self._rng.choice(FAMILIES), given, self._rng.choice(("female", "male")), born
            )
            request: Message = rpb.CreateRecordRequest(
                parent=parent, record_id=f"{key}-p", record=record, request_id=request_id
            )
            return _Write(kind, f"{parent}/patients/{key}-p", request, given)
        if kind == "observation":
            value = round(self._rng.uniform(4.5, 11.5), 1)
            record = clinical.hba1c(self._patient, value)
            request = rpb.CreateRecordRequest(
                parent=parent, record_id=f"{key}-o", record=record, request_id=request_id
            )
            return _Write(
                kind, f"{parent}/observations/{key}-o", request, f"{value}", self._patient
            )
        name = f"{parent}/memoryBlocks/{key}-m"
        content = (
            f"Crash drill {key}: the patient reported {self._rng.choice(SYMPTOMS)}; "
            f"follow up in {self._rng.randint(2, 21)} days."
        )
        memory = record_pb2.Record(name=name)
        memory.memory_block.memory_type = memory_block_pb2.MEMORY_TYPE_EPISODIC
        memory.memory_block.content = content
        request = mpb.RememberRequest(
            parent=parent, memories=[memory], patient=self._patient, request_id=request_id
        )
        return _Write(kind, name, request, content, self._patient)
