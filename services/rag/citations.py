"""Checking an answer's grounding: citations that exist, and claims they support.

The answer is split into sentences (the same splitter as chunking). For each:

* its markers ("[1]", "[2][3]", "[1, 4]") are read; a marker that is not one
  of the retrieved results, or whose chunk no longer exists (its document was
  replaced or deleted meanwhile), is an invalid citation;
* it is a *claim* unless it is about the evidence itself ("the passages do
  not say…"), a question, or too short to state a fact;
* a claim is *supported* when it cites at least one valid chunk whose text
  contains most of its content words (support score: the share of the
  sentence's content words, crude stems, found in the best cited chunk; at
  least 0.5), and every number it states (doses, thresholds) appears in a
  cited chunk. Otherwise it is flagged with the issue.

Lexical support is a deliberate, explainable check, not entailment: a
faithful paraphrase in other words can be flagged, and it cannot tell
"contraindicated" from "not contraindicated". The flags are for review.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from services.rag.relevance import content_words
from services.rag.sentences import sentence_spans, without_heading

MARKER = re.compile(r"\[(\d{1,3}(?:\s*[,;]\s*\d{1,3})*)\]")
LEADING_MARKERS = re.compile(r"(?:\[\d{1,3}(?:\s*[,;]\s*\d{1,3})*\]\s*)+")
NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)?(?![\w])")
SUPPORT_THRESHOLD = 0.5
META = re.compile(
    r"\b(passages?|knowledge base|the sources?|provided (text|context)|retrieved|"
    r"(in)?sufficient evidence|no evidence|not enough evidence|extractive answer|"
    r"language model)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class CitedSource:
    """A retrieved chunk the answer may cite, by its marker number."""

    index: int
    text: str
    exists: bool = True  # still stored now (not replaced since retrieval)
    headings: frozenset[str] = frozenset()  # the chunk's section path


@dataclass
class SentenceCheck:
    text: str
    start: int
    end: int
    citations: list[int] = field(default_factory=list)
    is_claim: bool = False
    supported: bool = True
    support_score: float = 0.0
    issue: str = ""
    best_source: int = 0  # the cited index that supports it best
    quote: str = ""  # the sentence of that chunk that supports it best


@dataclass
class Validation:
    sentences: list[SentenceCheck]
    invalid_citations: list[int]
    cited: list[int]  # valid cited indexes, in order of first use

    @property
    def unsupported(self) -> int:
        return sum(1 for s in self.sentences if s.is_claim and not s.supported)

    @property
    def passed(self) -> bool:
        return not self.invalid_citations and self.unsupported == 0


def validate(answer: str, sources: list[CitedSource]) -> Validation:
    by_index = {s.index: s for s in sources}
    checks: list[SentenceCheck] = []
    invalid: list[int] = []
    cited: list[int] = []
    for start, end in answer_sentences(answer):
        text = answer[start:end]
        check = SentenceCheck(text, start, end, citations=_markers(text))
        bare = MARKER.sub(" ", text)
        check.is_claim = _is_claim(bare)
        problems: list[str] = []
        valid: list[CitedSource] = []
        for index in check.citations:
            source = by_index.get(index)
            if source is None:
                problems.append(f"cites [{index}] which was not retrieved")
            elif not source.exists:
                problems.append(f"cites [{index}] whose chunk no longer exists")
            else:
                valid.append(source)
                cited.append(index)
                continue
            invalid.append(index)
        _support(check, bare, valid, problems)
        check.issue = "; ".join(problems)
        checks.append(check)
    return Validation(checks, list(dict.fromkeys(invalid)), list(dict.fromkeys(cited)))


def answer_sentences(answer: str) -> list[tuple[int, int]]:
    """Sentences of an answer, citation markers kept with the sentence they follow.

    "…below 30. [1] Stop it." puts [1] with the first sentence, as it was meant.
    """
    merged: list[tuple[int, int]] = []
    for start, end in sentence_spans(answer):
        lead = LEADING_MARKERS.match(answer, start, end)
        if lead and merged:
            merged[-1] = (merged[-1][0], start + len(lead.group().rstrip()))
            start = lead.end()
        if start < end:
            merged.append((start, end))
    return merged


def _markers(text: str) -> list[int]:
    found: list[int] = []
    for match in MARKER.finditer(text):
        found.extend(int(n) for n in re.split(r"\s*[,;]\s*", match[1]))
    return list(dict.fromkeys(found))


def _is_claim(text: str) -> bool:
    stripped = text.strip()
    if stripped.endswith("?") or META.search(stripped):
        return False
    return len(content_words(stripped)) >= 3


def _support(
    check: SentenceCheck, text: str, sources: list[CitedSource], problems: list[str]
) -> None:
    words = content_words(text)
    best: tuple[float, CitedSource | None] = (0.0, None)
    for source in sources:
        score = len(words & content_words(source.text)) / len(words) if words else 0.0
        if score > best[0] or best[1] is None:
            best = (score, source)
    check.support_score, best_source = best
    if best_source is not None:
        check.best_source = best_source.index
        check.quote = _best_sentence(best_source, words)
    if not check.is_claim:
        check.supported = True
        return
    if not sources:
        check.supported = False
        if not problems:
            problems.append("no citation")
        return
    numbers = {n.replace(",", ".") for n in NUMBER.findall(text)}
    cited_numbers = {n.replace(",", ".") for s in sources for n in NUMBER.findall(s.text)}
    missing = sorted(numbers - cited_numbers)
    if missing:
        problems.append(f"cited text does not contain {', '.join(missing)}")
    if check.support_score < SUPPORT_THRESHOLD:
        problems.append(f"cited text does not support it (support {check.support_score:.2f})")
    check.supported = not missing and check.support_score >= SUPPORT_THRESHOLD


def _best_sentence(source: CitedSource, words: set[str]) -> str:
    text = source.text
    spans = sentence_spans(text)
    if not spans:
        return text
    start, end = max(spans, key=lambda s: len(words & content_words(text[s[0] : s[1]])))
    return text[without_heading(text, start, end, source.headings) : end]
