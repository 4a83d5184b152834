"""The recall score: semantic, lexical, recency and importance, weighted.

Each component is in [0, 1]:

    semantic   cosine similarity of the query and the memory: the best of the
               whole memory's vector and its passages' (passages.py) (< 0 -> 0)
    lexical    the memory's BM25 score divided by the best BM25 score among the
               candidates (0 when BM25 did not retrieve it)
    recency    0.5 ** (distance / half-life of the memory's type). When the
               query names days or months (temporal.py), distance runs from the
               memory's time (event time, else creation) to the nearest named
               window (0 inside one); otherwise it is the memory's age at the
               query time, and a memory from the future counts as brand new
    importance the memory's importance at the query time (see importance.py)

Context: a memory that cites others (`related_memories`, e.g. a reply and
the message it answers) is read in their light. Its semantic and lexical
components are at least CONTEXT_SHARE times those of any memory it cites
that is also a candidate (one hop, from their own scores). An answer
("They were awestruck") rarely repeats the words of the question it
answers; the message before it does.

    final = (w_s * semantic + w_l * lexical + w_r * recency + w_i * importance)
            / (w_s + w_l + w_r + w_i)

so the final score is in [0, 1] whatever the weights' scale. The defaults
favour what the memory says (semantic and lexical) over when and how much it
mattered; callers tune them per request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from hacs.records.v1 import memory_block_pb2

from services.memory.temporal import Window

MT = memory_block_pb2.MemoryType

# Share of a cited memory's relevance a citing memory inherits. Chosen on the
# train conversations of the recall tuning protocol (docs/memory.md).
CONTEXT_SHARE = 0.75


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


def recency(
    memory_time: datetime,
    query_time: datetime,
    half_life: timedelta,
    windows: Sequence[Window] = (),
) -> float:
    """Closeness to the times the query names, else to the query time (see above)."""
    if windows:
        distance = min(w.distance(memory_time) for w in windows)
    else:
        distance = max(query_time - memory_time, timedelta(0))
    if distance <= timedelta(0):
        return 1.0
    return float(0.5 ** (distance / half_life))


def with_context(
    own: Mapping[str, float], cites: Mapping[str, Sequence[str]], share: float = CONTEXT_SHARE
) -> dict[str, float]:
    """Each score raised to `share` times the best own score of the candidates it cites."""
    lifted = dict(own)
    for name, cited in cites.items():
        inherited = max((own[c] for c in cited if c in own and c != name), default=0.0)
        if name in lifted:
            lifted[name] = max(lifted[name], share * inherited)
    return lifted


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
