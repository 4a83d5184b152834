"""What the memory service knows about a MemoryBlock record.

Names, types, the time a memory is about, expiry, the patient it concerns,
and how a block offered to `Remember` is made ready to store (server-owned
fields cleared, defaults filled in, tags normalised). Everything here is a
pure function of the record.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from hacs.records.v1 import memory_block_pb2, record_pb2

from services.kernel.records.resource_types import BY_FIELD

MT = memory_block_pb2.MemoryType
INFO = BY_FIELD["memory_block"]
COLLECTION = INFO.collection  # "memoryBlocks"

TYPE_NAMES: dict[int, str] = {
    MT.MEMORY_TYPE_EPISODIC: "episodic",
    MT.MEMORY_TYPE_PROCEDURAL: "procedural",
    MT.MEMORY_TYPE_EXECUTIVE: "executive",
    MT.MEMORY_TYPE_SEMANTIC: "semantic",
    MT.MEMORY_TYPE_WORKING: "working",
}
TYPES_BY_NAME = {name: value for value, name in TYPE_NAMES.items()}

DEFAULT_IMPORTANCE = 0.5  # the HACS library's default
DEFAULT_CONFIDENCE = 0.8
MAX_TAGS = 10
MAX_TAG_LENGTH = 50
MAX_RELATED = 20
MAX_CONTENT = 10_000
MAX_SUMMARY = 500

# MemoryBlock fields only the server writes; a client's values are dropped.
OUTPUT_ONLY = (
    "access_count",
    "last_accessed",
    "vector_id",
    "expire_time",
    "consolidated_from",
    "superseded_by",
)


def memory_id(name: str) -> str:
    return name.rsplit("/", 1)[1]


def vector_id(tenant_id: str, record_id: str) -> str:
    """The id of a memory's live vector: stable for the memory's whole life."""
    return f"{tenant_id}/{record_id}"


def utc(stamp: object) -> datetime:
    from google.protobuf.timestamp_pb2 import Timestamp

    assert isinstance(stamp, Timestamp)
    return stamp.ToDatetime(tzinfo=UTC)


def memory_time(record: record_pb2.Record) -> datetime:
    """When the memory is about: its event time, else when it was stored."""
    block = record.memory_block
    if block.HasField("event_time"):
        return utc(block.event_time)
    return utc(record.create_time)


def patient_id(block: memory_block_pb2.MemoryBlock) -> str:
    """The patient a memory is about: `patient`, else context_metadata["patient_id"]."""
    if block.patient:
        return block.patient.rsplit("/", 1)[1]
    value = block.context_metadata.fields.get("patient_id")
    return value.string_value if value is not None else ""


def expire_time(record: record_pb2.Record) -> datetime | None:
    block = record.memory_block
    if block.memory_type != MT.MEMORY_TYPE_WORKING or not block.HasField("ttl_seconds"):
        return None
    return utc(record.create_time) + timedelta(seconds=block.ttl_seconds)


def is_expired(record: record_pb2.Record, at: datetime) -> bool:
    expires = expire_time(record)
    return expires is not None and expires <= at


def normalise_tags(tags: list[str]) -> list[str]:
    """Lower-cased, trimmed, de-duplicated, in first-seen order."""
    return list(dict.fromkeys(t.strip().lower() for t in tags if t.strip()))


def prepare(
    record: record_pb2.Record, *, agent: str, patient: str, now: datetime
) -> record_pb2.Record:
    """A block offered to Remember, ready to store: server fields set, defaults filled."""
    ready = record_pb2.Record()
    ready.CopyFrom(record)
    block = ready.memory_block
    for field in OUTPUT_ONLY:
        block.ClearField(field)  # type: ignore[arg-type]
    if not block.agent:
        block.agent = agent
    if not block.patient and patient:
        block.patient = patient
    tags = normalise_tags(list(block.tags))
    del block.tags[:]
    block.tags.extend(tags)
    related = list(dict.fromkeys(block.related_memories))
    del block.related_memories[:]
    block.related_memories.extend(related)
    if not block.HasField("importance_score"):
        block.importance_score = DEFAULT_IMPORTANCE
    if not block.HasField("confidence_score"):
        block.confidence_score = DEFAULT_CONFIDENCE
    if block.memory_type == MT.MEMORY_TYPE_WORKING and block.HasField("ttl_seconds"):
        block.expire_time.FromDatetime(now + timedelta(seconds=block.ttl_seconds))
    return ready


def embedding_text(block: memory_block_pb2.MemoryBlock) -> str:
    """What a memory's vector is computed from: what it says, in canonical wording.

    Brand names, clinical shorthand, date formats and dosing frequencies are
    rewritten one way (text.canonical), so paraphrases embed close together
    and a query in other words still meets them.
    """
    from services.memory.text import canonical

    return canonical(block.content)


def index_text(block: memory_block_pb2.MemoryBlock) -> str:
    """What lexical (BM25) matching reads: content, summary and tags."""
    parts = [block.content, block.summary]
    if block.tags:
        parts.append(" ".join(block.tags))
    return "\n".join(p for p in parts if p)


def digest(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:24]
