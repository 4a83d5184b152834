"""The recall score: semantic, lexical, recency and importance, weighted.

Each component is in [0, 1]:

    semantic   cosine similarity of the query's and the memory's vectors (< 0 -> 0)
    lexical    the memory's BM25 score divided by the best BM25 score among the
               candidates (0 when BM25 did not retrieve it)
    recency    0.5 ** (age / half-life of the memory's type); age runs from the
               memory's time (event time, else creation) to the query time, and
               a memory from the future counts as brand new
    importance the memory's importance at the query time (see importance.py)

    final = (w_s * semantic + w_l * lexical + w_r * recency + w_i * importance)
            / (w_s + w_l + w_r + w_i)

so the final score is in [0, 1] whatever the weights' scale. The defaults
favour what the memory says (semantic and lexical) over when and how much it
mattered; callers tune them per request.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from hacs.records.v1 import memory_block_pb2

MT = memory_block_pb2.MemoryType


@dataclass(frozen=True)
class Weights:
    semantic: float = 0.55
    lexical: float = 0.25
    recency: float = 0.10
    importance: float = 0.10

    @property
    def total(self) -> float:
        return self.semantic + self.lexical + self.recency + self.importance


DEFAULT_WEIGHTS = Weights()

# How fast each kind of memory loses recency (the contract's examples).
DEFAULT_HALF_LIVES: dict[int, timedelta] = {
    MT.MEMORY_TYPE_EPISODIC: timedelta(days=7),
    MT.MEMORY_TYPE_WORKING: timedelta(days=1),
    MT.MEMORY_TYPE_EXECUTIVE: timedelta(days=30),
    MT.MEMORY_TYPE_PROCEDURAL: timedelta(days=365),
    MT.MEMORY_TYPE_SEMANTIC: timedelta(days=365),
}


@dataclass(frozen=True)
class Scores:
    semantic: float
    lexical: float
    recency: float
    importance: float
    final: float


def recency(memory_time: datetime, query_time: datetime, half_life: timedelta) -> float:
    age = query_time - memory_time
    if age <= timedelta(0):
        return 1.0
    return float(0.5 ** (age / half_life))


def combine(
    weights: Weights, *, semantic: float, lexical: float, recency: float, importance: float
) -> Scores:
    semantic = min(max(semantic, 0.0), 1.0)
    lexical = min(max(lexical, 0.0), 1.0)
    total = weights.total or 1.0
    final = (
        weights.semantic * semantic
        + weights.lexical * lexical
        + weights.recency * recency
        + weights.importance * importance
    ) / total
    return Scores(semantic, lexical, recency, importance, final)
