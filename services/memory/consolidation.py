"""Consolidate: merge near-duplicate memories, as a long operation with progress.

Stages (each reported as progress): load the scope's live memories and
their vectors (catching the index up first); find candidate pairs and
contradictions partition by partition; form groups; build the merged
blocks; write them. The comparison work runs in a worker thread so the
event loop keeps serving.

Each group is written in its own transaction: the merged block is created
and every source superseded (soft-deleted, `superseded_by` set) together,
and only if every source is still at the version that was planned — a
source changed meanwhile skips its group rather than merge stale words. A
cancelled run therefore leaves whole groups applied or not at all. A dry run
streams the same plan and writes nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from hacs.records.v1 import record_pb2

from services.common.caller import Caller
from services.common.db.base import utcnow
from services.common.errors import Conflict
from services.kernel.records.access import require_own_parent
from services.kernel.records.names import new_record_id
from services.kernel.records.store import RecordStore
from services.kernel.records.write_plans import NewRecord, Revision
from services.kernel.records.writes import RecordWriter
from services.memory.blocks import (
    INFO,
    embedding_text,
    memory_id,
    patient_id,
    vector_id,
)
from services.memory.contradictions import show
from services.memory.duplicates import (
    Comparer,
    Item,
    PairContradiction,
    Plan,
    Thresholds,
    partitions,
    plan,
)
from services.memory.listing import scan_scope
from services.memory.memories import Memories
from services.memory.memory_index import MemoryIndex
from services.memory.merging import merge, superseded
from services.memory.scope import Scope

LOADING, CANDIDATES, GROUPING, MERGING, WRITING = 1, 2, 3, 4, 5
PROGRESS_EVERY = 2000  # memories compared between two progress reports


@dataclass(frozen=True)
class ConsolidationProgress:
    stage: int
    processed: int
    total: int
    groups: int
    contradictions: int


@dataclass(frozen=True)
class MergedGroup:
    number: int
    sources: list[str]
    merged: record_pb2.Record
    min_similarity: float
    mean_similarity: float


@dataclass(frozen=True)
class FoundContradiction:
    memories: list[str]
    similarity: float
    facts: list[tuple[str, list[tuple[str, str, str]]]]  # attribute, [(memory, value, text)]


@dataclass
class ConsolidationOutcome:
    dry_run: bool
    scanned: int = 0
    groups: int = 0
    merged: int = 0
    contradictions: int = 0
    skipped_groups: int = 0
    seconds: float = 0.0


Event = ConsolidationProgress | MergedGroup | FoundContradiction | ConsolidationOutcome


@dataclass
class _Loaded:
    records: list[record_pb2.Record] = field(default_factory=list)
    vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 1), dtype=np.float32))


class Consolidator:
    def __init__(
        self, store: RecordStore, index: MemoryIndex, writer: RecordWriter, memories: Memories
    ) -> None:
        self._store = store
        self._index = index
        self._writer = writer
        self._memories = memories

    async def run(
        self, caller: Caller, scope: Scope, thresholds: Thresholds, *, dry_run: bool
    ) -> AsyncIterator[Event]:
        permission = "read:memory" if dry_run else "write:memory"
        require_own_parent(caller, scope.tenant_id, permission)
        caller.require(permission, f"tenants/{scope.tenant_id}")
        started = time.monotonic()
        outcome = ConsolidationOutcome(dry_run)
        now = utcnow()
        yield ConsolidationProgress(LOADING, 0, 0, 0, 0)
        loaded = await self._load(scope, now)
        outcome.scanned = len(loaded.records)
        yield ConsolidationProgress(LOADING, len(loaded.records), len(loaded.records), 0, 0)

        items = [
            Item(
                r.name,
                (r.memory_block.agent, patient_id(r.memory_block), str(r.memory_block.memory_type)),
                r.memory_block.content,
            )
            for r in loaded.records
        ]
        comparer = await asyncio.to_thread(Comparer, items, loaded.vectors)
        yield ConsolidationProgress(CANDIDATES, 0, len(items), 0, 0)
        found = Plan()
        done = 0
        for chunk in chunk_partitions(partitions(items)):  # partitions are independent
            part = await asyncio.to_thread(plan, comparer, thresholds, chunk)
            found.groups += part.groups
            found.contradictions += part.contradictions
            done += sum(len(members) for members in chunk)
            yield ConsolidationProgress(
                CANDIDATES, done, len(items), len(found.groups), len(found.contradictions)
            )
        outcome.contradictions = len(found.contradictions)
        for contradiction in found.contradictions:
            yield _contradiction(comparer, contradiction)
        yield ConsolidationProgress(
            GROUPING, len(items), len(items), len(found.groups), outcome.contradictions
        )

        stage = MERGING if dry_run else WRITING
        for number, group in enumerate(found.groups, start=1):
            sources = [loaded.records[i] for i in group.members]
            merged = merge(sources, now, [comparer.reading(i) for i in group.members])
            if not dry_run:
                written = await self._apply(caller, scope.tenant_id, sources, merged, now)
                if written is None:
                    outcome.skipped_groups += 1
                    continue
                merged = written
            outcome.groups += 1
            outcome.merged += len(sources)
            yield MergedGroup(
                number,
                [r.name for r in sources],
                merged,
                group.min_similarity,
                group.mean_similarity,
            )
            yield ConsolidationProgress(
                stage, number, len(found.groups), outcome.groups, outcome.contradictions
            )
        if not dry_run and outcome.groups:
            await self._memories.settle(scope.tenant_id)
        outcome.seconds = time.monotonic() - started
        yield outcome

    async def _load(self, scope: Scope, now: datetime) -> _Loaded:
        await self._index.catch_up(scope.tenant_id)
        records = await scan_scope(self._store, scope, now)
        if not records:
            return _Loaded()
        ids = [vector_id(scope.tenant_id, memory_id(r.name)) for r in records]
        stored = await self._index.vectors(scope.tenant_id, ids)
        missing = [i for i, pk in enumerate(ids) if pk not in stored]
        if missing:  # not indexed (yet): embed here rather than leave them out
            fresh = await self._index.embed(
                [embedding_text(records[i].memory_block) for i in missing], query=False
            )
            stored.update({ids[i]: v for i, v in zip(missing, fresh, strict=True)})
        vectors = np.stack([stored[pk] for pk in ids]).astype(np.float32)
        return _Loaded(records, vectors)

    async def _apply(
        self,
        caller: Caller,
        tenant_id: str,
        sources: list[record_pb2.Record],
        merged: record_pb2.Record,
        now: datetime,
    ) -> record_pb2.Record | None:
        record_id = new_record_id(INFO)
        name = f"tenants/{tenant_id}/{INFO.collection}/{record_id}"
        merged.memory_block.vector_id = vector_id(tenant_id, record_id)
        revisions = [
            Revision(
                name=source.name,
                revise=lambda record: superseded(record, name),
                paths=("memory_block.superseded_by",),
                expected_version=source.version,
                delete=True,
            )
            for source in sources
        ]
        try:
            written = await self._writer.write(
                caller,
                tenant_id,
                creates=[NewRecord(record_id, merged)],
                revisions=revisions,
                strict=True,
                prefix="merged",
                revised_field="memory",
                now=now,
            )
        except Conflict:  # a source changed since it was read: leave this group
            return None
        return written.created[0]


def chunk_partitions(parts: list[list[int]], size: int = PROGRESS_EVERY) -> list[list[list[int]]]:
    """Partitions batched into chunks of about `size` memories (one progress report each)."""
    chunks: list[list[list[int]]] = []
    current: list[list[int]] = []
    count = 0
    for members in parts:
        current.append(members)
        count += len(members)
        if count >= size:
            chunks.append(current)
            current, count = [], 0
    if current:
        chunks.append(current)
    return chunks


def _contradiction(comparer: Comparer, found: PairContradiction) -> FoundContradiction:
    a, b = comparer.items[found.left].name, comparer.items[found.right].name
    facts = [
        (
            conflict.attribute,
            [(a, show(f), f.text) for f in conflict.left]
            + [(b, show(f), f.text) for f in conflict.right],
        )
        for conflict in found.conflicts
    ]
    return FoundContradiction([a, b], found.similarity, facts)
