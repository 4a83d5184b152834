from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.kernel.retrieval.query_parser import QueryParser
from services.kernel.retrieval.vocabulary import ICD10CM, SNOMED, shipped

NOW = datetime(2026, 6, 15, tzinfo=UTC)


@pytest.fixture(scope="module")
def parser() -> QueryParser:
    return QueryParser()


def test_the_example_of_the_contract(parser: QueryParser) -> None:
    parse = parser.parse("elderly patients with diabetes and high blood pressure", now=NOW)
    assert (parse.min_age, parse.max_age, parse.resource_types) == (65, None, ["Patient"])
    concepts = {t.match.concept.name: t for t in parse.terms}
    assert set(concepts) == {"Diabetes mellitus", "Hypertension"}
    htn = concepts["Hypertension"]
    assert htn.text == "high blood pressure"
    assert {(c.system, c.code) for c in htn.match.concept.codings} == {
        (SNOMED, "38341003"),
        (ICD10CM, "I10"),
    }
    assert parse.text == "diabetes high blood pressure"
    assert "hypertension" in parse.expanded_text and "htn" in parse.expanded_text
    sources = {(e.field, e.source_text) for e in parse.extracted}
    assert ("min_age", "elderly") in sources and ("resource_types", "patients") in sources


@pytest.mark.parametrize(
    ("query", "min_age", "max_age"),
    [
        ("patients over 50", 51, None),
        ("at least 40 years old", 40, None),
        ("aged 30 to 45", 30, 45),
        ("children with asthma", None, 17),
        ("under 18", None, 17),
        ("65 and older", 65, None),
        ("young adults with depression", 18, 39),
    ],
)
def test_ages(parser: QueryParser, query: str, min_age: int | None, max_age: int | None) -> None:
    parse = parser.parse(query, now=NOW)
    assert (parse.min_age, parse.max_age) == (min_age, max_age)


def test_sexes_kinds_and_periods(parser: QueryParser) -> None:
    parse = parser.parse("labs for women with CKD in 2024", now=NOW)
    assert parse.genders == ["female"]
    assert parse.resource_types == ["Observation"]
    assert (parse.start_time, parse.end_time) == (
        datetime(2024, 1, 1, tzinfo=UTC),
        datetime(2025, 1, 1, tzinfo=UTC),
    )
    assert [t.match.concept.name for t in parse.terms] == ["Chronic kidney disease"]
    recent = parser.parse("a1c results last 6 months", now=NOW)
    assert recent.start_time is not None and (NOW - recent.start_time).days == 180
    assert [t.match.concept.name for t in recent.terms] == ["Hemoglobin A1c"]


def test_disease_names_are_not_read_as_ages(parser: QueryParser) -> None:
    parse = parser.parse("What are the symptoms of Adult Acute Lymphoblastic Leukemia ?", now=NOW)
    assert (parse.min_age, parse.max_age) == (None, None)


@pytest.mark.parametrize(
    "query",
    [
        "I am a 23 year old woman with high blood pressure, what can I do?",
        "my mother is 80 and has high blood pressure",
        "can children take ibuprofen for high blood pressure",
        "Which patients over 50 have high blood pressure?",
        "elderly patients women men children labs medications visits high blood pressure "
        "diabetes asthma in 2024 and 2025 last month",  # 17 words: longer than a phrase
    ],
)
def test_what_a_person_wrote_is_left_as_written(parser: QueryParser, query: str) -> None:
    parse = parser.parse(query, now=NOW)
    assert parse.as_written
    assert parse.extracted == [] and parse.genders == [] and parse.resource_types == []
    assert (parse.min_age, parse.max_age, parse.start_time) == (None, None, None)
    assert parse.text == parse.expanded_text == query  # no word dropped, none added
    assert "Hypertension" in {t.match.concept.name for t in parse.terms}  # still reported
    span = next(t for t in parse.terms if t.match.concept.name == "Hypertension")
    assert query[span.start : span.end].lower() == "high blood pressure"


def test_a_search_phrase_is_not_as_written(parser: QueryParser) -> None:
    parse = parser.parse("women over 50 with high blood pressure", now=NOW)
    assert not parse.as_written
    assert parse.genders == ["female"] and parse.min_age == 51


def test_short_abbreviations_need_capitals(parser: QueryParser) -> None:
    assert {t.match.concept.name for t in parser.parse("patient with MS and PE").terms} == {
        "Multiple sclerosis",
        "Pulmonary embolism",
    }
    assert parser.parse("please add the ms details").terms == []


def test_a_query_with_nothing_to_extract_keeps_its_text(parser: QueryParser) -> None:
    parse = parser.parse("the")
    assert parse.text == "the" and parse.terms == [] and parse.extracted == []


def test_vocabulary_rows_are_well_formed() -> None:
    vocabulary = shipped()
    assert len(vocabulary.concepts) > 150
    for concept in vocabulary.concepts:
        assert concept.category in {
            "condition",
            "finding",
            "lab",
            "vital",
            "medication",
            "procedure",
        }
        assert concept.codings, concept.name
        for coding in concept.codings:
            assert coding.code.strip() == coding.code and coding.code
        if concept.category in {"lab", "vital"}:
            assert {c.vocabulary for c in concept.codings} == {"LOINC"}, concept.name
        if concept.category == "medication":
            assert {c.vocabulary for c in concept.codings} == {"RxNorm"}, concept.name
