"""Retrieve: hybrid candidates -> live chunks -> re-rankers -> calibrated relevance -> cut.

1. The knowledge bases are resolved (named ones must exist in the caller's
   tenant; none named means all of them) and grouped by embedding model; the
   query is embedded once per model.
2. Each group gives dense + BM25 candidates, fused (services/kernel/retrieval/fusion.py);
   the dense search filters by every RetrievalFilter field, the lexical engine
   by knowledge base and tags, and step 3 applies the rest to both.
3. Only candidates whose chunk row exists are kept: that row, swapped in one
   transaction per document replacement, is what makes replacements atomic;
   the document row then answers the evidence, date and document filters.
4. A cross-encoder re-ranks when one is registered (RERANK_MODE_AUTO) or must
   (REQUIRED: FAILED_PRECONDITION when none is).
5. The calibrated logit (relevance.py), plus the patient-context boost
   (context.py), orders the results; `min_relevance` cuts on the sigmoid.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from hacs.rag.v1 import patient_context_pb2

from services.common.caller import Caller
from services.common.errors import Conflict
from services.kernel.embedding.embedder import Embedder
from services.kernel.embedding.rerankers import Rerankers
from services.kernel.records.reads import RecordReader
from services.kernel.retrieval.expressions import (
    FilterSpec,
    all_of,
    any_of,
    contains_any,
    extra_equals,
    knowledge_expression,
)
from services.kernel.retrieval.lexical import LexicalIndex
from services.kernel.retrieval.vector_index import VectorIndex
from services.rag import context as patient_context
from services.rag import relevance
from services.rag.candidates import Scored, hybrid_candidates
from services.rag.documents import document_name
from services.rag.indexing import EVIDENCE_NAMES, publication_epoch
from services.rag.knowledge_bases import KnowledgeBases
from services.rag.names import KnowledgeBaseName, parse_chunk
from services.rag.store import ChunkKey, KnowledgeStore
from services.rag.tables import ChunkRow, DocumentRow, KnowledgeBaseRow

RERANK_DEPTH = 50
RERANK_WEIGHT = 0.5  # the logit is the mean of the hybrid and the cross-encoder logits


@dataclass(frozen=True)
class RetrievalFilter:
    tags: tuple[str, ...] = ()
    evidence_levels: tuple[int, ...] = ()
    published_after: str = ""
    documents: tuple[str, ...] = ()  # document names


@dataclass(frozen=True)
class RetrievalQuery:
    tenant_id: str
    query: str
    knowledge_bases: tuple[KnowledgeBaseName, ...] = ()
    context: patient_context_pb2.PatientContext = field(
        default_factory=patient_context_pb2.PatientContext
    )
    top_k: int = 10
    min_relevance: float = 0.0
    filter: RetrievalFilter = field(default_factory=RetrievalFilter)
    rerank: str = "auto"  # auto | disabled | required


@dataclass
class Retrieved:
    chunk: ChunkRow
    document: DocumentRow
    relevance: float
    logit: float
    dense: float
    lexical: float
    fused: float
    context_boost: float = 0.0
    rerank: float | None = None
    matched_context: list[str] = field(default_factory=list)


@dataclass
class RetrievalOutcome:
    results: list[Retrieved]
    resolved_context: patient_context_pb2.PatientContext
    below_min_relevance: int = 0
    reranked: bool = False


def filter_expression(kb_ids: list[str], f: RetrievalFilter) -> str:
    parts = [knowledge_expression(FilterSpec(groups=kb_ids, document_tags=list(f.tags)))]
    if f.evidence_levels:
        names = [f"evidence:{EVIDENCE_NAMES[e]}" for e in f.evidence_levels if e in EVIDENCE_NAMES]
        parts.append(contains_any("codes", names))
    if f.published_after:
        parts.append(f"clinical_time >= {publication_epoch(f.published_after)}")
    if f.documents:
        parts.append(any_of(extra_equals("document", d) for d in f.documents))
    return all_of(parts)


def _admitted(document: DocumentRow, f: RetrievalFilter) -> bool:
    """The filters again, on the stored document: the lexical engine applies only tags."""
    if f.evidence_levels and document.evidence_level not in f.evidence_levels:
        return False
    if f.published_after and (
        not document.publication_date
        or publication_epoch(document.publication_date) < publication_epoch(f.published_after)
    ):
        return False
    return not f.documents or document_name(document) in f.documents


class Retriever:
    def __init__(
        self,
        store: KnowledgeStore,
        knowledge_bases: KnowledgeBases,
        embedder: Embedder,
        index: VectorIndex,
        lexical: LexicalIndex,
        reader: RecordReader,
        rerankers: Rerankers,
    ) -> None:
        self._store = store
        self._kbs = knowledge_bases
        self._embedder = embedder
        self._index = index
        self._lexical = lexical
        self._reader = reader
        self._rerankers = rerankers

    async def retrieve(self, caller: Caller, q: RetrievalQuery) -> RetrievalOutcome:
        kbs = await self._kbs.readable(caller, q.tenant_id, list(q.knowledge_bases))
        rerank = self._rerank_wanted(caller, q.rerank)
        context = await patient_context.resolve(self._reader, caller, q.tenant_id, q.context)
        if not kbs:
            return RetrievalOutcome([], context)
        depth = max(50, 3 * q.top_k)
        by_model: dict[str, list[KnowledgeBaseRow]] = defaultdict(list)
        for kb in kbs:
            by_model[kb.embedding_model].append(kb)
        groups = await asyncio.gather(
            *(self._group(q, model, group, depth) for model, group in by_model.items())
        )
        scored = [s for group in groups for s in group]
        live = [c for c in await self._live(q.tenant_id, scored) if _admitted(c[2], q.filter)]
        results = [self._result(s, chunk, doc) for s, chunk, doc in live]
        if rerank and results:
            results.sort(key=lambda r: -r.logit)
            await self._cross_encode(caller, q.query, results[:RERANK_DEPTH])
        facts = patient_context.facts(context)
        for r in results:
            if facts:
                text = " ".join([r.document.title, *r.chunk.section_path, r.chunk.text])
                r.context_boost, r.matched_context = patient_context.boost(facts, text)
                r.logit += r.context_boost
            r.relevance = relevance.sigmoid(r.logit)
        results.sort(key=lambda r: (-r.logit, r.chunk.document_id, r.chunk.chunk_index))
        kept = [r for r in results if r.relevance >= q.min_relevance]
        below = len(results) - len(kept)
        return RetrievalOutcome(kept[: q.top_k], context, below, rerank)

    def _rerank_wanted(self, caller: Caller, mode: str) -> bool:
        if mode == "disabled":
            return False
        has_model = self._rerankers.available()
        if mode == "required":
            if not has_model:
                raise Conflict(
                    "RERANK_MODE_REQUIRED, but no re-ranker is registered; register a local "
                    "cross-encoder with EmbeddingService.RegisterModel (kind MODEL_KIND_RERANKER)",
                    subject="models",
                )
            return True
        return has_model and caller.can("read:embedding")

    async def _group(
        self, q: RetrievalQuery, model: str, kbs: list[KnowledgeBaseRow], depth: int
    ) -> list[Scored]:
        vector = (await self._embedder.embed([q.query], query=True, model=model))[0]
        kb_ids = [kb.id for kb in kbs]
        return await hybrid_candidates(
            self._index,
            self._lexical,
            q.tenant_id,
            q.query,
            vector,
            filter_expression(kb_ids, q.filter),
            FilterSpec(groups=kb_ids, document_tags=list(q.filter.tags)),
            depth,
        )

    async def _live(
        self, tenant_id: str, scored: list[Scored]
    ) -> list[tuple[Scored, ChunkRow, DocumentRow]]:
        """Candidates whose chunk row exists now (the current revision of a live document)."""
        keys: dict[str, ChunkKey] = {}
        for s in scored:
            name = parse_chunk(s.pk)
            if name is not None:
                keys[s.pk] = (name.document.kb_id, name.document.document_id, name.chunk_id)
        async with self._store.transaction(tenant_id) as tx:
            chunks = await tx.chunks(list(keys.values()))
            docs = await tx.documents(sorted({(k[0], k[1]) for k in chunks}))
        live = []
        for s in scored:
            chunk = chunks.get(keys.get(s.pk, ("", "", "")))
            if chunk is not None:
                live.append((s, chunk, docs[(chunk.knowledge_base_id, chunk.document_id)]))
        return live

    @staticmethod
    def _result(s: Scored, chunk: ChunkRow, document: DocumentRow) -> Retrieved:
        logit = relevance.base_logit(s.features)
        return Retrieved(
            chunk=chunk,
            document=document,
            relevance=relevance.sigmoid(logit),
            logit=logit,
            dense=s.features.dense,
            lexical=s.features.lexical,
            fused=s.fused,
        )

    async def _cross_encode(self, caller: Caller, query: str, results: list[Retrieved]) -> None:
        caller.require("read:embedding", "models/(default re-ranker)")
        _, logits, _ = await self._rerankers.score("", query, [r.chunk.text for r in results])
        for r, value in zip(results, np.asarray(logits, dtype=float), strict=True):
            r.rerank = relevance.sigmoid(float(value))
            r.logit = (1 - RERANK_WEIGHT) * r.logit + RERANK_WEIGHT * float(value)
