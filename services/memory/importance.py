"""How important a memory is, and how use, feedback and time change that.

A memory's `importance_score` is exact as of its record's last write
(`update_time`); between writes it decays towards a floor:

    effective(t) = s                                        if s <= FLOOR
    effective(t) = FLOOR + (s - FLOOR) * 0.5 ** (dt / HALF_LIFE)  otherwise
    dt = t - update_time

Every event first takes the effective value now, then moves it towards 1
(reinforcement) or towards 0 (weakening) by a fixed fraction of the
distance, and the result is stored with the event's write:

    recalled (counted as access)   s + 0.05 * (1 - s)
    cited by a later memory        s + 0.10 * (1 - s)   (its related_memories)
    feedback USEFUL                s + 0.20 * (1 - s)
    feedback CITED                 s + 0.15 * (1 - s)
    feedback NOT_USEFUL            s * (1 - 0.20)
    feedback INCORRECT             s * 0.5, and confidence * 0.5
    feedback with importance_score set: exactly that value

Moving by a fraction of the remaining distance keeps the score in [0, 1]
and makes repeated use saturate rather than run away; decay means a memory
nobody uses drifts back to the floor within a few half-lives.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from hacs.memory.v1 import memory_service_pb2 as pb
from hacs.records.v1 import record_pb2

from services.memory.blocks import DEFAULT_CONFIDENCE, DEFAULT_IMPORTANCE, utc

FLOOR = 0.1
HALF_LIFE = timedelta(days=90)
ACCESS_GAIN = 0.05
CITATION_GAIN = 0.10


@dataclass(frozen=True)
class Feedback:
    """The effect of one kind of feedback: gain towards 1 or loss towards 0."""

    gain: float = 0.0
    loss: float = 0.0
    confidence_factor: float = 1.0


FEEDBACK: dict[int, Feedback] = {
    pb.MEMORY_FEEDBACK_USEFUL: Feedback(gain=0.20),
    pb.MEMORY_FEEDBACK_CITED: Feedback(gain=0.15),
    pb.MEMORY_FEEDBACK_NOT_USEFUL: Feedback(loss=0.20),
    pb.MEMORY_FEEDBACK_INCORRECT: Feedback(loss=0.50, confidence_factor=0.5),
}


def stored(record: record_pb2.Record) -> float:
    block = record.memory_block
    return (
        float(block.importance_score) if block.HasField("importance_score") else DEFAULT_IMPORTANCE
    )


def decayed(score: float, since: datetime, at: datetime) -> float:
    if score <= FLOOR or at <= since:
        return score
    halvings = (at - since) / HALF_LIFE
    return float(FLOOR + (score - FLOOR) * 0.5**halvings)


def effective(record: record_pb2.Record, at: datetime) -> float:
    """The importance of a memory at `at` (decay since its last write applied)."""
    return decayed(stored(record), utc(record.update_time), at)


def reinforced(score: float, gain: float) -> float:
    return min(1.0, score + gain * (1.0 - score))


def weakened(score: float, loss: float) -> float:
    return max(0.0, score * (1.0 - loss))


def apply_feedback(
    record: record_pb2.Record, kind: int, at: datetime, explicit: float | None
) -> record_pb2.Record:
    """The record with importance (and confidence) adjusted by one feedback."""
    block = record.memory_block
    if explicit is not None:
        block.importance_score = explicit
        return record
    effect = FEEDBACK[kind]
    score = effective(record, at)
    score = reinforced(score, effect.gain) if effect.gain else weakened(score, effect.loss)
    block.importance_score = round(score, 6)
    if effect.confidence_factor != 1.0:
        confidence = (
            block.confidence_score if block.HasField("confidence_score") else DEFAULT_CONFIDENCE
        )
        block.confidence_score = round(confidence * effect.confidence_factor, 6)
    return record


def record_access(record: record_pb2.Record, at: datetime) -> record_pb2.Record:
    """The record after one recall: counted, stamped, reinforced."""
    block = record.memory_block
    block.importance_score = round(reinforced(effective(record, at), ACCESS_GAIN), 6)
    block.access_count += 1
    block.last_accessed.FromDatetime(at)
    return record


def record_citation(record: record_pb2.Record, at: datetime) -> record_pb2.Record:
    """The record after a later memory cited it."""
    block = record.memory_block
    block.importance_score = round(reinforced(effective(record, at), CITATION_GAIN), 6)
    return record
