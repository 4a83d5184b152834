"""The rows of the memory index: what a memory's vectors are stored with.

A memory's vectors: one for the whole memory in canonical wording (used by
recall, consolidation and clustering) and one per passage (passages.py,
used by recall), for each content revision. The live revision's rows are in
`memory` and `memory_passage`; rows of revisions that ended (content
changed, forgotten, superseded) move to `memory_history` and
`memory_passage_history`. Keeping them apart lets the everyday recall
filter on scalar fields only — Milvus Lite evaluates JSON filters such as
`extra["to"] == 0` row by row in Python, ten times slower — while recall
`as_of` an instant searches both, by `extra.from`/`extra.to`. All carry the
same filter fields, so one scope expression (scope.index_expression)
selects in any of them.

Row keys: the open whole row is the memory's `vector_id` ("{tenant}/{id}"),
its passages "{vector_id}#{k}". A closed row is "{open pk}@{from}".
`extra` holds `from`/`to` (ms; to = 0 while open), `end` (why it closed),
`expires`, the digests `content` and `meta` that tell whether a change
needs new vectors or only new filter fields, and on the whole row `parts`,
the number of passage rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hacs.records.v1 import record_pb2

from services.kernel.retrieval.vector_index import IndexDoc
from services.memory.blocks import (
    TYPE_NAMES,
    digest,
    expire_time,
    index_text,
    memory_time,
    patient_id,
    utc,
)

WHOLE = "memory"
PASSAGE = "memory_passage"
HISTORY = {WHOLE: "memory_history", PASSAGE: "memory_passage_history"}
ALL_KINDS = (WHOLE, PASSAGE, HISTORY[WHOLE], HISTORY[PASSAGE])
ROW_FIELDS = [
    "pk",
    "tenant_id",
    "name",
    "kind",
    "title",
    "text",
    "dense",
    "patient_id",
    "clinical_time",
    "codes",
    "labels",
    "version",
    "grp",
    "extra",
]
HIT_FIELDS = ["pk", "name", "version", "extra"]


def passage_pk(open_pk: str, part: int) -> str:
    return f"{open_pk}#{part}"


def ms(record_time: object) -> int:
    return int(utc(record_time).timestamp() * 1000)


def meta_digest(record: record_pb2.Record) -> str:
    """What the index filters on, besides the words (and the participants passages name)."""
    block = record.memory_block
    expires = expire_time(record)
    return digest(
        block.agent,
        patient_id(block),
        block.memory_type,
        list(block.tags),
        int(memory_time(record).timestamp()),
        sorted(record.labels.items()),
        expires.isoformat() if expires else "",
        block.summary,
    )


def content_digest(record: record_pb2.Record) -> str:
    """The words the vectors are computed from: content, and who passages are led by."""
    block = record.memory_block
    return digest(block.content, index_text(block), list(block.participants))


def vector_of(row: dict[str, Any]) -> np.ndarray:
    return np.asarray(row["dense"], dtype=np.float32)


def closed(row: dict[str, Any], until_ms: int, end: str) -> IndexDoc:
    """A copy of an open row under its closed key, valid until `until_ms`."""
    extra = dict(row["extra"])
    extra.update(to=until_ms, end=end)
    return IndexDoc(
        pk=f"{row['pk']}@{extra['from']}",
        tenant_id=row["tenant_id"],
        name=row["name"],
        kind=row["kind"],
        text=row["text"],
        vector=vector_of(row),
        title=row["title"],
        patient_id=row["patient_id"],
        clinical_time=int(row["clinical_time"]),
        codes=list(row["codes"]),
        labels=dict(row["labels"] or {}),
        version=int(row["version"]),
        group=row["grp"],
        extra=extra,
    )


def whole_row(
    record: record_pb2.Record, pk: str, vector: np.ndarray, since: int, parts: int
) -> IndexDoc:
    doc = _row(record, pk, vector, since, index_text(record.memory_block))
    doc.extra["parts"] = parts
    return doc


def passage_row(
    record: record_pb2.Record, open_pk: str, part: int, text: str, vector: np.ndarray, since: int
) -> IndexDoc:
    doc = _row(record, passage_pk(open_pk, part), vector, since, text)
    doc.extra["part"] = part
    return doc


def _row(record: record_pb2.Record, pk: str, vector: np.ndarray, since: int, text: str) -> IndexDoc:
    block = record.memory_block
    expires = expire_time(record)
    name = record.name
    return IndexDoc(
        pk=pk,
        tenant_id=name.split("/")[1],
        name=name,
        kind=TYPE_NAMES.get(block.memory_type, "unspecified"),
        text=text,
        vector=vector,
        title=block.summary[:500],
        patient_id=patient_id(block)[:64],
        clinical_time=int(memory_time(record).timestamp()),
        codes=[f"tag:{t}" for t in block.tags],
        labels=dict(record.labels),
        version=record.version,
        group=block.agent,
        extra={
            "from": since,
            "to": 0,
            "end": "",
            "content": content_digest(record),
            "meta": meta_digest(record),
            "expires": int(expires.timestamp()) if expires else 0,
        },
    )
