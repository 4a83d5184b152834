"""The pure pieces of `hacs eval rag`: ids, scope tags, the quick-run subset, document ranking."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.evals.rag import (
    document_id,
    rank_documents,
    read_scopes,
    scope_tag,
    score,
    subset,
)
from services.rag.ingest import TAG
from services.rag.names import DOCUMENT_ID
from services.tooling.beir import Dataset, Document


def test_valid_ids_are_kept_and_invalid_ones_made_valid_and_distinct() -> None:
    assert document_id("CancerGov_0000001_1_1") == "CancerGov_0000001_1_1"
    made = {document_id(i) for i in ("conv-26:D1:3", "conv-26_D1_3", "conv-26/D1/3", "x" * 200)}
    assert len(made) == 4 and "conv-26_D1_3" in made
    assert all(DOCUMENT_ID.match(i) for i in made)
    assert document_id("conv-26:D1:3").startswith("conv-26_D1_3-")
    assert DOCUMENT_ID.match(document_id("::"))


def test_scope_tags_are_valid_document_tags() -> None:
    assert scope_tag("conv-26") == "scope:conv-26"
    assert scope_tag("Conv 26") == "scope:conv 26"
    odd = scope_tag("Ünïcode scope!" * 10)
    assert TAG.match(odd) and odd.startswith("scope:")


def _dataset() -> Dataset:
    corpus = [Document(f"d{i}", f"title {i}", f"text {i}") for i in range(10)]
    queries = {"q2": "second", "q1": "first", "q3": "third"}
    qrels = {"q1": {"d7": 2, "d9": 0}, "q2": {"d8": 1}, "q3": {"d0": 1}}
    return Dataset("toy", corpus, queries, qrels)


def test_subset_keeps_the_relevant_documents_then_fills_in_corpus_order() -> None:
    small = subset(_dataset(), max_queries=2, max_documents=4)
    assert list(small.queries) == ["q1", "q2"] and set(small.qrels) == {"q1", "q2"}
    # d7 and d8 are relevant (d9 is judged 0, so it is not kept for being judged)
    assert [d.id for d in small.corpus] == ["d0", "d1", "d7", "d8"]
    tiny = subset(_dataset(), max_queries=0, max_documents=1)
    assert [d.id for d in tiny.corpus] == ["d0", "d7", "d8"]  # the relevant ones always stay
    assert subset(_dataset(), 0, 0).corpus == _dataset().corpus


def test_a_document_ranks_where_its_best_chunk_ranks() -> None:
    assert rank_documents(["b", "a", "b", "c", "a"]) == ["b", "a", "c"]


def test_score_averages_over_every_judged_query() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 2, "c": 1}}
    figures = score({"q1": ["a", "x"]}, qrels)  # q2 got nothing: it scores 0
    assert figures == {"ndcg@10": 0.5, "recall@10": 0.5}


def test_scopes_are_read_from_metadata(tmp_path: Path) -> None:
    (tmp_path / "corpus.jsonl").write_text(
        "\n".join(
            json.dumps(d)
            for d in (
                {"_id": "c:1", "text": "hi", "metadata": {"scope": "conv-1"}},
                {"_id": "c:2", "text": "yo"},
            )
        )
    )
    (tmp_path / "queries.jsonl").write_text(
        json.dumps({"_id": "q", "text": "?", "metadata": {"scope": "conv-1"}}) + "\n"
    )
    assert read_scopes(tmp_path) == ({"c:1": "conv-1"}, {"q": "conv-1"})


@pytest.mark.parametrize("corpus_id", ["a b", "ä", "a/b", "-" * 129])
def test_any_corpus_id_becomes_a_valid_document_id(corpus_id: str) -> None:
    assert DOCUMENT_ID.match(document_id(corpus_id))
