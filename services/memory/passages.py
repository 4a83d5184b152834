"""A memory's passages: its sentences, each with who was involved, embedded one by one.

Why: one vector for a whole memory averages its sentences, so a memory that
says several things ("Thanks! I got promoted to assistant manager. How are
the kids?") matches a question about any one of them only weakly. Recall
therefore also embeds every sentence — and every bracketed aside such as a
shared photo's caption — on its own, and a memory's semantic score is its
best passage's. Each passage carries the memory's participants as a lead
("Caroline: …"), because a sentence cut from its memory loses who said it,
and questions name people ("What did Caroline research?").

The words are kept as written (not the canonical wording of text.py): the
canonical form drops the punctuation that marks a speaker's turn, which
the embedding model reads; the whole-memory vector keeps the canonical
wording for clinical paraphrase (brands, shorthand, units).
"""

from __future__ import annotations

import re

from hacs.records.v1 import memory_block_pb2

MAX_PASSAGES = 16
MIN_CHARACTERS = 2

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_ASIDE = re.compile(r"\[([^\[\]]*)\]")  # "[shares a photo: …]"


def who(block: memory_block_pb2.MemoryBlock) -> str:
    """The participants as a reader would name them; resource names (ids) are left out."""
    names = [p.strip() for p in block.participants if p.strip() and "/" not in p]
    return ", ".join(dict.fromkeys(names))


def sentences(content: str) -> list[str]:
    """The content's sentences, then its bracketed asides (brackets removed)."""
    asides = [a.strip() for a in _ASIDE.findall(content)]
    body = _ASIDE.sub(" ", content)
    pieces = [s.strip() for s in _SENTENCE_END.split(body)] + asides
    return [p for p in pieces if len(p) >= MIN_CHARACTERS]


def passages(block: memory_block_pb2.MemoryBlock) -> list[str]:
    """What each passage vector is computed from (at least one for any content).

    A passage is led by the participants unless it already starts with
    them (content written as "Name: what they said").
    """
    lead = who(block)
    found: list[str] = []
    for sentence in sentences(block.content)[:MAX_PASSAGES] or [block.content.strip()]:
        if lead and not sentence.lower().startswith(lead.lower()):
            sentence = f"{lead}: {sentence}"
        found.append(sentence)
    return found
