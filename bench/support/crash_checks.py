"""What the crash test checks after every restart, through the public API.

* Every acknowledged write is readable (GetRecord, GetMemory) at its acknowledged
  version or later, with the content it was written with.
* The tenant's change log (ListChanges from the start) holds every sequence from
  the earliest kept to the head once — no gap, no duplicate sequence, no record
  version logged twice — and an entry for every acknowledged write.
* The record indexer catches up: GetIndexStatus reports the indexed sequence at
  the head and as many documents in the index as the log names patients and
  observations (so what was indexed before the kill survived it); each client's
  last acknowledged patient and observation are found by Search, dense and lexical. Every memory
  acknowledged since the last check, and each client's last, is found by Recall
  with a semantic score (so from its vector, not from the lexical match alone).

The clients are paused while it runs, so the head does not move under it.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc
from hacs.memory.v1 import memory_service_pb2 as mpb
from hacs.memory.v1 import memory_service_pb2_grpc, recall_pb2
from hacs.records.v1 import record_pb2, record_service_pb2_grpc
from hacs.records.v1 import record_service_pb2 as rpb
from hacs.search.v1 import query_pb2, search_service_pb2_grpc
from hacs.search.v1 import search_service_pb2 as spb

from bench.support.crash_writers import Ack

READ_CONCURRENCY = 16
QUERY_CONCURRENCY = 4  # Search and Recall embed their query: CPU, not I/O
CALL_TIMEOUT = 60.0
COUNT_GRACE = 10.0  # seconds the index count may trail the cursor (Milvus visibility)


@dataclass
class Check:
    """What one verification found (all lists empty on a sound platform)."""

    head_sequence: int = 0
    earliest_sequence: int = 0
    lost: list[str] = field(default_factory=list)  # acknowledged, unreadable or older
    unlogged: list[str] = field(default_factory=list)  # acknowledged, no change-log entry
    gaps: list[int] = field(default_factory=list)  # sequences missing from the log
    duplicate_sequences: list[int] = field(default_factory=list)
    duplicate_changes: list[str] = field(default_factory=list)  # "name@version" logged twice
    caught_up: bool = False
    catch_up_seconds: float = 0.0  # from the server's readiness to the indexer at the head
    indexed_records: int = 0  # documents in the record index once at the head
    logged_records: int = 0  # patients and observations the change log names
    not_searchable: list[str] = field(default_factory=list)
    not_recalled: list[str] = field(default_factory=list)
    seconds: float = 0.0  # the whole verification

    @property
    def sound(self) -> bool:
        return (
            self.caught_up
            and self.indexed_records == self.logged_records
            and not (
                self.lost
                or self.unlogged
                or self.gaps
                or self.duplicate_sequences
                or self.duplicate_changes
                or self.not_searchable
                or self.not_recalled
            )
        )


class Verifier:
    def __init__(self, channel: grpc.aio.Channel, tenant_id: str) -> None:
        self._parent = f"tenants/{tenant_id}"
        self._records = record_service_pb2_grpc.RecordServiceStub(channel)
        self._memory = memory_service_pb2_grpc.MemoryServiceStub(channel)
        self._search = search_service_pb2_grpc.SearchServiceStub(channel)
        self._checked = 0  # acknowledged writes recalled by an earlier check

    async def warm_up(self, agent_token: str) -> None:
        """One Recall, so the model is loaded before the first writes (as after a restart)."""
        await self._memory.Recall(
            mpb.RecallRequest(parent=self._parent, query="warm up", record_access=False),
            metadata=(("authorization", f"Bearer {agent_token}"),),
            timeout=CALL_TIMEOUT,
        )

    async def verify(
        self,
        acks: Sequence[Ack],
        latest: Sequence[dict[str, Ack]],
        *,
        admin_token: str,
        agent_token: str,
        ready_at: float,
        catch_up_timeout: float,
    ) -> Check:
        """Check everything acknowledged so far; `latest` holds each client's last writes."""
        started = time.monotonic()
        admin = (("authorization", f"Bearer {admin_token}"),)
        agent = (("authorization", f"Bearer {agent_token}"),)
        check = Check()
        recent = {a.name: a for a in acks[self._checked :] if a.kind == "memory"}
        recent.update({last["memory"].name: last["memory"] for last in latest if "memory" in last})

        async def log_and_index() -> None:
            logged = await self._read_change_log(check, admin)
            check.unlogged = [a.name for a in acks if (a.name, a.version) not in logged]
            check.logged_records = len(
                {name for name, _ in logged if "/patients/" in name or "/observations/" in name}
            )
            await self._wait_for_indexer(check, admin, ready_at, catch_up_timeout)
            if check.caught_up:
                check.not_searchable = await self._not_searchable(latest, agent)

        _, check.lost, check.not_recalled = await asyncio.gather(
            log_and_index(),
            self._unreadable(acks, agent),
            self._not_recalled(list(recent.values()), agent),
        )
        self._checked = len(acks)
        check.seconds = time.monotonic() - started
        return check

    async def _wait_for_indexer(
        self, check: Check, admin: tuple[tuple[str, str]], ready_at: float, limit: float
    ) -> None:
        """Until the cursor is at the head; then until the index holds every record, or
        COUNT_GRACE seconds (a count that stays short is a finding, not a wait)."""
        request = spb.GetIndexStatusRequest(parent=self._parent)
        deadline = time.monotonic() + limit
        while True:
            status = await self._search.GetIndexStatus(
                request, metadata=admin, timeout=CALL_TIMEOUT
            )
            check.indexed_records = status.record_count
            at_head = status.indexed_sequence >= status.head_sequence
            if at_head and not check.caught_up:
                check.caught_up = True
                check.catch_up_seconds = time.monotonic() - ready_at
                deadline = min(deadline, time.monotonic() + COUNT_GRACE)
            if at_head and status.record_count == check.logged_records:
                return
            if time.monotonic() > deadline:
                return
            await asyncio.sleep(0.1)

    async def _read_change_log(
        self, check: Check, admin: tuple[tuple[str, str]]
    ) -> set[tuple[str, int]]:
        """Every change from the start; fills in the gaps and duplicates found."""
        sequences: list[int] = []
        changes: Counter[tuple[str, int]] = Counter()
        after, head, earliest = 0, -1, 1
        while after != head:
            page = await self._records.ListChanges(
                rpb.ListChangesRequest(parent=self._parent, after_sequence=after, page_size=5000),
                metadata=admin,
                timeout=CALL_TIMEOUT,
            )
            if head < 0:
                head, earliest = page.head_sequence, page.earliest_sequence or 1
            sequences += [c.sequence for c in page.changes]
            changes.update((c.name, c.version) for c in page.changes)
            if page.next_after_sequence <= after:
                break  # no progress: what is missing shows up as gaps
            after = page.next_after_sequence
        seen = Counter(sequences)
        check.head_sequence, check.earliest_sequence = head, earliest
        check.gaps = sorted(set(range(earliest, head + 1)) - set(seen))
        check.duplicate_sequences = sorted(s for s, n in seen.items() if n > 1)
        check.duplicate_changes = sorted(f"{name}@{v}" for (name, v), n in changes.items() if n > 1)
        return set(changes)

    async def _unreadable(self, acks: Sequence[Ack], agent: tuple[tuple[str, str]]) -> list[str]:
        gate = asyncio.Semaphore(READ_CONCURRENCY)

        async def readable(ack: Ack) -> bool:
            async with gate:
                try:
                    if ack.kind == "memory":
                        reply = await self._memory.GetMemory(
                            mpb.GetMemoryRequest(name=ack.name),
                            metadata=agent,
                            timeout=CALL_TIMEOUT,
                        )
                        record = reply.memory
                    else:
                        got = await self._records.GetRecord(
                            rpb.GetRecordRequest(name=ack.name),
                            metadata=agent,
                            timeout=CALL_TIMEOUT,
                        )
                        record = got.record
                except grpc.aio.AioRpcError as error:
                    if error.code() == grpc.StatusCode.NOT_FOUND:
                        return False
                    raise
            return (
                record.version >= ack.version
                and not record.HasField("delete_time")
                and _fingerprint(record, ack.kind) == ack.fingerprint
            )

        found = await asyncio.gather(*(readable(a) for a in acks))
        return [a.name for a, ok in zip(acks, found, strict=True) if not ok]

    async def _not_searchable(
        self, latest: Sequence[dict[str, Ack]], agent: tuple[tuple[str, str]]
    ) -> list[str]:
        """The writes, each looked for by dense and by lexical retrieval (Milvus and the
        lexical store are written apart, and either could lose what the other kept)."""
        gate = asyncio.Semaphore(QUERY_CONCURRENCY)

        async def found(ack: Ack, mode: spb.RetrievalMode.ValueType) -> bool:
            words = ack.fingerprint if ack.kind == "patient" else "hemoglobin a1c"
            async with gate:
                reply = await self._search.Search(
                    spb.SearchRequest(
                        parent=self._parent,
                        query=f"{ack.kind} {words}",
                        filter=query_pb2.SearchFilter(patients=[ack.patient]),
                        top_k=10,
                        hybrid=spb.HybridOptions(mode=mode),
                    ),
                    metadata=agent,
                    timeout=CALL_TIMEOUT,
                )
            return ack.name in {hit.name for hit in reply.hits}

        wanted = [
            (last[kind], mode)
            for last in latest
            for kind in ("patient", "observation")
            if kind in last
            for mode in (spb.RETRIEVAL_MODE_DENSE, spb.RETRIEVAL_MODE_LEXICAL)
        ]
        results = await asyncio.gather(*(found(ack, mode) for ack, mode in wanted))
        missing = {
            f"{ack.name} ({spb.RetrievalMode.Name(mode)})"
            for (ack, mode), ok in zip(wanted, results, strict=True)
            if not ok
        }
        return sorted(missing)

    async def _not_recalled(
        self, memories: Sequence[Ack], agent: tuple[tuple[str, str]]
    ) -> list[str]:
        gate = asyncio.Semaphore(QUERY_CONCURRENCY)

        async def recalled(ack: Ack) -> bool:
            async with gate:
                reply = await self._memory.Recall(
                    mpb.RecallRequest(
                        parent=self._parent,
                        query=ack.fingerprint,
                        filter=recall_pb2.MemoryFilter(patients=[ack.patient]),
                        top_k=5,
                        record_access=False,  # a verification writes nothing
                    ),
                    metadata=agent,
                    timeout=CALL_TIMEOUT,
                )
            semantic = {r.memory.name: r.scores.semantic for r in reply.results}
            return semantic.get(ack.name, 0.0) > 0.0

        results = await asyncio.gather(*(recalled(ack) for ack in memories))
        return [ack.name for ack, ok in zip(memories, results, strict=True) if not ok]


def _fingerprint(record: record_pb2.Record, kind: str) -> str:
    if kind == "patient":
        names = record.patient.name
        return names[0].given[0] if names and names[0].given else ""
    if kind == "observation":
        return f"{record.observation.value_quantity.value}"
    return record.memory_block.content
