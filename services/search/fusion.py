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
) -> list[Candidate]:
    """Merge two best-first lists of (pk, score, fields) into one, best first."""
    merged: dict[str, Candidate] = {}
    for rank, (pk, score, fields) in enumerate(dense, start=1):
        merged[pk] = Candidate(pk, dict(fields), dense=score, dense_rank=rank)
    for rank, (pk, score, fields) in enumerate(lexical, start=1):
        candidate = merged.setdefault(pk, Candidate(pk, dict(fields)))
        candidate.lexical, candidate.lexical_rank = score, rank
        for key, value in fields.items():
            candidate.fields.setdefault(key, value)
    if fusion.method == "rrf":
        for c in merged.values():
            c.fused = (
                fusion.semantic_weight / (fusion.rrf_k + c.dense_rank) if c.dense_rank else 0.0
            ) + (fusion.lexical_weight / (fusion.rrf_k + c.lexical_rank) if c.lexical_rank else 0.0)
    else:
        dense_norm = dict(
            zip(
                (pk for pk, _, _ in dense),
                _normalised([s for _, s, _ in dense], fusion.normalization),
                strict=True,
            )
        )
        lexical_norm = dict(
            zip(
                (pk for pk, _, _ in lexical),
                _normalised([s for _, s, _ in lexical], fusion.normalization),
                strict=True,
            )
        )
        for c in merged.values():
            c.fused = fusion.semantic_weight * dense_norm.get(
                c.pk, 0.0
            ) + fusion.lexical_weight * lexical_norm.get(c.pk, 0.0)
    return sorted(merged.values(), key=lambda c: (-c.fused, c.pk))
