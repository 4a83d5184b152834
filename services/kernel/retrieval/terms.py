"""Words -> index terms, the same way for documents and queries.

Unicode-aware words (letters and digits), case-folded, diacritics removed,
then Porter-stemmed as FTS5's porter tokenizer does ("hypertensive",
"hypertension" -> "hypertens"). No stop words: BM25's IDF already makes a
word found in most documents worth almost nothing, and the index does not
look at documents holding only such words when rarer query words decide the
top k (bm25_index.py).

A document's terms are stored as one compact blob (TERM_DTYPE records:
term id, count in the title, count in the body) so an index of a million
documents loads from SQLite without re-reading any text.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections import Counter

import numpy as np
import Stemmer

WORD = re.compile(r"[^\W_]+")  # a word: letters and digits
# The longest query text Search, RAG and Recall take: a person's message as written,
# subject line and all (a consumer-qa message of 6,727 characters was refused at 4,000).
# The dense side reads the model's window of it; the lexical side its first
# MAX_QUERY_TERMS distinct terms.
MAX_QUERY_CHARS = 10_000
# A bound on one query's work, not a ranking choice: a query of MAX_QUERY_CHARS has
# fewer distinct words. At 64, a person's long message lost the words after its
# 64th distinct one (134 of 303 consumer-qa train questions had more; nDCG@10 0.505 ->
# 0.530 without the cap; docs/search.md).
MAX_QUERY_TERMS = 1024

TERM_DTYPE = np.dtype([("term", "<u4"), ("title", "<u2"), ("body", "<u2")])
_STEMMERS = threading.local()  # a PyStemmer object must not be used by two threads at once
COUNT_MAX = int(np.iinfo(np.uint16).max)  # a count beyond is stored as this


def fold(text: str) -> str:
    """Case-folded, diacritics removed ("Ménière" -> "meniere")."""
    text = text.casefold()
    if not text.isascii():
        decomposed = unicodedata.normalize("NFKD", text)
        text = "".join(c for c in decomposed if not unicodedata.combining(c))
    return text


def words(text: str) -> list[str]:
    """Case-folded words without diacritics ("Ménière's" -> ["meniere", "s"])."""
    return WORD.findall(fold(text))


def stems(folded_words: list[str]) -> list[str]:
    """Each folded word's term. As FTS5's porter tokenizer: words shorter than 3 or longer
    than 64 characters are kept as they are ("as", "is", "s" would otherwise become "a",
    "i", "")."""
    stemmer = getattr(_STEMMERS, "porter", None)
    if stemmer is None:
        stemmer = _STEMMERS.porter = Stemmer.Stemmer("porter")
    stemmed = stemmer.stemWords(folded_words)
    return [
        w if len(w) < 3 or len(w) > 64 else s for w, s in zip(folded_words, stemmed, strict=True)
    ]


def terms(text: str) -> list[str]:
    """Every stemmed term of a text, in order (repeats kept: they are term counts)."""
    return stems(words(text))


def query_terms(text: str) -> list[str]:
    """A query's distinct terms, first occurrence first, at most MAX_QUERY_TERMS."""
    return list(dict.fromkeys(terms(text)))[:MAX_QUERY_TERMS]


def counts(title: str, body: str) -> tuple[dict[str, tuple[int, int]], int]:
    """{term: (count in title, count in body)} and the document's length in terms."""
    title_terms = Counter(terms(title))
    body_terms = Counter(terms(body))
    length = sum(title_terms.values()) + sum(body_terms.values())
    merged = {
        term: (title_terms.get(term, 0), body_terms.get(term, 0))
        for term in title_terms.keys() | body_terms.keys()
    }
    return merged, length


def encode(term_counts: dict[int, tuple[int, int]]) -> bytes:
    """{term id: (title count, body count)} -> blob, sorted by term id."""
    records = np.empty(len(term_counts), dtype=TERM_DTYPE)
    for i, (term_id, (title, body)) in enumerate(sorted(term_counts.items())):
        records[i] = (term_id, min(title, COUNT_MAX), min(body, COUNT_MAX))
    return records.tobytes()


def decode(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype=TERM_DTYPE)
