"""Recall: the memories best matching a query, and why each ranked where it did.

1. The index catches up with the change log (read-your-writes).
2. The query is embedded twice in one call: in canonical wording (matched
   against whole memories, also canonical) and as written (matched against
   passages, see passages.py). Dense candidates come from both Milvus
   collections, filtered by tenant and scope (and, with `as_of`, by the
   content revision valid then); lexical candidates from the in-process
   BM25 index (lexical.py).
3. A candidate that one search missed gets that cosine from its stored
   vectors (with `as_of`, from the words it had then), so every candidate
   has a true semantic score; every candidate's BM25 is computed on the
   words of the version that counts.
4. The records are read from the database — the current version, or with
   `as_of` the version current then — and the scope is applied to them
   (the authority on deletes, expiry and importance).
5. Each is scored (see ranking.py: context from the memories it cites,
   times the query names), the best `top_k` kept.
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
from services.kernel.records.names import record_name
from services.kernel.records.store import RecordStore
from services.kernel.records.write_plans import Revision
from services.kernel.records.writes import RecordWriter
from services.memory import importance
from services.memory.blocks import (
    COLLECTION,
    INFO,
    embedding_text,
    index_text,
    memory_id,
    memory_time,
    vector_id,
)
from services.memory.index_rows import PASSAGE, WHOLE
from services.memory.lexical import LexicalScope, MemoryLexicon
from services.memory.memory_index import MemoryIndex
from services.memory.passages import passages
from services.memory.ranking import (
    DEFAULT_HALF_LIVES,
    Scores,
    Weights,
    combine,
    recency,
    with_context,
)
from services.memory.scope import Scope, index_expression, matches
from services.memory.temporal import named_windows
from services.memory.text import canonical

MIN_DEPTH = 100
PASSAGES_PER_MEMORY = 3  # passage hits searched per memory wanted


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
class _QueryVectors:
    whole: np.ndarray  # of the canonical wording, for whole-memory vectors
    passage: np.ndarray  # of the words as written, for passage vectors


@dataclass(frozen=True)
class Recalled:
    record: record_pb2.Record
    scores: Scores


class Recaller:
    def __init__(
        self, store: RecordStore, index: MemoryIndex, lexical: MemoryLexicon, writer: RecordWriter
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
        expr = index_expression(scope)
        texts = list(dict.fromkeys([canonical(query.query), query.query]))
        embedded = await self._index.embed(texts, query=True)
        vectors = _QueryVectors(embedded[0], embedded[-1])
        depth = max(MIN_DEPTH, 5 * query.top_k)
        dense, dense_passages = await asyncio.gather(
            *(
                self._index.search(
                    kind,
                    tenant_id,
                    vector,
                    expr,
                    kind_depth,
                    as_of=query.as_of,
                    include_superseded=scope.include_superseded,
                )
                for kind, vector, kind_depth in (
                    (WHOLE, vectors.whole, depth),
                    (PASSAGE, vectors.passage, depth * PASSAGES_PER_MEMORY),
                )
            )
        )
        lexical_hits = self._lexical.search(
            tenant_id, query.query, LexicalScope(scope.agents, scope.patients, scope.types), depth
        )

        # Hits are best first: the first per memory is its best row.
        whole: dict[str, float] = {}
        for hit in dense:
            whole.setdefault(hit.fields["name"], hit.score)
        passage: dict[str, float] = {}
        for hit in dense_passages:
            passage.setdefault(hit.fields["name"], hit.score)
        names = list(dict.fromkeys([*whole, *passage, *(name for name, _ in lexical_hits)]))
        records = await self._records(tenant_id, names, query.as_of)
        await self._complete(tenant_id, vectors, records, whole, passage, query)

        in_scope = {
            name: record
            for name, record in records.items()
            if (name in whole or name in passage)
            and matches(record, scope, query_time=query_time, as_of=query.as_of)
        }
        semantic = {n: max(whole.get(n, 0.0), passage.get(n, 0.0), 0.0) for n in in_scope}
        bm25_of = self._lexical.scorer(tenant_id, query.query)
        bm25 = {name: bm25_of(index_text(record.memory_block)) for name, record in in_scope.items()}
        best_bm25 = max(bm25.values(), default=0.0)
        lexical = {n: s / best_bm25 if best_bm25 > 0 else 0.0 for n, s in bm25.items()}
        cites = {n: list(r.memory_block.related_memories) for n, r in in_scope.items()}
        semantic, lexical = with_context(semantic, cites), with_context(lexical, cites)
        windows = named_windows(query.query)

        found: list[Recalled] = []
        for name, record in in_scope.items():
            memory_type = record.memory_block.memory_type
            half_life = query.half_lives.get(
                memory_type, DEFAULT_HALF_LIVES.get(memory_type, timedelta(days=30))
            )
            scores = combine(
                query.weights,
                semantic=semantic[name],
                lexical=lexical[name],
                recency=recency(memory_time(record), query_time, half_life, windows),
                importance=importance.effective(record, query_time),
            )
            if scores.final >= query.min_score:
                found.append(Recalled(record, scores))
        found.sort(key=lambda r: (-r.scores.final, r.record.name))
        found = found[: query.top_k]
        if query.record_access and query.as_of is None and found and caller.can("write:memory"):
            found = await self._count_access(caller, tenant_id, found, now)
        return found

    async def _complete(
        self,
        tenant_id: str,
        vectors: _QueryVectors,
        records: dict[str, record_pb2.Record],
        whole: dict[str, float],
        passage: dict[str, float],
        query: RecallQuery,
    ) -> None:
        """Fill in the cosines a search missed: from stored vectors, or (as_of) from
        the words the memory had then."""
        need_whole = [n for n in records if n not in whole]
        need_passage = [n for n in records if n not in passage]
        if query.as_of is not None:
            await self._complete_from_words(
                vectors, records, need_whole, need_passage, whole, passage
            )
            return
        pk_of = {n: vector_id(tenant_id, memory_id(n)) for n in records}
        stored, stored_parts = await asyncio.gather(
            self._index.vectors(tenant_id, [pk_of[n] for n in need_whole]),
            self._index.passage_vectors(tenant_id, [pk_of[n] for n in need_passage]),
        )
        for n in need_whole:
            if pk_of[n] in stored:
                whole[n] = float(np.dot(stored[pk_of[n]], vectors.whole))
        for n in need_passage:
            found = stored_parts.get(pk_of[n])
            if found:
                passage[n] = max(float(np.dot(v, vectors.passage)) for v in found)

    async def _complete_from_words(
        self,
        vectors: _QueryVectors,
        records: dict[str, record_pb2.Record],
        need_whole: list[str],
        need_passage: list[str],
        whole: dict[str, float],
        passage: dict[str, float],
    ) -> None:
        texts = [embedding_text(records[n].memory_block) for n in need_whole]
        parts = {n: passages(records[n].memory_block) for n in need_passage}
        flat = [p for ps in parts.values() for p in ps]
        if not texts and not flat:
            return
        embedded = await self._index.embed([*texts, *flat], query=False)
        for n, v in zip(need_whole, embedded[: len(texts)], strict=True):
            whole[n] = float(np.dot(v, vectors.whole))
        at = len(texts)
        for n, ps in parts.items():
            if ps:
                passage[n] = max(
                    float(np.dot(embedded[at + k], vectors.passage)) for k in range(len(ps))
                )
            at += len(ps)

    async def _records(
        self, tenant_id: str, names: list[str], as_of: datetime | None
    ) -> dict[str, record_pb2.Record]:
        ids = [memory_id(n) for n in names]
        async with self._store.transaction(tenant_id) as tx:
            if as_of is not None:
                by_id = await tx.versions_at(COLLECTION, ids, as_of)
                return {record_name(tenant_id, INFO, i): r for i, r in by_id.items()}
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
            caller, tenant_id, revisions=revisions, strict=False, revised_field="memory", now=now
        )
        return [Recalled(written.revised.get(r.record.name, r.record), r.scores) for r in found]
