"""The clinical vocabulary: phrases people type -> coded concepts.

Loaded from `data/clinical_vocabulary.tsv` (see data/README.md). Matching
is by whole tokens, longest phrase first. Short abbreviations ("MS", "PE",
"BP") match only when written in capitals, so "ms" in "ms garcia" or "add"
in "add more" is not read as a diagnosis.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
DATA = Path(__file__).parent / "data" / "clinical_vocabulary.tsv"
_TOKEN = re.compile(r"[a-z0-9]+")


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower().replace("'", "").replace("\u2019", ""))


@dataclass(frozen=True)
class Coding:
    system: str
    code: str
    display: str

    @property
    def vocabulary(self) -> str:
        return {SNOMED: "SNOMED CT", ICD10CM: "ICD-10-CM", LOINC: "LOINC", RXNORM: "RxNorm"}[
            self.system
        ]


@dataclass(frozen=True)
class Concept:
    category: str
    name: str
    codings: tuple[Coding, ...]
    synonyms: tuple[str, ...]


@dataclass(frozen=True)
class Match:
    concept: Concept
    start: int  # token positions in the query
    end: int


@dataclass(frozen=True)
class _Phrase:
    concept: Concept
    capitals_only: bool


class Vocabulary:
    def __init__(self, concepts: list[Concept]) -> None:
        self.concepts = concepts
        self._phrases: dict[tuple[str, ...], _Phrase] = {}
        for concept in concepts:
            for phrase in (concept.name.lower(), *concept.synonyms):
                words = tuple(tokens(phrase))
                if not words or words in self._phrases:
                    continue
                short = (
                    len(words) == 1
                    and len(words[0]) <= 3
                    and not any(ch.isdigit() for ch in words[0])
                )
                self._phrases[words] = _Phrase(concept, capitals_only=short)
        self._longest = max((len(p) for p in self._phrases), default=1)

    def find(self, words: list[str], original: list[str]) -> list[Match]:
        """Concepts in `words` (lower-cased tokens; `original` as typed), longest first."""
        found: list[Match] = []
        i = 0
        while i < len(words):
            for size in range(min(self._longest, len(words) - i), 0, -1):
                phrase = self._phrases.get(tuple(words[i : i + size]))
                if phrase is None:
                    continue
                if phrase.capitals_only and not original[i].isupper():
                    continue
                found.append(Match(phrase.concept, i, i + size))
                i += size
                break
            else:
                i += 1
        return found


def _codings(row: dict[str, str]) -> tuple[Coding, ...]:
    pairs = (
        (SNOMED, row["snomed"]),
        (ICD10CM, row["icd10cm"]),
        (LOINC, row["loinc"]),
        (RXNORM, row["rxnorm"]),
    )
    return tuple(Coding(system, code, row["concept"]) for system, code in pairs if code)


def load(path: Path = DATA) -> Vocabulary:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    concepts = [
        Concept(
            category=row["category"],
            name=row["concept"],
            codings=_codings(row),
            synonyms=tuple(s.strip().lower() for s in row["synonyms"].split("|") if s.strip()),
        )
        for row in rows
    ]
    return Vocabulary(concepts)


@cache
def shipped() -> Vocabulary:
    return load()
