"""Finding near-duplicate memories and the contradictions among look-alikes.

A pair of memories is a duplicate candidate when both hold:

* embedding similarity (cosine) >= `embedding_similarity`, and
* lexical overlap >= `lexical_overlap`: the IDF-weighted overlap coefficient
  of their normalised content tokens (text.py), i.e. the weight of the
  shared tokens over the weight of the smaller memory's tokens. IDF is taken
  over the memories being consolidated, so words every memory uses
  ("patient", "reports") count for little and a drug or a finding for much.

Every pair at or above the embedding threshold is also checked for
contradicting facts (contradictions.py); a contradicting pair is never
merged, whatever its overlap, and is reported when the two are about the
same thing (their words without the values overlap by at least
CONTRADICTION_SUBJECT_OVERLAP). Pairs the fact check finds to be about
different things or events are never merged either.

Groups grow greedily from the most similar candidate pair down (single
pass, union-find), and two groups join only if

* no member of one contradicts a member of the other (checked pair by pair,
  not just along the candidate edges, so A~B~C never merges A with a C it
  contradicts),
* every cross pair is similar enough (cosine >= embedding_similarity -
  LINK_SLACK): a chain of paraphrases may drift, a group may not, and
* the joined group stays within `max_group_size`.

Memories are only ever compared within a partition (same agent, patient and
memory type): groups never span agents or patients.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from services.memory.contradictions import FactConflict, Verdict, compare
from services.memory.facts import Fact, entities, extract
from services.memory.merging import Reading
from services.memory.text import analyse

# Tuned on the train split of tests/data/memory (see docs/memory.md).
DEFAULT_EMBEDDING_SIMILARITY = 0.65
DEFAULT_LEXICAL_OVERLAP = 0.50
# Contradictions are reported when the two memories' subjects (their words
# without the values) overlap at least this much.
CONTRADICTION_SUBJECT_OVERLAP = 0.40
DEFAULT_MAX_GROUP_SIZE = 50
LINK_SLACK = 0.05
BLOCK = 1024  # rows of the similarity matrix computed at once


@dataclass(frozen=True)
class Thresholds:
    embedding_similarity: float = DEFAULT_EMBEDDING_SIMILARITY
    lexical_overlap: float = DEFAULT_LEXICAL_OVERLAP
    max_group_size: int = DEFAULT_MAX_GROUP_SIZE


@dataclass(frozen=True)
class Item:
    """One memory to compare: its name, its partition, its words."""

    name: str
    partition: tuple[str, ...]
    text: str


@dataclass(frozen=True)
class PairContradiction:
    left: int
    right: int
    similarity: float
    conflicts: list[FactConflict]


@dataclass
class Group:
    members: list[int]
    min_similarity: float = 1.0
    mean_similarity: float = 1.0


@dataclass
class Plan:
    groups: list[Group] = field(default_factory=list)
    contradictions: list[PairContradiction] = field(default_factory=list)
    candidate_pairs: int = 0


class Comparer:
    """Per-memory analysis (tokens, facts) and pairwise measures, computed once."""

    def __init__(self, items: Sequence[Item], vectors: np.ndarray) -> None:
        self.items = items
        self.vectors = vectors
        analyses = [analyse(item.text) for item in items]
        self.tokens = [frozenset(a.content()) for a in analyses]
        self.subjects = [frozenset(a.subject()) for a in analyses]
        self.facts: list[list[Fact]] = [extract(a) for a in analyses]
        self.about = [entities(a) for a in analyses]
        counts = Counter(token for tokens in self.tokens for token in tokens)
        total = max(len(items), 1)
        self.idf = {t: math.log((total + 1) / (n + 0.5)) for t, n in counts.items()}
        self._verdicts: dict[tuple[int, int], Verdict] = {}

    def reading(self, i: int) -> Reading:
        """Memory i's facts and words as merging reads them (no second analysis)."""
        return Reading([f for f in self.facts[i] if f.kind != "polarity"], self.tokens[i])

    def weight(self, tokens: frozenset[str]) -> float:
        return sum(self.idf.get(t, 0.0) for t in tokens)

    def overlap(self, i: int, j: int) -> float:
        return self._overlap(self.tokens[i], self.tokens[j])

    def subject_overlap(self, i: int, j: int) -> float:
        """Overlap of what the two memories are about, their values left out."""
        return self._overlap(self.subjects[i], self.subjects[j])

    def _overlap(self, a: frozenset[str], b: frozenset[str]) -> float:
        smaller = min(self.weight(a), self.weight(b))
        return self.weight(a & b) / smaller if smaller > 0 else 0.0

    def similarity(self, i: int, j: int) -> float:
        return float(np.dot(self.vectors[i], self.vectors[j]))

    def verdict(self, i: int, j: int) -> Verdict:
        key = (min(i, j), max(i, j))
        if key not in self._verdicts:
            a, b = key
            self._verdicts[key] = compare(
                self.facts[a], self.facts[b], self.about[a], self.about[b]
            )
        return self._verdicts[key]


def partitions(items: Sequence[Item]) -> list[list[int]]:
    grouped: dict[tuple[str, ...], list[int]] = {}
    for index, item in enumerate(items):
        grouped.setdefault(item.partition, []).append(index)
    return list(grouped.values())


def similar_pairs(
    vectors: np.ndarray, members: list[int], threshold: float
) -> list[tuple[float, int, int]]:
    """(cosine, i, j) for i < j in `members` with cosine >= threshold, blockwise."""
    found: list[tuple[float, int, int]] = []
    if len(members) < 2:
        return found
    index = np.asarray(members)
    matrix = vectors[index]
    for start in range(0, len(members), BLOCK):
        block = matrix[start : start + BLOCK] @ matrix.T
        rows, cols = np.nonzero(block >= threshold)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            i, j = start + r, c
            if i < j:
                found.append((float(block[r, c]), int(index[i]), int(index[j])))
    return found


def plan(comparer: Comparer, thresholds: Thresholds, parts: list[list[int]] | None = None) -> Plan:
    """Duplicate groups (size >= 2) and contradictions among the items (of `parts`)."""
    result = Plan()
    edges: list[tuple[float, int, int]] = []
    for members in partitions(comparer.items) if parts is None else parts:
        for similarity, i, j in similar_pairs(
            comparer.vectors, members, thresholds.embedding_similarity
        ):
            verdict = comparer.verdict(i, j)
            if verdict.conflicts:
                # Reported when the two are about the same thing; never merged either way.
                if comparer.subject_overlap(i, j) >= CONTRADICTION_SUBJECT_OVERLAP:
                    result.contradictions.append(
                        PairContradiction(i, j, similarity, verdict.conflicts)
                    )
            elif verdict.compatible and comparer.overlap(i, j) >= thresholds.lexical_overlap:
                edges.append((similarity, i, j))
    result.candidate_pairs = len(edges)
    result.groups = _grow_groups(comparer, edges, thresholds)
    return result


def _grow_groups(
    comparer: Comparer, edges: list[tuple[float, int, int]], thresholds: Thresholds
) -> list[Group]:
    group_of: dict[int, list[int]] = {}
    link = thresholds.embedding_similarity - LINK_SLACK
    for _, i, j in sorted(edges, key=lambda e: (-e[0], e[1], e[2])):
        a = group_of.get(i, [i])
        b = group_of.get(j, [j])
        if a is b or len(a) + len(b) > thresholds.max_group_size:
            continue
        compatible = all(
            comparer.similarity(x, y) >= link and comparer.verdict(x, y).compatible
            for x in a
            for y in b
        )
        if not compatible:
            continue
        joined = a + b
        for member in joined:
            group_of[member] = joined
    groups: list[Group] = []
    seen: set[int] = set()
    for members in group_of.values():
        if id(members) in seen:
            continue
        seen.add(id(members))
        ordered = sorted(members)
        sims = [comparer.similarity(x, y) for k, x in enumerate(ordered) for y in ordered[k + 1 :]]
        groups.append(Group(ordered, min(sims), sum(sims) / len(sims)))
    groups.sort(key=lambda g: g.members[0])
    return groups
