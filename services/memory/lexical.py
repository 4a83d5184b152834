"""Lexical (BM25) matching of memories, in process, kept in step with the change log.

Why not Milvus's BM25: Milvus Lite (the embedded default) has no sparse
index and scans, and a Milvus server before 2.5 has no BM25 at all; recall
must rank lexically the same way everywhere. Memories are short, and an
agent's memories number in the thousands, so an in-memory inverted index per
tenant is small and fast.

Each process keeps its own index and its own cursor into the change log: it
is built from the database on a tenant's first recall (live memories), then
every recall first applies the memory changes committed since its cursor.
Replicas therefore never depend on each other's state, and a restart only
costs one rebuild.

Scores are Okapi BM25 (k1 = 1.2, b = 0.5) over lower-cased, lightly stemmed
tokens without stopwords (b below the usual 0.75: memories run from a few
words to paragraphs, and a long one should not lose a match for its length
as much — chosen on the train conversations of the recall tuning protocol,
docs/memory.md); `score` rates any text (e.g. a memory as it was at
`as_of`) with the tenant's current statistics.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections import Counter
from dataclasses import dataclass, field

from hacs.records.v1 import record_pb2

from services.kernel.records.store import RecordStore
from services.memory.blocks import COLLECTION, index_text, memory_id, patient_id
from services.memory.text import STOPWORDS, stem

K1 = 1.2
B = 0.5
_WORD = re.compile(r"[a-z0-9]+")
SCAN_BATCH = 1000
CHANGES_PER_ROUND = 5000


def terms(text: str) -> list[str]:
    return [stem(w) for w in _WORD.findall(text.lower()) if w not in STOPWORDS]


@dataclass
class _Doc:
    counts: Counter[str]
    length: int
    agent: str
    patient: str
    memory_type: int


@dataclass
class _TenantIndex:
    cursor: int = 0
    docs: dict[str, _Doc] = field(default_factory=dict)
    postings: dict[str, set[str]] = field(default_factory=dict)
    total_length: int = 0

    def remove(self, name: str) -> None:
        doc = self.docs.pop(name, None)
        if doc is None:
            return
        self.total_length -= doc.length
        for term in doc.counts:
            names = self.postings.get(term)
            if names is not None:
                names.discard(name)
                if not names:
                    del self.postings[term]

    def add_all(self, records: list[record_pb2.Record]) -> None:
        for record in records:
            self.add(record)

    def add(self, record: record_pb2.Record) -> None:
        self.remove(record.name)
        block = record.memory_block
        words = terms(index_text(block))
        doc = _Doc(Counter(words), len(words), block.agent, patient_id(block), block.memory_type)
        self.docs[record.name] = doc
        self.total_length += doc.length
        for term in doc.counts:
            self.postings.setdefault(term, set()).add(record.name)


@dataclass(frozen=True)
class LexicalScope:
    agents: tuple[str, ...] = ()
    patients: tuple[str, ...] = ()
    types: tuple[int, ...] = ()


class LexicalIndex:
    def __init__(self, store: RecordStore) -> None:
        self._store = store
        self._tenants: dict[str, _TenantIndex] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def refresh(self, tenant_id: str) -> None:
        """Build the tenant's index on first use, else apply the changes since its cursor."""
        lock = self._locks.setdefault(tenant_id, asyncio.Lock())
        async with lock:
            index = self._tenants.get(tenant_id)
            if index is None:
                index = await self._build(tenant_id)
                self._tenants[tenant_id] = index
                return
            while True:
                async with self._store.transaction(tenant_id) as tx:
                    head = await tx.head_sequence()
                    if head <= index.cursor:
                        return
                    changes = await tx.changes(
                        after=index.cursor,
                        up_to=head,
                        limit=CHANGES_PER_ROUND,
                        collections=[COLLECTION],
                    )
                    ids = list(dict.fromkeys(c.record_id for c in changes))
                    current = await tx.get_many([(COLLECTION, i) for i in ids])
                for record_id in ids:
                    name = f"tenants/{tenant_id}/{COLLECTION}/{record_id}"
                    record = current.get((COLLECTION, record_id))
                    if record is None or record.HasField("delete_time"):
                        index.remove(name)
                    else:
                        index.add(record)
                full = len(changes) == CHANGES_PER_ROUND
                index.cursor = changes[-1].sequence if full else head

    async def _build(self, tenant_id: str) -> _TenantIndex:
        index = _TenantIndex()
        async with self._store.transaction(tenant_id) as tx:
            index.cursor = await tx.head_sequence()
        after: tuple[str, str] | None = None
        while True:
            async with self._store.transaction(tenant_id) as tx:
                page = await tx.scan(after=after, limit=SCAN_BATCH, collections=[COLLECTION])
            await asyncio.to_thread(index.add_all, page)
            if len(page) < SCAN_BATCH:
                return index
            after = (COLLECTION, memory_id(page[-1].name))

    def search(
        self, tenant_id: str, query: str, scope: LexicalScope, limit: int
    ) -> list[tuple[str, float]]:
        """The best `limit` live memories of the scope for the query, by BM25."""
        index = self._tenants.get(tenant_id)
        if index is None:
            return []
        scores: dict[str, float] = {}
        for term in set(terms(query)):
            for name in index.postings.get(term, ()):
                doc = index.docs[name]
                if _in_scope(doc, scope):
                    gained = self._term_score(index, term, doc.counts[term], doc.length)
                    scores[name] = scores.get(name, 0.0) + gained
        return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]

    def score(self, tenant_id: str, query: str, text: str) -> float:
        """BM25 of any text for the query, with the tenant's statistics."""
        index = self._tenants.get(tenant_id)
        if index is None:
            return 0.0
        words = terms(text)
        counts = Counter(words)
        return sum(
            self._term_score(index, term, counts[term], len(words))
            for term in set(terms(query))
            if counts[term]
        )

    @staticmethod
    def _term_score(index: _TenantIndex, term: str, frequency: int, length: int) -> float:
        total = max(len(index.docs), 1)
        having = len(index.postings.get(term, ()))
        idf = math.log(1 + (total - having + 0.5) / (having + 0.5))
        average = index.total_length / total if index.docs else 1.0
        norm = K1 * (1 - B + B * length / max(average, 1e-9))
        return idf * frequency * (K1 + 1) / (frequency + norm)


def _in_scope(doc: _Doc, scope: LexicalScope) -> bool:
    return (
        (not scope.agents or doc.agent in scope.agents)
        and (not scope.patients or doc.patient in scope.patients)
        and (not scope.types or doc.memory_type in scope.types)
    )
