"""Reading a natural-language query: filters, clinical terms, the text to retrieve with.

"elderly women with diabetes and high blood pressure" becomes: min_age 65,
gender female, resource type Patient, the concepts Diabetes mellitus and
Hypertension (with their SNOMED CT / ICD-10-CM codes, from the shipped
vocabulary), and the retrieval text "diabetes high blood pressure", expanded
for BM25 with the concepts' names and synonyms.

Filters come from small tables of patterns (age groups, age bounds, sexes,
record kinds, periods) applied to the query's words; clinical concepts come
from the vocabulary. Every extraction is reported with the words it came
from, so callers can see what was understood.

Filters are read only from a search phrase. A query that reads as something a
person wrote — a question ("what causes gout?", "can I take ibuprofen"), a
sentence in the first or second person ("my mother is 80 and ..."), or longer
than a search phrase — is left as written: its words describe the asker or the
case, not the records wanted ("I am a 23 year old woman" is not a filter for
women aged 23), and guessing wrong would silently drop every record outside
the guess. Its clinical terms are still reported.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from services.kernel.retrieval.stopwords import QUERY_FILLER
from services.kernel.retrieval.vocabulary import Match, Vocabulary, shipped

_WORD = re.compile(r"[A-Za-z0-9]+(?:['\u2019][A-Za-z]+)?")
# A search phrase ("elderly women with diabetes and high blood pressure in 2024") is short;
# a person's message is not.
PHRASE_WORDS = 16
# Grammar, not vocabulary: the personal pronouns and the words a question opens with.
# (Words are compared with their apostrophes removed: "I'm" is "im". Left out for being
# words of search phrases too: "we're" -> "were", "I'd" -> "id", "us" (ultrasound).)
PERSONAL = frozenset(
    {"i", "im", "ive", "me", "my", "mine", "myself", "we", "our", "ours", "you"}
    | {"youre", "your", "yours", "yourself"}
)
QUESTION_OPENERS = frozenset(
    {"what", "whats", "how", "why", "when", "where", "which", "who", "whom", "whose", "can"}
    | {"could", "should", "would", "will", "is", "are", "am", "was", "were", "do", "does"}
    | {"did", "has", "have", "had", "may", "might", "must"}
)


@dataclass(frozen=True)
class AgeGroup:
    words: tuple[str, ...]
    min_age: int | None
    max_age: int | None


# Plural or unambiguous words only: "Adult Acute Lymphoblastic Leukemia" and
# "childhood asthma" name diseases, not age filters.
AGE_GROUPS = (
    AgeGroup(("elderly", "older adults", "older people", "seniors", "geriatric"), 65, None),
    AgeGroup(("children", "kids", "pediatric", "paediatric"), None, 17),
    AgeGroup(("adolescents", "teenagers", "teens"), 13, 17),
    AgeGroup(("infants", "babies", "newborns"), None, 1),
    AgeGroup(("young adults",), 18, 39),
    AgeGroup(("middle aged", "middle-aged"), 40, 64),
    AgeGroup(("adults",), 18, None),
)
GENDERS = {
    "female": ("women", "woman", "female", "females", "girls", "girl", "ladies", "lady"),
    "male": ("men", "man", "male", "males", "boys", "boy", "gentlemen"),
}
RECORD_KINDS: dict[str, tuple[str, ...]] = {
    "Patient": ("patients", "patient", "people", "persons", "individuals", "cases"),
    "Observation": (
        "labs",
        "lab",
        "lab results",
        "test results",
        "observations",
        "observation",
        "vitals",
        "measurements",
        "readings",
    ),
    "MedicationStatement": ("medications", "medication", "meds", "drugs", "prescriptions"),
    "Condition": ("conditions", "diagnoses", "diagnosis", "problems", "problem list"),
    "Encounter": ("encounters", "visits", "admissions", "appointments"),
    "Procedure": ("procedures", "surgeries", "operations"),
    "AllergyIntolerance": ("allergies", "allergy"),
    "CarePlan": ("care plans", "care plan"),
    "DiagnosticReport": ("reports", "diagnostic reports"),
}
# Numeric age bounds: (pattern, handler(match) -> (min_age, max_age)).
AGE_BOUNDS: tuple[
    tuple[re.Pattern[str], Callable[[re.Match[str]], tuple[int | None, int | None]]], ...
] = (
    (
        re.compile(
            r"\b(?:aged|age|ages|between)\s+(\d{1,3})\s*(?:-|to|and)\s*(\d{1,3})(?:\s*(?:years?|yrs?)(?:\s*old)?)?\b"
        ),
        lambda m: (int(m[1]), int(m[2])),
    ),
    (
        re.compile(r"\b(\d{1,3})\s*(?:-|to)\s*(\d{1,3})\s*(?:years?|yrs?)(?:\s*old)?\b"),
        lambda m: (int(m[1]), int(m[2])),
    ),
    (
        re.compile(
            r"\b(?:over|above|older than|more than|at least)\s+(\d{1,3})"
            r"(?:\s*(?:years?|yrs?)(?:\s*old)?)?\b"
        ),
        lambda m: (int(m[1]) + (0 if "least" in m[0] else 1), None),
    ),
    (
        re.compile(
            r"\b(\d{1,3})\s*(?:\+|years?\s+and\s+(?:older|over|above)|and\s+(?:older|over|above))\b"
        ),
        lambda m: (int(m[1]), None),
    ),
    (
        re.compile(
            r"\b(?:under|below|younger than|less than)\s+(\d{1,3})"
            r"(?:\s*(?:years?|yrs?)(?:\s*old)?)?\b"
        ),
        lambda m: (None, int(m[1]) - 1),
    ),
    (re.compile(r"\b(\d{1,3})\s*(?:years?|yrs?)\s*old\b"), lambda m: (int(m[1]), int(m[1]))),
)
PERIODS: tuple[
    tuple[
        re.Pattern[str],
        Callable[[re.Match[str], datetime], tuple[datetime | None, datetime | None]],
    ],
    ...,
] = (
    (
        re.compile(r"\b(?:last|past|previous)\s+(\d{1,3})\s+(day|week|month|year)s?\b"),
        lambda m, now: (now - _span(int(m[1]), m[2]), None),
    ),
    (
        re.compile(r"\b(?:last|past|previous)\s+(day|week|month|year)\b"),
        lambda m, now: (now - _span(1, m[1]), None),
    ),
    (
        re.compile(r"\b(?:since|after)\s+((?:19|20)\d\d)\b"),
        lambda m, now: (datetime(int(m[1]), 1, 1, tzinfo=UTC), None),
    ),
    (
        re.compile(r"\bbefore\s+((?:19|20)\d\d)\b"),
        lambda m, now: (None, datetime(int(m[1]), 1, 1, tzinfo=UTC)),
    ),
    (
        re.compile(r"\b(?:in|during)\s+((?:19|20)\d\d)\b"),
        lambda m, now: (
            datetime(int(m[1]), 1, 1, tzinfo=UTC),
            datetime(int(m[1]) + 1, 1, 1, tzinfo=UTC),
        ),
    ),
)


def _span(n: int, unit: str) -> timedelta:
    return timedelta(days=n * {"day": 1, "week": 7, "month": 30, "year": 365}[unit])


@dataclass
class Extracted:
    field: str
    value: str
    source_text: str
    start: int
    end: int


@dataclass
class TermFound:
    text: str
    start: int
    end: int
    match: Match


@dataclass
class Parse:
    query: str
    text: str = ""
    expanded_text: str = ""
    min_age: int | None = None
    max_age: int | None = None
    genders: list[str] = field(default_factory=list)
    resource_types: list[str] = field(default_factory=list)
    start_time: datetime | None = None
    end_time: datetime | None = None
    extracted: list[Extracted] = field(default_factory=list)
    terms: list[TermFound] = field(default_factory=list)
    as_written: bool = False  # read as a person's sentence or question: no filters


def reads_as_written(query: str) -> bool:
    """A question, a first- or second-person sentence, or more words than a search phrase."""
    words = [_norm(w) for w in _WORD.findall(query)]
    if not words:
        return False
    return (
        query.rstrip().endswith("?")
        or words[0] in QUESTION_OPENERS
        or len(words) > PHRASE_WORDS
        or any(w in PERSONAL for w in words)
    )


class QueryParser:
    def __init__(self, vocabulary: Vocabulary | None = None) -> None:
        self.vocabulary = vocabulary or shipped()

    def parse(self, query: str, *, now: datetime | None = None) -> Parse:
        now = now or datetime.now(UTC)
        if reads_as_written(query):
            return self._as_written(query)
        result = Parse(query=query)
        lowered = query.lower()
        used = [False] * len(query)  # characters consumed by a filter phrase

        def take(start: int, end: int) -> bool:
            if any(used[start:end]):
                return False
            used[start:end] = [True] * (end - start)
            return True

        for pattern, handler in AGE_BOUNDS:
            for m in pattern.finditer(lowered):
                if take(m.start(), m.end()):
                    low, high = handler(m)
                    self._age(result, low, high, m.group(0), m.start(), m.end())
        for group in AGE_GROUPS:
            for phrase in group.words:
                for m in re.finditer(rf"\b{re.escape(phrase)}\b", lowered):
                    if take(m.start(), m.end()):
                        self._age(
                            result, group.min_age, group.max_age, m.group(0), m.start(), m.end()
                        )
        for gender, words in GENDERS.items():
            for word in words:
                for m in re.finditer(rf"\b{re.escape(word)}\b", lowered):
                    if take(m.start(), m.end()):
                        if gender not in result.genders:
                            result.genders.append(gender)
                        result.extracted.append(
                            Extracted("genders", gender, m.group(0), m.start(), m.end())
                        )
        for kind, words in RECORD_KINDS.items():
            for word in sorted(words, key=len, reverse=True):
                for m in re.finditer(rf"\b{re.escape(word)}\b", lowered):
                    if take(m.start(), m.end()):
                        if kind not in result.resource_types:
                            result.resource_types.append(kind)
                        result.extracted.append(
                            Extracted("resource_types", kind, m.group(0), m.start(), m.end())
                        )
        for pattern, period in PERIODS:
            for m in pattern.finditer(lowered):
                if take(m.start(), m.end()):
                    start, end = period(m, now)
                    if start is not None:
                        result.start_time = start
                        result.extracted.append(
                            Extracted(
                                "start_time", start.isoformat(), m.group(0), m.start(), m.end()
                            )
                        )
                    if end is not None:
                        result.end_time = end
                        result.extracted.append(
                            Extracted("end_time", end.isoformat(), m.group(0), m.start(), m.end())
                        )

        spans = [(m.group(0), m.start(), m.end()) for m in _WORD.finditer(query)]
        free = [w for w in spans if not any(used[w[1] : w[2]])]
        result.terms = self._terms(query, free)
        result.text = (
            " ".join(w[0] for w in free if w[0].lower() not in QUERY_FILLER) or query.strip()
        )
        expansion: list[str] = []
        for term in result.terms:
            concept = term.match.concept
            for phrase in (concept.name, *concept.synonyms[:4]):
                if phrase.lower() not in expansion and phrase.lower() != term.text.lower():
                    expansion.append(phrase.lower())
        result.expanded_text = " ".join([result.text, *expansion])
        return result

    def _as_written(self, query: str) -> Parse:
        """The query as written, with the clinical terms found in it reported."""
        text = query.strip()
        result = Parse(query=query, text=text, expanded_text=text, as_written=True)
        result.terms = self._terms(
            query, [(m[0], m.start(), m.end()) for m in _WORD.finditer(query)]
        )
        return result

    def _terms(self, query: str, spans: list[tuple[str, int, int]]) -> list[TermFound]:
        """The vocabulary's concepts among these words (word, start, end) of the query."""
        found = []
        for match in self.vocabulary.find([_norm(w[0]) for w in spans], [w[0] for w in spans]):
            first, last = spans[match.start], spans[match.end - 1]
            found.append(TermFound(query[first[1] : last[2]], first[1], last[2], match))
        return found

    @staticmethod
    def _age(
        result: Parse, low: int | None, high: int | None, source: str, start: int, end: int
    ) -> None:
        if low is not None:
            result.min_age = low if result.min_age is None else max(result.min_age, low)
            result.extracted.append(Extracted("min_age", str(low), source, start, end))
        if high is not None:
            result.max_age = high if result.max_age is None else min(result.max_age, high)
            result.extracted.append(Extracted("max_age", str(high), source, start, end))


def _norm(word: str) -> str:
    return word.lower().replace("'", "").replace("\u2019", "")
