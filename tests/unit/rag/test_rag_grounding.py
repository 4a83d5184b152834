"""Citation validation, the extractive answer and the patient-context boost (pure functions)."""

from __future__ import annotations

from hacs.common.v1 import datatypes_pb2
from hacs.rag.v1 import patient_context_pb2

from services.kernel.retrieval import vocabulary
from services.rag.citations import CitedSource, answer_sentences, validate
from services.rag.context import _ngrams, _phrase_finder, boost, facts
from services.rag.extractive import INTRO, Passage, extractive_answer
from services.rag.relevance import Features, base_logit, content_words, coverage, sigmoid

RENAL = (
    "Renal impairment\n\nMetformin is contraindicated when eGFR is below 30 mL/min/1.73 m2. "
    "With eGFR 30-44, reduce the maximum dose to 1000 mg per day."
)
START = "Start metformin at 500 mg once daily with the evening meal."


def test_markers_stay_with_the_sentence_they_follow() -> None:
    answer = "Stop metformin below 30. [1] Reduce it at 30-44 [1][2]. Check B12 [1, 3]."
    assert [answer[s:e] for s, e in answer_sentences(answer)] == [
        "Stop metformin below 30. [1]",
        "Reduce it at 30-44 [1][2].",
        "Check B12 [1, 3].",
    ]


def test_validation_flags_invalid_unsupported_and_uncited_claims() -> None:
    sources = [CitedSource(1, RENAL, headings=frozenset({"Renal impairment"})),
               CitedSource(2, START), CitedSource(3, "Old text", exists=False)]  # fmt: skip
    result = validate(
        "Metformin is contraindicated when eGFR is below 30 mL/min [1]. "
        "With eGFR 30-44 the maximum dose is 2000 mg per day [1]. "
        "Warfarin cures asthma [7]. Start metformin at 500 mg daily [3]. "
        "Take it with food every morning. The passages do not mention dialysis.",
        sources,
    )
    grounded, wrong_number, invented, replaced, uncited, meta = result.sentences
    assert grounded.supported and grounded.support_score == 1.0
    assert grounded.quote.startswith("Metformin is contraindicated")  # heading left out
    assert not wrong_number.supported and "does not contain 2000" in wrong_number.issue
    assert not invented.supported and invented.issue == "cites [7] which was not retrieved"
    assert not replaced.supported and "no longer exists" in replaced.issue
    assert not uncited.supported and uncited.issue == "no citation"
    assert not meta.is_claim and meta.supported
    assert result.invalid_citations == [7, 3] and result.cited == [1]
    assert result.unsupported == 4 and not result.passed


def test_extractive_answer_quotes_the_best_sentences_verbatim_and_cites_them() -> None:
    sentences = extractive_answer(
        "When is metformin contraindicated?",
        [Passage(1, RENAL, 0.9, frozenset({"Renal impairment"})), Passage(2, START, 0.3)],
    )
    assert sentences[0] == INTRO
    assert sentences[1] == "Metformin is contraindicated when eGFR is below 30 mL/min/1.73 m2 [1]."
    assert all("[2]" not in s for s in sentences)  # far less relevant than the best: not quoted
    check = validate(" ".join(sentences), [CitedSource(1, RENAL), CitedSource(2, START)])
    assert check.passed and check.cited == [1]
    assert extractive_answer("anything", []) == [INTRO]


def test_patient_facts_raise_matching_passages_and_lower_mismatched_ones() -> None:
    ckd = datatypes_pb2.CodeableConcept(
        coding=[datatypes_pb2.Coding(system="http://snomed.info/sct", code="709044004")]
    )
    context = patient_context_pb2.PatientContext(
        age=82, sex="male", conditions=[ckd], notes="on warfarin"
    )
    found = facts(context)
    renal, labels = boost(found, RENAL)
    assert renal > 0 and any(label.startswith("condition:") for label in labels)
    older, labels = boost(found, "In frail older adults relax the target.")
    assert older == 0.4 and labels == ["age: 82"]
    warfarin, _ = boost(found, "Bleeding risk rises with an INR above 3.")
    assert warfarin == 0.6
    children, labels = boost(found, "Children under 5 and pregnant women are treated differently.")
    assert children == -1.0 and len(labels) == 2
    assert boost(found, START) == (0.0, [])
    assert boost([], RENAL) == (0.0, [])


def test_relevance_is_monotone_in_each_feature_and_bounded() -> None:
    low = Features(dense=0.2, lexical=0.0, coverage=0.0)
    assert 0.0 < sigmoid(base_logit(low)) < 0.5
    for better in (Features(0.7, 0.0, 0.0), Features(0.2, 1.0, 0.0), Features(0.2, 0.0, 1.0)):
        assert base_logit(better) > base_logit(low)
    assert sigmoid(1000) == 1.0 and sigmoid(-1000) == 0.0
    assert coverage(content_words("metformin dosing kidneys"), "Dose of metformin in kidney") == 1


def test_phrase_lookup_finds_exactly_the_consecutive_word_runs_of_the_text() -> None:
    text = "Reduce the metformin dose when eGFR falls below 30 in chronic kidney disease."
    words = vocabulary.tokens(text)
    contains = _phrase_finder(text)
    runs = _ngrams(text)
    # Every run of up to five words is found, and so is the whole sentence.
    assert all(contains(run) for run in runs)
    assert contains(tuple(words))
    # Words of the text out of order, or broken runs, are not.
    for absent in [("kidney", "chronic"), ("metformin", "when"), ("dose", "egfr"), ("insulin",)]:
        assert not contains(absent)
        assert absent not in runs
