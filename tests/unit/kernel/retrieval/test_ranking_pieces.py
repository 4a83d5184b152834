"""Fusion, snippets and filter expressions: the pure parts of search."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from services.kernel.retrieval.expressions import FilterSpec, code_key, records_expression
from services.kernel.retrieval.fusion import Fusion, fuse
from services.kernel.retrieval.snippets import snippet


def test_weighted_fusion_rewards_agreement_and_keeps_components() -> None:
    dense = [("a", 0.9, {}), ("b", 0.8, {}), ("c", 0.1, {})]
    lexical = [("b", 12.0, {}), ("d", 6.0, {}), ("a", 0.0, {})]
    ranked = fuse(
        dense, lexical, Fusion(method="weighted", semantic_weight=0.5, lexical_weight=0.5)
    )
    assert ranked[0].pk == "b"  # near the top of both lists
    b = ranked[0]
    assert (b.dense, b.lexical, b.dense_rank, b.lexical_rank) == (0.8, 12.0, 2, 1)
    assert {c.pk for c in ranked} == {"a", "b", "c", "d"}
    only_dense = next(c for c in ranked if c.pk == "c")
    assert only_dense.lexical is None and only_dense.lexical_rank == 0


def test_rrf_uses_ranks_not_scores() -> None:
    ranked = fuse(
        [("a", 0.99, {}), ("b", 0.01, {})],
        [("b", 1.0, {}), ("a", 0.5, {})],
        Fusion(method="rrf", rrf_k=60, semantic_weight=0.5, lexical_weight=0.5),
    )
    assert abs(ranked[0].fused - ranked[1].fused) < 1e-12  # symmetric ranks -> a tie


def test_weights_decide_between_the_retrievers() -> None:
    dense = [("x", 0.9, {}), ("y", 0.5, {})]
    lexical = [("y", 10.0, {}), ("x", 1.0, {})]
    assert fuse(dense, lexical, Fusion(semantic_weight=0.9, lexical_weight=0.1))[0].pk == "x"
    assert fuse(dense, lexical, Fusion(semantic_weight=0.1, lexical_weight=0.9))[0].pk == "y"


def test_a_limit_keeps_the_same_best_candidates() -> None:
    dense = [(f"d{i}", 1.0 - i / 50, {"src": "dense"}) for i in range(40)]
    lexical = [(f"d{i * 3}", 30.0 - i, {"src": "lexical", "n": i}) for i in range(30)]
    for fusion in (Fusion(), Fusion(method="rrf")):
        everything = fuse(dense, lexical, fusion)
        best = fuse(dense, lexical, fusion, limit=7)
        assert [(c.pk, c.fused, c.dense_rank, c.lexical_rank) for c in best] == [
            (c.pk, c.fused, c.dense_rank, c.lexical_rank) for c in everything[:7]
        ]
        both = next(c for c in best if c.dense_rank and c.lexical_rank)
        assert both.fields["src"] == "dense" and "n" in both.fields  # dense's fields first


def test_max_normalisation_keeps_a_near_tie_a_near_tie() -> None:
    """ "max" divides each list by its best score: two lexical hits of almost the same
    BM25 stay almost equal, so the dense list decides between them. Min-max stretches the
    same two over [0, 1] and lets the lexical list's last candidate lose all of its share."""
    dense = [("a", 0.62, {}), ("b", 0.60, {})]
    lexical = [("b", 10.0, {}), ("a", 9.9, {})]
    by_max = fuse(
        dense, lexical, Fusion(semantic_weight=0.5, lexical_weight=0.5, normalization="max")
    )
    assert [c.pk for c in by_max] == ["a", "b"]
    assert by_max[0].fused == pytest.approx(0.5 * 1.0 + 0.5 * 0.99)
    by_minmax = fuse(
        dense, lexical, Fusion(semantic_weight=0.5, lexical_weight=0.5, normalization="minmax")
    )
    assert [c.pk for c in by_minmax] == ["a", "b"] and by_minmax[0].fused == pytest.approx(0.5)
    assert by_minmax[1].fused == pytest.approx(0.5)  # 0.62 vs 10.0 and 0.60 vs 9.9: a tie
    # A cosine below 0 counts as 0, not as a negative share.
    by_max_only = Fusion(normalization="max")
    floored = fuse([("d", 0.4, {}), ("c", -0.2, {})], [], by_max_only)
    assert [(c.pk, c.fused) for c in floored] == [("d", pytest.approx(0.85)), ("c", 0.0)]
    # Hits that all count 0 keep their list's order (a dense-only search ranks by cosine).
    below = [("z", -0.01, {}), ("b", -0.03, {}), ("m", -0.2, {})]
    assert [c.pk for c in fuse(below, [], by_max_only)] == ["z", "b", "m"]


def test_snippet_centres_on_the_matches() -> None:
    text = (
        "Intro text. " * 30
        + "Signs and symptoms of leukemia include fever and bruising."
        + " Outro." * 30
    )
    found = snippet(text, "leukemia symptoms", length=80)
    assert "symptoms" in found.text and "leukemia" in found.text
    marked = {found.text[s:e].lower() for s, e in found.highlights}
    assert marked == {"symptoms", "leukemia"}


def test_snippets_mark_the_words_bm25_matched() -> None:
    text = "Ménière's disease with hypertension; hypertensive crisis ruled out. Seen with family."
    found = snippet(text, "Hypertensive patients with meniere", length=200)
    marked = [found.text[s:e] for s, e in found.highlights]
    # Porter stems as in the index, folded case and accents; "with" is not content.
    assert marked == ["Ménière", "hypertension", "hypertensive"]


def test_a_snippet_window_holds_the_most_matches() -> None:
    text = "glucose " + "filler " * 60 + "insulin glucose insulin " + "filler " * 60
    found = snippet(text, "glucose insulin", length=60)
    assert found.text.count("insulin") == 2 and len(found.highlights) == 3


def test_expressions_cover_each_filter() -> None:
    spec = FilterSpec(
        kinds=["Patient"],
        patient_ids=["p-1"],
        min_age=65,
        max_age=80,
        genders=["female"],
        codes=["http://snomed.info/sct|44054006", "E11.9"],
        start_time=datetime(2024, 1, 1, tzinfo=UTC),
        labels={"ward": "3b", "flagged": ""},
    )
    expr = records_expression(spec, today=date(2026, 6, 15))
    assert 'kind in ["Patient"]' in expr
    assert 'patient_id in ["p-1"]' in expr
    assert "birth_ymd <= 19610615" in expr  # 65 years before
    assert "birth_ymd > 19450615" in expr  # born after 81 years ago -> at most 80
    assert 'gender in ["female"]' in expr
    assert 'array_contains_any(codes, ["http://snomed.info/sct|44054006", "*|E11.9"])' in expr
    assert f"clinical_time >= {int(datetime(2024, 1, 1, tzinfo=UTC).timestamp())}" in expr
    assert 'labels["ward"] == "3b"' in expr and 'exists labels["flagged"]' in expr
    assert code_key("|X") == "|X"


def test_quotes_in_values_cannot_break_out_of_the_expression() -> None:
    expr = records_expression(FilterSpec(genders=['female" or tenant_id != "x']))
    assert expr == '(gender in ["female\\" or tenant_id != \\"x"])'
