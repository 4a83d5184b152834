"""Building the block a group of near-duplicates merges into.

The merged block keeps the union of the sources' facts and every source's
provenance:

* content: the most informative source (most facts, then longest, then
  newest) as the base, plus every sentence of the other sources that adds a
  fact or words the merged text does not have yet;
* importance and confidence: the highest; tags, participants and related
  memories: the union (sources themselves left out of related_memories);
  context_metadata: merged, the base winning on a key they disagree on;
  event time: the earliest; access counts summed, last access the latest;
* consolidated_from: one MemorySource per source (name, version, content,
  create and event time, creator, importance), followed by the provenance
  the sources themselves carried, so merging merged blocks loses nothing.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from hacs.records.v1 import memory_block_pb2, record_pb2

from services.memory import importance
from services.memory.blocks import MAX_RELATED, MAX_TAGS, utc
from services.memory.contradictions import _same
from services.memory.facts import Fact, extract
from services.memory.text import analyse

_SENTENCE = re.compile(r"(?<=[.;!?])\s+")
NOVEL_WORDS = 2  # a sentence without new facts must add this many new content words


@dataclass(frozen=True)
class Reading:
    """What merging needs of a text: its facts (polarity aside) and content words."""

    facts: list[Fact]
    words: frozenset[str]


def read(text: str) -> Reading:
    analysis = analyse(text)
    facts = [f for f in extract(analysis) if f.kind != "polarity"]
    return Reading(facts, frozenset(analysis.content()))


def _known(fact: Fact, known: list[Fact]) -> bool:
    return any(
        f.kind == fact.kind and f.anchor == fact.anchor and _same(f.value, fact.value)
        for f in known
    )


def merged_content(contents: Sequence[str], readings: Sequence[Reading] | None = None) -> str:
    """The base text plus what the other texts add to it, sentence by sentence.

    readings: each content's reading (stripped), when the caller has them
    already; a one-sentence text is then not analysed again.
    """
    texts = [c.strip() for c in contents]
    if readings is None:
        readings = [read(t) for t in texts]
    base, *others = texts
    text = base
    facts = list(readings[0].facts)
    words = set(readings[0].words)
    for other, whole in zip(others, readings[1:], strict=True):
        sentences = [s.strip() for s in _SENTENCE.split(other)]
        for sentence in sentences:
            if not sentence:
                continue
            reading = whole if sentence == other else read(sentence)
            new_facts = [f for f in reading.facts if not _known(f, facts)]
            new_words = set(reading.words) - words
            if new_facts or len(new_words) >= NOVEL_WORDS:
                text = (
                    f"{text} {sentence}"
                    if text.endswith((".", ";", "!", "?"))
                    else f"{text}. {sentence}"
                )
                facts += new_facts
                words |= new_words
    return text


def _source(record: record_pb2.Record, at: datetime) -> memory_block_pb2.MemorySource:
    block = record.memory_block
    source = memory_block_pb2.MemorySource(
        memory=record.name,
        version=record.version,
        content=block.content,
        importance_score=importance.effective(record, at),
    )
    source.create_time.CopyFrom(record.create_time)
    if block.HasField("event_time"):
        source.event_time.CopyFrom(block.event_time)
    source.created_by.CopyFrom(record.created_by)
    return source


def merge(
    sources: Sequence[record_pb2.Record],
    at: datetime,
    source_readings: Sequence[Reading] | None = None,
) -> record_pb2.Record:
    """The new record (no name yet) that the sources consolidate into.

    source_readings: each source's reading, in order, when the caller has
    analysed the contents already (Consolidate's Comparer has).
    """
    if source_readings is None:
        source_readings = [read(r.memory_block.content.strip()) for r in sources]
    readings = {id(r): reading for r, reading in zip(sources, source_readings, strict=True)}

    def base_order(record: record_pb2.Record) -> tuple[int, int, datetime]:
        content = record.memory_block.content
        return (len(readings[id(record)].facts), len(content), utc(record.create_time))

    ordered = sorted(sources, key=base_order, reverse=True)
    base = ordered[0]
    merged = record_pb2.Record()
    merged.memory_block.CopyFrom(base.memory_block)
    block = merged.memory_block
    for field in ("consolidated_from", "related_memories", "tags", "participants"):
        block.ClearField(field)  # type: ignore[arg-type]
    block.ClearField("superseded_by")
    block.ClearField("vector_id")
    block.content = merged_content(
        [r.memory_block.content for r in ordered], [readings[id(r)] for r in ordered]
    )
    block.importance_score = round(max(importance.effective(r, at) for r in sources), 6)
    block.confidence_score = max(
        r.memory_block.confidence_score if r.memory_block.HasField("confidence_score") else 0.8
        for r in sources
    )
    names = {r.name for r in sources}
    tag_counts = Counter(t for r in ordered for t in r.memory_block.tags)
    block.tags.extend(sorted(tag_counts, key=lambda t: (-tag_counts[t], t))[:MAX_TAGS])
    related = [m for r in ordered for m in r.memory_block.related_memories if m not in names]
    block.related_memories.extend(list(dict.fromkeys(related))[:MAX_RELATED])
    block.participants.extend(
        list(dict.fromkeys(p for r in ordered for p in r.memory_block.participants))
    )
    for record in ordered[1:]:
        for key, value in record.memory_block.context_metadata.fields.items():
            if key not in block.context_metadata.fields:
                block.context_metadata.fields[key].CopyFrom(value)
        for field in ("summary", "location", "knowledge_domain", "source", "evidence_level"):
            if not getattr(block, field) and getattr(record.memory_block, field):
                setattr(block, field, getattr(record.memory_block, field))
    times = [r.memory_block.event_time for r in sources if r.memory_block.HasField("event_time")]
    if times:
        block.event_time.CopyFrom(min(times, key=lambda t: (t.seconds, t.nanos)))
    block.access_count = sum(r.memory_block.access_count for r in sources)
    accessed = [
        r.memory_block.last_accessed for r in sources if r.memory_block.HasField("last_accessed")
    ]
    if accessed:
        block.last_accessed.CopyFrom(max(accessed, key=lambda t: (t.seconds, t.nanos)))
    block.consolidated_from.extend(_source(r, at) for r in ordered)
    block.consolidated_from.extend(s for r in ordered for s in r.memory_block.consolidated_from)
    for record in reversed(ordered):  # the base's labels win
        merged.labels.update(record.labels)
    if base.HasField("agent_meta"):
        merged.agent_meta.CopyFrom(base.agent_meta)
    return merged


def superseded(record: record_pb2.Record, by: str) -> record_pb2.Record:
    record.memory_block.superseded_by = by
    return record
