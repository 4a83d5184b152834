"""One fuzz run: N requests over every RPC, then the checks that make it a test.

Request i is a pure function of (seed, i): its method (every RPC in turn, in
a seeded order), its caller (an attacker's admin or agent, no token, or a
forged one), its way in (the edge or the service port directly) and its
bytes (a careful or a wild message generated from the descriptor, a valid
seed mutated, or corrupted bytes). So a finding is replayed with
`hacs fuzz --seed S --only i`.

A finding is an INTERNAL or UNKNOWN answer, or any answer to an attacker
that carries one of the victim's canaries (in a message, an error message or
trailing metadata). After the run: the process is alive, health is SERVING
on both ways in, and the victim's data is byte for byte what it was.
"""

from __future__ import annotations

import asyncio
import base64
import importlib
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.tooling.fuzz.messages import Generator
from services.tooling.fuzz.world import Builder, Identity, World, snapshot

SERVICE_MODULES = (
    "hacs.tenant.v1.tenant_service_pb2",
    "hacs.records.v1.record_service_pb2",
    "hacs.embedding.v1.embedding_service_pb2",
    "hacs.search.v1.search_service_pb2",
    "hacs.rag.v1.rag_service_pb2",
    "hacs.memory.v1.memory_service_pb2",
    "hacs.sync.v1.sync_service_pb2",
)
FAILURES = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
# Not failures by themselves (a process that died is caught after the run), but listed.
UNUSUAL = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "DATA_LOSS", "CANCELLED", "ABORTED")
CALL_TIMEOUT_SECONDS = 20.0
STREAM_READ_SECONDS = 1.5  # a stream still open after this is cut by the fuzzer
STREAM_MESSAGES = 5
MAX_REQUEST_BYTES = 20 * 1024 * 1024
OPEN_STREAM = "OPEN_STREAM_CUT"  # not a status: the fuzzer stopped reading a live stream


@dataclass(frozen=True)
class Method:
    path: str
    request: type[Message]
    client_streaming: bool
    server_streaming: bool

    @property
    def short(self) -> str:
        service, method = self.path.strip("/").split("/")
        return f"{service.rsplit('.', 1)[-1]}/{method}"


def methods() -> list[Method]:
    """Every RPC of every HACS service, from the generated descriptors."""
    found = []
    for module_name in SERVICE_MODULES:
        module = importlib.import_module(module_name)
        for service in module.DESCRIPTOR.services_by_name.values():
            for rpc in service.methods:
                found.append(
                    Method(
                        f"/{service.full_name}/{rpc.name}",
                        message_factory.GetMessageClass(rpc.input_type),
                        rpc.client_streaming,
                        rpc.server_streaming,
                    )
                )
    return found


@dataclass
class Finding:
    index: int
    method: str
    target: str
    identity: str
    mode: str
    code: str
    detail: str
    requests: list[str]  # base64 of each message's bytes
    canary: str = ""

    def as_dict(self, *, with_requests: bool = True) -> dict[str, Any]:
        out = self.__dict__.copy()
        if not with_requests:
            del out["requests"]
        return out


@dataclass
class Report:
    seed: int
    requests: int
    seconds: float = 0.0
    codes: Counter[str] = field(default_factory=Counter)
    by_method: dict[str, Counter[str]] = field(default_factory=dict)
    by_mode: dict[str, Counter[str]] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    unusual: list[Finding] = field(default_factory=list)
    health: dict[str, str] = field(default_factory=dict)
    alive: bool = True
    victim_unchanged: bool = True
    victim_changes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return (
            not self.findings
            and self.alive
            and self.victim_unchanged
            and all(status == "SERVING" for status in self.health.values())
        )

    def as_dict(self, *, with_requests: bool = True) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "requests": self.requests,
            "seconds": round(self.seconds, 1),
            "passed": self.passed,
            "codes": dict(sorted(self.codes.items())),
            "internal_or_unknown": sum(self.codes[c.name] for c in FAILURES),
            "canary_leaks": sum(1 for f in self.findings if f.canary),
            "resource_exhausted": self.codes["RESOURCE_EXHAUSTED"],
            "alive": self.alive,
            "health": self.health,
            "victim_unchanged": self.victim_unchanged,
            "victim_changes": self.victim_changes,
            "methods": len(self.by_method),
            "methods_answered_ok": sum(1 for codes in self.by_method.values() if answered(codes)),
            "findings": [f.as_dict(with_requests=with_requests) for f in self.findings],
            "unusual": [f.as_dict(with_requests=with_requests) for f in self.unusual],
        }


def answered(codes: Counter[str]) -> bool:
    """The RPC did its work at least once: OK, or a stream that was still serving."""
    return bool(codes["OK"] or codes[OPEN_STREAM])


@dataclass
class Planned:
    index: int
    method: Method
    identity: Identity
    target: str
    mode: str
    payloads: list[bytes]


class Campaign:
    def __init__(self, world: World, targets: dict[str, str], seed: int) -> None:
        self.world = world
        self.targets = targets
        self.seed = seed
        self.methods = methods()
        order = random.Random(seed)
        self.order = list(self.methods)
        order.shuffle(self.order)
        tokens = world.identities()
        self.identities = [
            *tokens,
            Identity("anonymous", tokens[0].tenant, ""),
            Identity("forged", tokens[0].tenant, "eyJhbGciOiJub25lIn0.eyJ0ZW5hbnQiOiJ4In0."),
        ]
        self.vocabularies = {t.tenant_id: world.vocabulary(t.tenant_id) for t in world.attackers}
        self.canaries = [c.encode() for c in world.canaries]

    # -- planning (pure) ------------------------------------------------------

    def plan(self, index: int) -> Planned:
        rng = random.Random(f"{self.seed}:{index}")
        method = self.order[index % len(self.order)]
        weights = [1.0] * (len(self.identities) - 2) + [0.35, 0.35]
        identity = rng.choices(self.identities, weights)[0]
        target = rng.choice(sorted(self.targets))
        generator = Generator(rng, self.vocabularies[identity.tenant])
        roll = rng.random()
        seeds = self._seeds(identity.tenant, method.path)
        if roll < 0.3 and seeds:
            mode = "mutated"
            messages = [*rng.choice(seeds)]
            at = rng.randrange(len(messages))
            messages[at] = generator.mutate(messages[at])
        elif roll < 0.45:
            mode = "minimal"  # only what a call needs, as a client would send it
            messages = [generator.minimal(method.request)]
        elif roll < 0.6:
            mode = "careful"
            messages = self._generated(generator, method, careful=True)
        elif roll < 0.9:
            mode = "wild"
            messages = self._generated(generator, method, careful=False)
        else:
            mode = "corrupt"
            messages = self._generated(generator, method, careful=True)
        payloads = [m.SerializeToString() for m in messages]
        if mode == "corrupt":
            at = rng.randrange(len(payloads))
            payloads[at] = generator.corrupt(payloads[at], method.request.DESCRIPTOR)
        payloads = [p[:MAX_REQUEST_BYTES] for p in payloads]
        return Planned(index, method, identity, target, mode, payloads)

    def _seeds(self, tenant_id: str, path: str) -> list[list[Message]]:
        tenant = next(t for t in self.world.attackers if t.tenant_id == tenant_id)
        return tenant.seeds.get(path, [])

    @staticmethod
    def _generated(generator: Generator, method: Method, *, careful: bool) -> list[Message]:
        count = generator.rng.choice((1, 2, 3, 4)) if method.client_streaming else 1
        return [generator.message(method.request, careful=careful) for _ in range(count)]

    # -- running --------------------------------------------------------------

    async def run(
        self,
        indices: list[int],
        concurrency: int,
        report: Report,
        progress: Callable[[int, Report], None] = lambda done, report: None,
    ) -> None:
        channels = Channels.open(self.targets)
        queue: asyncio.Queue[int] = asyncio.Queue()
        for index in indices:
            queue.put_nowait(index)
        done = 0

        async def worker() -> None:
            nonlocal done
            while True:
                try:
                    index = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                planned = self.plan(index)
                code, detail, canary = await self._send(channels, planned)
                self._count(report, planned, code, detail, canary)
                done += 1
                progress(done, report)

        try:
            started = time.monotonic()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            report.seconds = time.monotonic() - started
        finally:
            await channels.close()

    async def _send(self, channels: Channels, planned: Planned) -> tuple[str, str, str]:
        method = planned.method
        metadata = planned.identity.metadata
        received: list[bytes] = []
        code, detail = "OK", ""
        try:
            if method.client_streaming:
                code = await asyncio.to_thread(
                    _client_stream,
                    channels.blocking[planned.target],
                    method.path,
                    planned.payloads,
                    metadata,
                    received,
                )
            elif method.server_streaming:
                stream = channels.aio[planned.target].unary_stream(
                    method.path, request_serializer=_same, response_deserializer=_same
                )(planned.payloads[0], metadata=metadata, timeout=CALL_TIMEOUT_SECONDS)
                code = await _read_stream(stream, received)
            else:
                unary = channels.aio[planned.target].unary_unary(
                    method.path, request_serializer=_same, response_deserializer=_same
                )
                call = unary(planned.payloads[0], metadata=metadata, timeout=CALL_TIMEOUT_SECONDS)
                received.append(await call)
        except grpc.RpcError as raised:  # AioRpcError, or a blocking call's error
            error: Any = raised
            code = error.code().name
            detail = error.details() or ""
            received.append(detail.encode())
            for _key, value in error.trailing_metadata() or ():
                received.append(value if isinstance(value, bytes) else str(value).encode())
        canary = self._canary_in(received)  # every caller here is not the victim
        return code, detail, canary

    def _canary_in(self, received: list[bytes]) -> str:
        for blob in received:
            for canary in self.canaries:
                if canary in blob:
                    return canary.decode()
        return ""

    def _count(self, report: Report, planned: Planned, code: str, detail: str, canary: str) -> None:
        report.codes[code] += 1
        report.by_method.setdefault(planned.method.short, Counter())[code] += 1
        report.by_mode.setdefault(planned.mode, Counter())[code] += 1
        failed = code in (c.name for c in FAILURES) or canary
        if failed or (code in UNUSUAL and len(report.unusual) < 100):
            (report.findings if failed else report.unusual).append(
                Finding(
                    planned.index,
                    planned.method.short,
                    planned.target,
                    planned.identity.label,
                    planned.mode,
                    code,
                    detail[:500],
                    [base64.b64encode(p).decode() for p in planned.payloads],
                    canary,
                )
            )


CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]


@dataclass
class Channels:
    """Per way in: an asyncio channel, and a blocking one for client streams (grpc's asyncio
    client marks a call INTERNAL itself when the server answers before the last write, so
    the server's real status would be lost)."""

    aio: dict[str, grpc.aio.Channel]
    blocking: dict[str, grpc.Channel]

    @classmethod
    def open(cls, targets: dict[str, str]) -> Channels:
        return cls(
            {n: grpc.aio.insecure_channel(t, options=CHANNEL_OPTIONS) for n, t in targets.items()},
            {n: grpc.insecure_channel(t, options=CHANNEL_OPTIONS) for n, t in targets.items()},
        )

    async def close(self) -> None:
        for channel in self.aio.values():
            await channel.close()
        for blocking in self.blocking.values():
            blocking.close()


def _same(value: bytes) -> bytes:
    return value


async def _read_stream(call: Any, received: list[bytes]) -> str:
    deadline = time.monotonic() + STREAM_READ_SECONDS
    while len(received) < STREAM_MESSAGES:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            call.cancel()
            return OPEN_STREAM
        try:
            message = await asyncio.wait_for(call.read(), remaining)
        except TimeoutError:
            call.cancel()
            return OPEN_STREAM
        if message is grpc.aio.EOF:
            return "OK"
        received.append(message)
    call.cancel()
    return OPEN_STREAM


def _client_stream(
    channel: grpc.Channel,
    path: str,
    payloads: list[bytes],
    metadata: tuple[tuple[str, str], ...],
    received: list[bytes],
) -> str:
    """One client-streaming call on a blocking channel (run in a thread)."""
    responses: Any = channel.stream_stream(
        path, request_serializer=_same, response_deserializer=_same
    )(iter(payloads), metadata=metadata, timeout=CALL_TIMEOUT_SECONDS)
    timer = threading.Timer(STREAM_READ_SECONDS, responses.cancel)
    timer.start()
    try:
        for message in responses:
            received.append(message)
            if len(received) >= STREAM_MESSAGES:
                responses.cancel()
                return OPEN_STREAM
    except grpc.RpcError:
        if responses.code() == grpc.StatusCode.CANCELLED and not timer.is_alive():
            return OPEN_STREAM  # cut by the timer
        raise
    finally:
        timer.cancel()
    return "OK"


async def health(target: str) -> str:
    async with grpc.aio.insecure_channel(target) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=10
            )
        except grpc.aio.AioRpcError as error:
            return error.code().name
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


async def prepare(
    targets: dict[str, str], operator_key: str, run_id: str, say: Callable[[str], None]
) -> tuple[World, Builder, dict[str, bytes], grpc.aio.Channel]:
    """The tenants, built directly on the service port, and the victim's data as it is."""
    channel = grpc.aio.insecure_channel(targets["direct"])
    builder = Builder(channel, operator_key)
    world = await builder.world(run_id, say)
    before = await snapshot(builder, world.victim)
    await _edge_ready(targets["edge"], world.attackers[0].admin)
    return world, builder, before, channel


async def _edge_ready(edge: str, token: str, wait_seconds: float = 60.0) -> None:
    """Envoy fetches the JWKS on its own schedule: wait until it accepts a token."""
    from hacs.tenant.v1 import tenant_service_pb2 as tenant_pb
    from hacs.tenant.v1 import tenant_service_pb2_grpc

    deadline = time.monotonic() + wait_seconds
    async with grpc.aio.insecure_channel(edge) as channel:
        stub = tenant_service_pb2_grpc.TenantServiceStub(channel)
        while True:
            try:
                await stub.GetJwks(tenant_pb.GetJwksRequest(), timeout=5)
                await stub.ListActors(
                    tenant_pb.ListActorsRequest(parent="tenants/x"),
                    metadata=(("authorization", f"Bearer {token}"),),
                    timeout=5,
                )
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.UNAUTHENTICATED:
                    if time.monotonic() > deadline:
                        raise RuntimeError("the edge never accepted a valid token") from error
                    await asyncio.sleep(0.3)
                    continue
            return


async def finish(
    report: Report,
    targets: dict[str, str],
    builder: Builder,
    world: World,
    before: dict[str, bytes],
    alive: Callable[[], bool],
) -> None:
    """The checks after the run: alive, healthy, the victim untouched."""
    report.alive = alive()
    for name, target in targets.items():
        report.health[name] = await health(target)
    if report.alive:
        after = await snapshot(builder, world.victim)
        report.victim_changes = sorted(
            key for key in before.keys() | after.keys() if before.get(key) != after.get(key)
        )
        report.victim_unchanged = not report.victim_changes
