"""The documented formulas: importance decay and reinforcement, recency, the final score."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hacs.memory.v1 import memory_service_pb2 as pb
from hacs.records.v1 import memory_block_pb2, record_pb2

from services.memory import importance
from services.memory.ranking import DEFAULT_WEIGHTS, Weights, combine, recency

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def memory(score: float, written: datetime = T0) -> record_pb2.Record:
    record = record_pb2.Record()
    record.memory_block.memory_type = memory_block_pb2.MEMORY_TYPE_EPISODIC
    record.memory_block.content = "x"
    record.memory_block.importance_score = score
    record.update_time.FromDatetime(written)
    record.create_time.FromDatetime(written)
    return record


def test_importance_decays_towards_the_floor() -> None:
    record = memory(0.9)
    assert importance.effective(record, T0) == pytest.approx(0.9)
    after = importance.effective(record, T0 + importance.HALF_LIFE)
    assert after == pytest.approx(importance.FLOOR + (0.9 - importance.FLOOR) / 2)
    assert importance.effective(memory(0.05), T0 + timedelta(days=999)) == pytest.approx(0.05)


def test_use_and_feedback_move_importance_by_a_share_of_the_distance() -> None:
    accessed = importance.record_access(memory(0.5), T0)
    assert accessed.memory_block.importance_score == pytest.approx(0.5 + 0.05 * 0.5)
    assert accessed.memory_block.access_count == 1
    useful = importance.apply_feedback(memory(0.5), pb.MEMORY_FEEDBACK_USEFUL, T0, None)
    assert useful.memory_block.importance_score == pytest.approx(0.6)
    wrong = memory(0.8)
    wrong.memory_block.confidence_score = 0.8
    wrong = importance.apply_feedback(wrong, pb.MEMORY_FEEDBACK_INCORRECT, T0, None)
    assert wrong.memory_block.importance_score == pytest.approx(0.4)
    assert wrong.memory_block.confidence_score == pytest.approx(0.4)
    exact = importance.apply_feedback(memory(0.8), pb.MEMORY_FEEDBACK_NOT_USEFUL, T0, 0.25)
    assert exact.memory_block.importance_score == pytest.approx(0.25)


def test_recency_halves_every_half_life_and_never_exceeds_one() -> None:
    week = timedelta(days=7)
    assert recency(T0, T0 + week, week) == pytest.approx(0.5)
    assert recency(T0, T0 + 2 * week, week) == pytest.approx(0.25)
    assert recency(T0 + week, T0, week) == 1.0


def test_final_score_is_the_normalised_weighted_sum() -> None:
    scores = combine(Weights(2, 1, 1, 0), semantic=1.0, lexical=0.5, recency=0.0, importance=1.0)
    assert scores.final == pytest.approx((2 * 1.0 + 0.5) / 4)
    newer = combine(DEFAULT_WEIGHTS, semantic=0.7, lexical=0.4, recency=0.9, importance=0.5)
    older = combine(DEFAULT_WEIGHTS, semantic=0.7, lexical=0.4, recency=0.2, importance=0.5)
    assert newer.final > older.final
