"""Hybrid candidates for a query: dense (Milvus) + BM25 (the lexical index), fused, with features.

Shared by `Retrieve` and by the relevance fitting script, so the calibration
is fitted on exactly the features the service computes. The lexical engine
is the process's (the SQLite store with in-memory BM25 beside Milvus Lite,
Milvus's BM25 on a server; services/kernel/retrieval/lexical.py). Both searches always
filter by tenant, so candidates never cross tenants.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np

from services.kernel.retrieval.expressions import FilterSpec
from services.kernel.retrieval.fusion import DEFAULT_FUSION, fuse
from services.kernel.retrieval.lexical import LexicalIndex
from services.kernel.retrieval.vector_index import KNOWLEDGE, VectorIndex
from services.rag.relevance import Features, content_words, coverage

FIELDS = ["pk", "text"]


@dataclass
class Scored:
    pk: str
    indexed_text: str  # context header + chunk text, as indexed
    features: Features
    fused: float


async def hybrid_candidates(
    index: VectorIndex,
    lexical_index: LexicalIndex,
    tenant_id: str,
    query: str,
    vector: np.ndarray,
    dense_expr: str,
    lexical_spec: FilterSpec,
    depth: int,
) -> list[Scored]:
    """Up to 2 x `depth` candidates (dense and lexical lists), each with its features."""
    dense, lexical = await asyncio.gather(
        index.dense_search(KNOWLEDGE, tenant_id, vector, dense_expr, depth, FIELDS),
        lexical_index.search(KNOWLEDGE, tenant_id, query, lexical_spec, depth),
    )
    fused = fuse(
        [(h.pk, h.score, h.fields) for h in dense],
        [(h.pk, h.score, h.fields) for h in lexical],
        DEFAULT_FUSION,
    )
    missing = [c.pk for c in fused if c.dense is None]
    if missing:  # a lexical-only hit: its cosine still counts, so read its vector
        stored = await stored_vectors(index, tenant_id, missing)
        for c in fused:
            if c.pk in stored:
                c.dense = float(np.dot(stored[c.pk], vector))
    best_lexical = max((h.score for h in lexical), default=0.0)
    words = content_words(query)
    return [
        Scored(
            pk=c.pk,
            indexed_text=str(c.fields.get("text", "")),
            features=Features(
                dense=c.dense if c.dense is not None else 0.0,
                lexical=(c.lexical or 0.0) / best_lexical if best_lexical > 0 else 0.0,
                coverage=coverage(words, str(c.fields.get("text", ""))),
            ),
            fused=c.fused,
        )
        for c in fused
    ]


async def stored_vectors(
    index: VectorIndex, tenant_id: str, pks: list[str]
) -> dict[str, np.ndarray]:
    """The stored vectors of some chunks of a tenant, by primary key.

    A get by primary key, not VectorIndex.fetch: Milvus Lite evaluates any
    expression other than a bare `pk in [...]` (fetch adds the tenant) over
    every row of the collection, about 0.6 s a call at 40,000 chunks on 2
    cores against 17 ms for the get, and Retrieve makes this call almost
    every time. The tenant is still checked, on the rows returned.
    """
    name = await index.ensure(KNOWLEDGE)
    rows = await index.call(
        index.client.get,
        name,
        ids=pks,
        output_fields=["pk", "tenant_id", "dense"],
        **index.read_options,
    )
    return {
        str(row["pk"]): np.asarray(row["dense"], dtype=np.float32)
        for row in rows
        if row["tenant_id"] == tenant_id
    }
