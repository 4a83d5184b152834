"""Snippets: the passage of a hit's text where the query's words are densest, highlighted.

Words are matched as BM25 matched them (services/kernel/retrieval/terms.py: case and
diacritics folded, Porter stems), so "hypertensive" in a query marks
"Hypertension" in the text and a highlight never shows a word BM25 did not
count. Query words that carry no content of their own ("with", "and") are
not highlighted.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.kernel.retrieval.stopwords import QUERY_FILLER
from services.kernel.retrieval.terms import WORD, fold, stems, terms


@dataclass(frozen=True)
class Snippet:
    text: str
    highlights: list[tuple[int, int]]


def snippet(text: str, query: str, length: int = 200) -> Snippet:
    wanted = set(
        terms(" ".join(w for w in WORD.findall(query) if w.casefold() not in QUERY_FILLER))
    )
    matches: list[tuple[int, int]] = []
    if wanted:
        spans = [(m.start(), m.end()) for m in WORD.finditer(text)]
        analysed = stems([fold(text[s:e]) for s, e in spans])
        matches = [span for span, term in zip(spans, analysed, strict=True) if term in wanted]
    start = 0
    if len(text) > length and matches:
        # The window holding the most matches; ties go to the earliest.
        best, end_of_window = -1, 0
        for i, (first, _) in enumerate(matches):
            end_of_window = max(end_of_window, i)
            while end_of_window < len(matches) and matches[end_of_window][1] <= first + length:
                end_of_window += 1
            if end_of_window - i > best:
                best, start = end_of_window - i, max(0, first - length // 6)
        start = _word_start(text, start)
    end = min(len(text), start + length)
    highlights = [(s - start, e - start) for s, e in matches if s >= start and e <= end]
    return Snippet(text[start:end], highlights)


def _word_start(text: str, index: int) -> int:
    while 0 < index < len(text) and text[index - 1].isalnum():
        index -= 1
    return index
