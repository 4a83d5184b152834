"""Recall's signals as pure functions: passages, named times, recency, context."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hacs.records.v1 import memory_block_pb2

from services.memory.passages import MAX_PASSAGES, passages, sentences, who
from services.memory.ranking import CONTEXT_SHARE, recency, with_context
from services.memory.temporal import Window, named_windows

WEEK = timedelta(days=7)
T0 = datetime(2023, 10, 13, 12, tzinfo=UTC)


def block(content: str, *participants: str) -> memory_block_pb2.MemoryBlock:
    return memory_block_pb2.MemoryBlock(content=content, participants=list(participants))


def test_passages_are_sentences_and_asides_led_by_who_was_involved() -> None:
    turn = block(
        "Caroline: Thanks, Mel! I went to a support group yesterday. "
        "It was powerful. [shares a photo: a rainbow flag. It was big]",
        "Caroline",
    )
    assert passages(turn) == [
        "Caroline: Thanks, Mel!",
        "Caroline: I went to a support group yesterday.",
        "Caroline: It was powerful.",
        "Caroline: shares a photo: a rainbow flag. It was big",
    ]
    # Resource names say nothing to a language model: not used as a lead.
    assert who(block("x", "tenants/t/actors/nurse", "Dr Smith", "Dr Smith")) == "Dr Smith"
    assert passages(block("BP 140/90. No chest pain.")) == ["BP 140/90.", "No chest pain."]


def test_every_memory_has_a_passage_and_long_ones_are_capped() -> None:
    assert passages(block("!")) == ["!"]
    many = block(" ".join(f"Sentence {i}." for i in range(40)))
    assert len(passages(many)) == MAX_PASSAGES
    assert sentences("One. Two? Three!") == ["One.", "Two?", "Three!"]


def test_named_days_and_months_become_windows() -> None:
    day = named_windows("What painting did Melanie show on October 13, 2023?")
    assert day == (Window(datetime(2023, 10, 13, tzinfo=UTC), datetime(2023, 10, 14, tzinfo=UTC)),)
    month = named_windows("What did Nate organise in December 2022?")
    assert month == (Window(datetime(2022, 12, 1, tzinfo=UTC), datetime(2023, 1, 1, tzinfo=UTC)),)
    assert named_windows("What did John say about his promotion?") == ()
    assert named_windows("anything on 2023-02-30?") == ()  # no such day


def test_recency_measures_closeness_to_a_named_time_on_both_sides() -> None:
    window = Window(T0, T0 + timedelta(days=1))
    later_query = T0 + 100 * WEEK
    assert recency(T0 + timedelta(hours=3), later_query, WEEK, [window]) == 1.0
    assert recency(T0 - WEEK, later_query, WEEK, [window]) == pytest.approx(0.5)
    assert recency(T0 + timedelta(days=1) + WEEK, later_query, WEEK, [window]) == pytest.approx(0.5)
    # Without a named time: age at the query time, the future counting as new.
    assert recency(T0, T0 + WEEK, WEEK) == pytest.approx(0.5)
    assert recency(T0 + WEEK, T0, WEEK) == 1.0


def test_context_lifts_a_memory_to_a_share_of_what_it_cites() -> None:
    own = {"question": 0.8, "answer": 0.1, "unrelated": 0.3, "strong": 0.9}
    cites = {
        "answer": ["question", "not-a-candidate"],
        "strong": ["question"],
        "unrelated": [],
        "question": ["question"],  # citing itself changes nothing
    }
    lifted = with_context(own, cites)
    assert lifted["answer"] == pytest.approx(CONTEXT_SHARE * 0.8)
    assert lifted["strong"] == 0.9  # its own score is higher
    assert lifted["unrelated"] == 0.3
    assert lifted["question"] == 0.8
    # One hop only, from own scores: a chain does not compound.
    chain = with_context({"a": 1.0, "b": 0.0, "c": 0.0}, {"b": ["a"], "c": ["b"]})
    assert chain == {"a": 1.0, "b": CONTEXT_SHARE, "c": 0.0}
