"""Recall: the memories best matching a query, and why each ranked where it did.

1. The index catches up with the change log (read-your-writes).
2. The query is embedded once; dense candidates come from Milvus, filtered
   by tenant and scope (and, with `as_of`, by the content revision valid
   then); lexical candidates from the in-process BM25 index (lexical.py).
3. Candidates found only by BM25 get their cosine from their stored vector
   (with `as_of`, from the words they had then), so every candidate has a
   true semantic score; every candidate's BM25 is computed on the words of
   the version that counts.
4. The records are read from the database — the current version, or with
   `as_of` the version current then — and the scope is applied to them
   (the authority on deletes, expiry and importance).
5. Each is scored (see ranking.py), the best `top_k` kept.
6. Unless told otherwise (or reading the past), the returned memories are
   counted as accessed in one transaction: access_count, last_accessed,
   importance (see importance.py).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from hacs.records.v1 import record_pb2

from services.common.caller import Caller
from services.memory import importance
from services.memory.blocks import (
    COLLECTION,
    embedding_text,
    index_text,
    memory_id,
    memory_time,
    vector_id,
)
from services.memory.lexical import LexicalIndex, LexicalScope
from services.memory.memory_index import MemoryIndex
from services.memory.ranking import DEFAULT_HALF_LIVES, Scores, Weights, combine, recency
from services.memory.record_writes import MemoryWriter, Revision
from services.memory.scope import Scope, index_expression, matches
from services.memory.text import canonical
from services.records.store import RecordStore

MIN_DEPTH = 100


@dataclass(frozen=True)
class RecallQuery:
    scope: Scope
    query: str
    top_k: int = 10
    as_of: datetime | None = None
    query_time: datetime | None = None
    weights: Weights = field(default_factory=Weights)
    half_lives: dict[int, timedelta] = field(default_factory=dict)
    min_score: float = 0.0
    record_access: bool = True


@dataclass(frozen=True)
class Recalled:
    record: record_pb2.Record
    scores: Scores


class Recaller:
    def __init__(
        self, store: RecordStore, index: MemoryIndex, lexical: LexicalIndex, writer: MemoryWriter
    ) -> None:
        self._store = store
        self._index = index
        self._lexical = lexical
        self._writer = writer

    async def recall(self, caller: Caller, query: RecallQuery, now: datetime) -> list[Recalled]:
        tenant_id = query.scope.tenant_id
        scope = query.scope
        query_time = query.query_time or query.as_of or now
        await asyncio.gather(self._index.catch_up(tenant_id), self._lexical.refresh(tenant_id))
        expr = index_expression(scope, query_time=query_time, as_of=query.as_of)
        vector = (await self._index.embed([canonical(query.query)], query=True))[0]
        depth = max(MIN_DEPTH, 5 * query.top_k)
        dense = await self._index.search(tenant_id, vector, expr, depth)
        lexical_hits = self._lexical.search(
            tenant_id, query.query, LexicalScope(scope.agents, scope.patients, scope.types), depth
        )

        # One candidate per memory: with as_of, the row valid then (there is one).
        semantic: dict[str, float] = {}
        for hit in dense:
            semantic.setdefault(hit.fields["name"], hit.score)
        lexical_only = [name for name, _ in lexical_hits if name not in semantic]
        records = await self._records(tenant_id, [*semantic, *lexical_only], query.as_of)
        semantic.update(await self._semantic(tenant_id, vector, lexical_only, records, query))

        bm25 = {
            name: self._lexical.score(tenant_id, query.query, index_text(record.memory_block))
            for name, record in records.items()
        }
        best_bm25 = max(bm25.values(), default=0.0)
        found: list[Recalled] = []
        for name, record in records.items():
            if name not in semantic:
                continue
            if not matches(record, scope, query_time=query_time, as_of=query.as_of):
                continue
            half_life = query.half_lives.get(
                record.memory_block.memory_type,
                DEFAULT_HALF_LIVES.get(record.memory_block.memory_type, timedelta(days=30)),
            )
            scores = combine(
                query.weights,
                semantic=semantic[name],
                lexical=bm25[name] / best_bm25 if best_bm25 > 0 else 0.0,
                recency=recency(memory_time(record), query_time, half_life),
                importance=importance.effective(record, query_time),
            )
            if scores.final >= query.min_score:
                found.append(Recalled(record, scores))
        found.sort(key=lambda r: (-r.scores.final, r.record.name))
        found = found[: query.top_k]
        if query.record_access and query.as_of is None and found and caller.can("write:memory"):
            found = await self._count_access(caller, tenant_id, found, now)
        return found

    async def _semantic(
        self,
        tenant_id: str,
        vector: np.ndarray,
        names: list[str],
        records: dict[str, record_pb2.Record],
        query: RecallQuery,
    ) -> dict[str, float]:
        """Cosine for candidates only BM25 found: from their stored vectors, or (as_of)
        from the words they had then."""
        wanted = [n for n in names if n in records]
        if not wanted:
            return {}
        if query.as_of is not None:
            texts = [embedding_text(records[n].memory_block) for n in wanted]
            vectors = await self._index.embed(texts, query=False)
            return {n: float(np.dot(v, vector)) for n, v in zip(wanted, vectors, strict=True)}
        pks = {n: vector_id(tenant_id, memory_id(n)) for n in wanted}
        stored = await self._index.vectors(tenant_id, list(pks.values()))
        return {n: float(np.dot(stored[pk], vector)) for n, pk in pks.items() if pk in stored}

    async def _records(
        self, tenant_id: str, names: list[str], as_of: datetime | None
    ) -> dict[str, record_pb2.Record]:
        ids = [memory_id(n) for n in names]
        async with self._store.transaction(tenant_id) as tx:
            if as_of is not None:
                by_id = await tx.versions_at(COLLECTION, ids, as_of)
                return {f"tenants/{tenant_id}/{COLLECTION}/{i}": r for i, r in by_id.items()}
            current = await tx.get_many([(COLLECTION, i) for i in ids])
        return {record.name: record for record in current.values()}

    async def _count_access(
        self, caller: Caller, tenant_id: str, found: list[Recalled], now: datetime
    ) -> list[Recalled]:
        """Count the returned memories as accessed; ones changed meanwhile are left as read."""
        revisions = [
            Revision(
                name=r.record.name,
                revise=lambda record: importance.record_access(record, now),
                paths=(
                    "memory_block.access_count",
                    "memory_block.last_accessed",
                    "memory_block.importance_score",
                ),
                expected_version=r.record.version,
            )
            for r in found
            if not r.record.HasField("delete_time")
        ]
        written = await self._writer.write(
            caller, tenant_id, revisions=revisions, strict=False, now=now
        )
        return [Recalled(written.revised.get(r.record.name, r.record), r.scores) for r in found]
