"""Calibrated relevance: P(chunk is relevant to the query), in [0, 1].

`relevance = sigmoid(logit)` where

    logit = B0 + B_DENSE * dense + B_LEXICAL * lexical + B_COVERAGE * coverage
            (+ context_boost, + the cross-encoder's logit when one re-ranks)

* `dense`    cosine similarity of query and chunk embeddings (absolute scale)
* `lexical`  the chunk's BM25 score divided by the best BM25 score among the
             candidates (0 when BM25 did not return it)
* `coverage` the share of the query's content words found in the chunk

The coefficients are a logistic regression fitted by `services/tooling/fit_relevance.py`
on labelled (query, chunk) pairs from the MedQuAD *train* split, with the
shipped all-MiniLM-L6-v2 model and the default chunking, through the same
candidate generation as `Retrieve` (see docs/rag.md for the run, the data
and the reliability table). So, for that model, 0.5 means "as likely
relevant as not" on data like MedQuAD; `min_relevance=0.5` keeps the chunks
more likely relevant than not.

The patient-context boost (`context.py`) and a cross-encoder's score are
added in logit space. They are not fitted (no labelled patient-specific
data exists here), so with a patient context the number is the calibrated
estimate shifted by a documented prior, not a fitted probability.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

# Fitted by `python -m services.tooling.fit_relevance --dataset ../shared/data/medquad
# --queries 800 --distractors 1500 --seed 7` (MedQuAD train, all-MiniLM-L6-v2, SQLite FTS5
# BM25, whose scores the embedded lexical engine reproduces): 70,374 pairs; on the
# held-out 30% of queries the Brier score is 0.0092 and
# min_relevance=0.5 keeps chunks with precision 0.73, recall 0.56. See docs/rag.md.
B0 = -14.1584
B_DENSE = 11.3032
B_LEXICAL = 3.2819
B_COVERAGE = 4.0990

STOPWORDS = frozenset(
    ("a", "an", "and", "are", "as", "at", "be", "by", "can", "do", "does", "for", "from",
     "how", "i", "in", "is", "it", "its", "of", "on", "or", "should", "the", "to", "what",
     "when", "which", "who", "why", "with", "you", "my", "me", "patient", "patients", "be",
     "there", "this", "that", "these", "those", "was", "were", "will", "would", "about", "s")
)  # fmt: skip
_WORD = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class Features:
    dense: float
    lexical: float
    coverage: float


def stem(word: str) -> str:
    """A crude English stem, enough to match 'dosing' with 'dose' and 'kidneys' with 'kidney'."""
    for suffix in ("ing", "ies", "es", "ed", "s"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            word = word[: -len(suffix)]
            break
    return word[:-1] if len(word) > 3 and word.endswith("e") else word


def content_words(text: str) -> set[str]:
    # Each distinct word is stemmed once: Retrieve runs this on every candidate's text.
    return {stem(w) for w in set(_WORD.findall(text.lower())) - STOPWORDS}


def coverage(query_words: set[str], text: str) -> float:
    """Share of the query's content words that appear in `text` (0 for an all-stopword query)."""
    if not query_words:
        return 0.0
    return len(query_words & content_words(text)) / len(query_words)


def base_logit(f: Features) -> float:
    return B0 + B_DENSE * f.dense + B_LEXICAL * f.lexical + B_COVERAGE * f.coverage


def sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)
