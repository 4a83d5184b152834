"""Fusing a dense and a lexical ranking into one.

Two methods, both keeping each hit's component scores and ranks:

* weighted: each list's scores are normalised per query (min-max over the
  candidates, so a hit's position within its list counts, not the raw scale
  of cosine vs BM25), then summed with the weights; a hit missing from a list
  gets 0 for it.
* rrf: reciprocal rank fusion, sum of weight / (k + rank).

The defaults (method, weights, k, candidate depth) were tuned on the train
split of the MedQuAD retrieval set; see DEFAULT_FUSION and docs/search.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Fusion:
    method: str = "weighted"  # weighted | rrf
    semantic_weight: float = 0.7
    lexical_weight: float = 0.3
    rrf_k: int = 60
    depth: int = 100  # candidates per retriever
    # How scores are made comparable: "minmax" over each list's candidates, or
    # "max" (each list divided by its best score, cosine floored at 0).
    normalization: str = "minmax"


# Tuned on MedQuAD train (see docs/search.md for the sweep); not on any test split.
DEFAULT_FUSION = Fusion()


@dataclass
class Candidate:
    pk: str
    fields: dict[str, Any] = field(default_factory=dict)
    dense: float | None = None
    lexical: float | None = None
    dense_rank: int = 0
    lexical_rank: int = 0
    fused: float = 0.0


def _normalised(scores: Sequence[float], how: str) -> list[float]:
    if not scores:
        return []
    if how == "max":
        top = max(max(scores), 1e-12)
        return [max(s, 0.0) / top for s in scores]
    low, high = min(scores), max(scores)
    if high - low < 1e-12:
        return [1.0 for _ in scores]
    return [(s - low) / (high - low) for s in scores]


def fuse(
    dense: Sequence[tuple[str, float, dict[str, Any]]],
    lexical: Sequence[tuple[str, float, dict[str, Any]]],
    fusion: Fusion,
    limit: int | None = None,
) -> list[Candidate]:
    """Merge two best-first lists of (pk, score, fields) into one, best first.

    With `limit`, only the best `limit` are returned (and built: search asks for
    10 of 200 candidates on every call).
    """
    dense_rank = {pk: rank for rank, (pk, _, _) in enumerate(dense, start=1)}
    lexical_rank = {pk: rank for rank, (pk, _, _) in enumerate(lexical, start=1)}
    fused: dict[str, float] = {}
    if fusion.method == "rrf":
        for pk, rank in dense_rank.items():
            fused[pk] = fusion.semantic_weight / (fusion.rrf_k + rank)
        for pk, rank in lexical_rank.items():
            fused[pk] = fused.get(pk, 0.0) + fusion.lexical_weight / (fusion.rrf_k + rank)
    else:
        norm = _normalised([s for _, s, _ in dense], fusion.normalization)
        for (pk, _, _), value in zip(dense, norm, strict=True):
            fused[pk] = fusion.semantic_weight * value
        norm = _normalised([s for _, s, _ in lexical], fusion.normalization)
        for (pk, _, _), value in zip(lexical, norm, strict=True):
            fused[pk] = fused.get(pk, 0.0) + fusion.lexical_weight * value
    order = sorted(fused, key=lambda pk: (-fused[pk], pk))
    if limit is not None:
        order = order[:limit]
    dense_by_pk = {pk: (score, fields) for pk, score, fields in dense}
    lexical_by_pk = {pk: (score, fields) for pk, score, fields in lexical}
    ranked = []
    for pk in order:
        candidate = Candidate(pk, fused=fused[pk])
        if pk in dense_by_pk:
            candidate.dense, fields = dense_by_pk[pk]
            candidate.dense_rank = dense_rank[pk]
            candidate.fields.update(fields)
        if pk in lexical_by_pk:
            candidate.lexical, fields = lexical_by_pk[pk]
            candidate.lexical_rank = lexical_rank[pk]
            for key, value in fields.items():
                candidate.fields.setdefault(key, value)
        ranked.append(candidate)
    return ranked
