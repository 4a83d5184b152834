"""The answer without a language model: the best supporting sentences, quoted and cited.

Used when no provider is configured or every provider failed (and the
caller allows it). Nothing is generated: each sentence is copied verbatim
from a retrieved chunk and followed by its marker, after one opening
sentence that says the answer is extractive. Sentences are scored by the
share of the question's content words they contain, weighted by their
chunk's relevance (patient context included), so a renal-dosing sentence
is preferred for a patient with CKD when its chunk ranked higher. Chunks
less than half as relevant as the best one are not quoted.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.rag.relevance import content_words
from services.rag.sentences import sentence_spans, without_heading

MAX_SENTENCES = 4
MAX_PER_CHUNK = 2
RELATIVE_FLOOR = 0.5
INTRO = (
    "Extractive answer (no language model was used): these are the most relevant sentences "
    "of the knowledge base, quoted verbatim."
)


@dataclass(frozen=True)
class Passage:
    index: int  # citation marker
    text: str
    relevance: float
    headings: frozenset[str] = frozenset()  # the chunk's section path


def extractive_answer(question: str, passages: list[Passage]) -> list[str]:
    """The answer as sentences (the intro first), each quote ending with its marker."""
    words = content_words(question)
    scored: list[tuple[float, int, int, str]] = []
    best = max((p.relevance for p in passages), default=0.0)
    for passage in passages:
        if passage.relevance < RELATIVE_FLOOR * best:  # much weaker than the best: not quoted
            continue
        for position, (start, end) in enumerate(sentence_spans(passage.text)):
            text = passage.text[without_heading(passage.text, start, end, passage.headings) : end]
            sentence = " ".join(text.split())  # soft line wraps read as spaces
            own = content_words(sentence)
            if len(own) < 3 or sentence[-1] not in ".!?":  # titles and fragments state nothing
                continue
            overlap = len(words & own) / len(words) if words else 0.0
            score = passage.relevance * (0.25 + overlap)
            scored.append((score, passage.index, position, sentence))
    scored.sort(key=lambda s: (-s[0], s[1], s[2]))
    chosen: list[tuple[int, int, str]] = []
    per_chunk: dict[int, int] = {}
    for score, index, position, sentence in scored:
        if score <= 0 or per_chunk.get(index, 0) >= MAX_PER_CHUNK:
            continue
        per_chunk[index] = per_chunk.get(index, 0) + 1
        chosen.append((index, position, sentence))
        if len(chosen) == MAX_SENTENCES:
            break
    # Best chunk first; within a chunk, the document's own order reads better.
    order = {index: rank for rank, index in enumerate(dict.fromkeys(i for i, _, _ in chosen))}
    chosen.sort(key=lambda c: (order[c[0]], c[1]))
    return [INTRO] + [_cited(sentence, index) for index, _, sentence in chosen]


def _cited(sentence: str, index: int) -> str:
    """'… per day.' -> '… per day [2].' (the marker inside the sentence it supports)."""
    body = sentence.rstrip()
    if body and body[-1] in ".!?":
        return f"{body[:-1]} [{index}]{body[-1]}"
    return f"{body} [{index}]."
