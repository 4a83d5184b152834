"""Snippets: the passage of a hit's text where the query's words are densest, highlighted."""

from __future__ import annotations

import re
from dataclasses import dataclass

from services.search.query_parser import FILLER

_WORD = re.compile(r"[A-Za-z0-9]+")


@dataclass(frozen=True)
class Snippet:
    text: str
    highlights: list[tuple[int, int]]


def _stem(word: str) -> str:
    word = word.lower()
    for suffix in ("ies", "es", "s", "ing", "ed"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def snippet(text: str, query: str, length: int = 200) -> Snippet:
    terms = {_stem(w) for w in _WORD.findall(query) if w.lower() not in FILLER and len(w) > 1}
    matches = [(m.start(), m.end()) for m in _WORD.finditer(text) if _stem(m.group(0)) in terms]
    if len(text) <= length or not matches:
        start = 0
    else:
        # The window holding the most matches; ties go to the earliest.
        best, start = -1, 0
        for i, (first, _) in enumerate(matches):
            count = sum(1 for s, e in matches[i:] if e <= first + length)
            if count > best:
                best, start = count, max(0, first - length // 6)
        start = _word_start(text, start)
    end = min(len(text), start + length)
    window = text[start:end]
    highlights = [(s - start, e - start) for s, e in matches if s >= start and e <= end]
    return Snippet(window, highlights)


def _word_start(text: str, index: int) -> int:
    while 0 < index < len(text) and text[index - 1].isalnum():
        index -= 1
    return index
