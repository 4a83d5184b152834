"""Lexical (BM25) matching of memories, in process, kept in step with the change log.

Why not Milvus's BM25: Milvus Lite (the embedded default) has no sparse
index and scans, and a Milvus server before 2.5 has no BM25 at all; recall
must rank lexically the same way everywhere. Memories are short, and an
agent's memories number in the thousands, so an in-memory index per tenant
is small and fast. It is the platform's one lexical engine
(services/kernel/retrieval/bm25_index.py), read through the memory analyser.

Each process keeps its own index and its own cursor into the change log: it
is built from the database on a tenant's first recall (live memories), then
every recall first applies the memory changes committed since its cursor.
Replicas therefore never depend on each other's state, and a restart only
costs one rebuild.

Scores are Okapi BM25 (k1 = 1.2, b = 0.5, Lucene's idf) over lower-cased,
lightly stemmed tokens without stopwords (b below the usual 0.75: memories
run from a few words to paragraphs, and a long one should not lose a match
for its length as much — chosen on the train conversations of the recall
tuning protocol, docs/memory.md). Document frequencies count live memories
exactly. Every recall rewrites the memories it returns (their access
counts): a version whose indexed words and scope are unchanged keeps its
postings, so that bookkeeping leaves no dead slots to scan past. `scorer`
rates any text (e.g. a memory as it was at `as_of`) with the tenant's
current statistics; equal scores rank by memory name.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from hacs.records.v1 import record_pb2

from services.kernel.records.names import record_name
from services.kernel.records.store import RecordStore
from services.kernel.retrieval.bm25_index import Bm25, TermIndex
from services.kernel.retrieval.slot_filters import UNKNOWN, Interned
from services.kernel.retrieval.terms import COUNT_MAX, TERM_DTYPE
from services.memory.blocks import COLLECTION, INFO, index_text, memory_id, patient_id
from services.memory.text import STOPWORDS, stem

MEMORY_BM25 = Bm25(k1=1.2, b=0.5, idf_plus_one=True, live_frequencies=True, exact=True)
_WORD = re.compile(r"[a-z0-9]+")
SCAN_BATCH = 1000
CHANGES_PER_ROUND = 5000
SCOPE_DTYPE = np.dtype([("agent", np.int32), ("patient", np.int32), ("memory_type", np.int32)])


def terms(text: str) -> list[str]:
    return [stem(w) for w in _WORD.findall(text.lower()) if w not in STOPWORDS]


@dataclass
class _TenantIndex:
    """One tenant's memories in the engine: names <-> document ids, words <-> term ids."""

    cursor: int = 0
    index: TermIndex = field(default_factory=lambda: TermIndex(1.0, SCOPE_DTYPE, MEMORY_BM25))
    words: Interned = field(default_factory=Interned)
    values: Interned = field(default_factory=Interned)  # agents' and patients' names
    doc_ids: dict[str, int] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)
    # What each memory's postings were made from: a new version that leaves it unchanged
    # (a recall's access-count write) keeps its postings instead of leaving a dead slot.
    fingerprints: dict[str, tuple[str, str, str, int]] = field(default_factory=dict)
    next_doc_id: int = 0

    def remove(self, name: str) -> None:
        doc_id = self.doc_ids.pop(name, None)
        self.fingerprints.pop(name, None)
        if doc_id is not None:
            del self.names[doc_id]
            self.index.remove(doc_id)

    def add_all(self, records: list[record_pb2.Record]) -> None:
        for record in records:
            self.add(record)

    def add(self, record: record_pb2.Record) -> None:
        block = record.memory_block
        text = index_text(block)
        fingerprint = (text, block.agent, patient_id(block), block.memory_type)
        if self.fingerprints.get(record.name) == fingerprint:
            return
        self.remove(record.name)
        self.fingerprints[record.name] = fingerprint
        counts = Counter(self.words.id(term) for term in terms(text))
        postings = np.array(
            [(term_id, 0, min(count, COUNT_MAX)) for term_id, count in sorted(counts.items())],
            TERM_DTYPE,
        )
        doc_id, self.next_doc_id = self.next_doc_id, self.next_doc_id + 1
        self.doc_ids[record.name], self.names[doc_id] = doc_id, record.name
        scope = (self.values.id(block.agent), self.values.id(fingerprint[2]), block.memory_type)
        self.index.add(doc_id, counts.total(), postings, scope)


@dataclass(frozen=True)
class LexicalScope:
    agents: tuple[str, ...] = ()
    patients: tuple[str, ...] = ()
    types: tuple[int, ...] = ()


class MemoryLexicon:
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
                    name = record_name(tenant_id, INFO, record_id)
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
        """The best `limit` live memories of the scope for the query, by BM25, then by name."""
        tenant = self._tenants.get(tenant_id)
        if tenant is None or limit <= 0:
            return []
        term_ids = [t for t in tenant.words.ids(set(terms(query))) if t != UNKNOWN]
        mask = _scope_mask(tenant, scope)
        k = limit + 1
        while True:  # widen until no memory left out can tie with the last one kept
            top = tenant.index.top(term_ids, k, mask)
            if top.complete or top.scores[-1] < top.scores[limit - 1]:
                break
            k *= 2
        found = [
            (tenant.names[int(d)], float(s)) for d, s in zip(top.doc_ids, top.scores, strict=True)
        ]
        return sorted(found, key=lambda kv: (-kv[1], kv[0]))[:limit]

    def scorer(self, tenant_id: str, query: str) -> Callable[[str], float]:
        """BM25 of any text for the query (e.g. a memory as it was at `as_of`), with the
        tenant's current statistics, read once for every text scored."""
        tenant = self._tenants.get(tenant_id)
        if tenant is None:
            return lambda text: 0.0
        wanted = set(terms(query))
        ids = dict(zip(wanted, tenant.words.ids(wanted), strict=True))
        statistics = tenant.index.statistics(i for i in ids.values() if i != UNKNOWN)

        def score(text: str) -> float:
            words = terms(text)
            counts = Counter(words)
            held = [(None if ids[t] == UNKNOWN else ids[t], counts[t]) for t in wanted if counts[t]]
            return statistics.score(held, len(words))

        return score


def _scope_mask(tenant: _TenantIndex, scope: LexicalScope) -> np.ndarray | None:
    """Slots of the memories in scope (None: every memory)."""
    payload = tenant.index.payload
    mask: np.ndarray | None = None
    for column, wanted in (
        ("agent", tenant.values.ids(scope.agents)),
        ("patient", tenant.values.ids(scope.patients)),
        ("memory_type", list(scope.types)),
    ):
        if wanted:
            allowed = np.isin(payload[column], wanted)
            mask = allowed if mask is None else mask & allowed
    return mask
