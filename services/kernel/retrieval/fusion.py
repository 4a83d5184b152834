"""Fusing a dense and a lexical ranking into one.

Two methods, both keeping each hit's component scores and ranks:

* weighted: each list's scores are normalised per query, then summed with
  the weights; a hit missing from a list gets 0 for it. "minmax" (the
  default) stretches each list over [0, 1] across its candidates, so a hit's
  place within its list counts, not the raw scale of cosine vs BM25; "max"
  divides each list by its best score (cosine floored at 0).
* rrf: reciprocal rank fusion, sum of weight / (k + rank).

The defaults (method, normalisation, weights, candidate depth) were chosen by
their worst case over the train splits of four sets, MedQuAD's templates and
three sets of people's own questions; see DEFAULT_FUSION and docs/search.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Fusion:
    method: str = "weighted"  # weighted | rrf
    semantic_weight: float = 0.85
    lexical_weight: float = 0.15
    rrf_k: int = 60
    depth: int = 200  # candidates per retriever
    # How scores are made comparable: "minmax" over each list's candidates, or "max"
    # (each list divided by its best score, cosine floored at 0).
    normalization: str = "minmax"


# Chosen on train splits only (MedQuAD, consumer-qa, consumer-qa-titled, kqa) by the
# smallest margin of hybrid over every part it is made of (docs/search.md, "Fusion"):
# +0.0064 nDCG@10 at worst (kqa); 0.7 / 0.3 over 100, the default before, was -0.0031.
# Max-normalised 0.9 / 0.1 had the best worst case (+0.0077) but lost exact
# identifiers: a query that is a code ("I10") no longer found its record first, the
# lexical share too small to lift it over a flat dense list
# (tests/integration/test_search_service.py); this is the best that keeps them.
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
    # Equal fused scores keep their lists' own order (dense first): with "max", every
    # cosine below 0 counts 0, and a dense-only search must still rank those by cosine.
    unranked = len(dense) + len(lexical) + 1
    order = sorted(
        fused,
        key=lambda pk: (
            -fused[pk],
            dense_rank.get(pk, unranked),
            lexical_rank.get(pk, unranked),
            pk,
        ),
    )
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
