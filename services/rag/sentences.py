"""Sentence and line units of clinical text, with their character offsets.

Chunks are built from whole units so a passage never starts or ends in the
middle of a sentence (unless one sentence alone is longer than a chunk).
Paragraph breaks, list items, table rows and heading lines always end a
unit; inside a paragraph, a sentence ends at '.', '!' or '?' followed by
space and a capital, digit or bracket — but not after an abbreviation
("e.g.", "Dr.", "et al.") or an initial, and never inside "2.5 mg".
"""

from __future__ import annotations

import re

ABBREVIATIONS = frozenset(
    ("e.g", "i.e", "etc", "vs", "dr", "mr", "mrs", "ms", "prof", "fig", "figs", "no", "approx",
     "st", "al", "ca", "cf", "resp", "incl", "max", "min", "dept", "univ", "jr", "sr", "vol",
     "ed", "eds", "p", "pp")
)  # fmt: skip
_BOUNDARY = re.compile(r"[.!?][\"')\]]*\s+")
_NEW_ITEM = re.compile(r"^\s*([-*+•]\s|\d{1,3}[.)]\s|\|)")
_STARTS_SENTENCE = re.compile(r"[A-Z0-9(\[\"'\u201c\u2018]")

Span = tuple[int, int]


def sentence_spans(
    text: str, start: int = 0, end: int | None = None, standalone: frozenset[int] = frozenset()
) -> list[Span]:
    """Units of text[start:end] as (start, end) offsets into `text`, whitespace trimmed.

    Lines starting at an offset in `standalone` (headings) are units of their own.
    """
    end = len(text) if end is None else end
    spans: list[Span] = []
    for p_start, p_end in _paragraphs(text, start, end, standalone):
        spans.extend(_sentences(text, p_start, p_end))
    return spans


def _paragraphs(text: str, start: int, end: int, standalone: frozenset[int]) -> list[Span]:
    """Blank lines, list items and table rows split paragraphs; soft line wraps do not."""
    paragraphs: list[Span] = []
    current: Span | None = None
    position = start
    for line in text[start:end].split("\n"):
        line_start, line_end = position, position + len(line)
        position = line_end + 1
        if not line.strip() or line_start in standalone:
            if current:
                paragraphs.append(current)
            current = None
            if line.strip():
                paragraphs.append((line_start, line_end))
        elif current is None or _NEW_ITEM.match(line):
            if current:
                paragraphs.append(current)
            current = (line_start, line_end)
        else:
            current = (current[0], line_end)
    if current:
        paragraphs.append(current)
    return [_trimmed(text, s, e) for s, e in paragraphs]


def _sentences(text: str, start: int, end: int) -> list[Span]:
    spans: list[Span] = []
    sentence_start = start
    for match in _BOUNDARY.finditer(text, start, end):
        after = match.end()
        if after >= end or not _STARTS_SENTENCE.match(text[after]):
            continue
        word = text[sentence_start : match.start()].rsplit(None, 1)[-1].lstrip("([\"'")
        if word.lower() in ABBREVIATIONS or (len(word) == 1 and word.isupper()):
            continue
        spans.append(_trimmed(text, sentence_start, after))
        sentence_start = after
    if sentence_start < end:
        spans.append(_trimmed(text, sentence_start, end))
    return [s for s in spans if s[1] > s[0]]


def _trimmed(text: str, start: int, end: int) -> Span:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def without_heading(text: str, start: int, end: int, headings: frozenset[str]) -> int:
    """Where a unit starts once the heading lines glued to its front are skipped."""
    while True:
        newline = text.find("\n", start, end)
        if newline < 0 or text[start:newline].strip() not in headings:
            return start
        start = newline + 1
        while start < end and text[start].isspace():
            start += 1
