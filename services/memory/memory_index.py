"""The memory index: one Milvus collection ("memory"), kept in step with the change log.

Why tail the change log rather than write vectors beside each write: memory
blocks are records, and records are also written through RecordService
(CreateRecord, FHIR import). Reading the log catches every write however it
came, in commit order, from a cursor committed only after Milvus accepted
the rows, so a crash replays instead of losing (rows are keyed, upserts are
idempotent). The memory service calls `catch_up` after its own writes and
before every read (Recall, Consolidate, Cluster), so callers read their
writes: no stale recall, and no background task to run.

Rows are content revisions. A live memory has one open row under its
`vector_id` ("{tenant}/{id}"), with `extra.from` (when its content began)
and `extra.to` = 0. When the content changes, or the memory is forgotten or
superseded, the open row is copied to a closed one (`{vector_id}@{from}`,
`extra.to` = when it ended, `extra.end` = why) before the open row is
replaced or removed. So recall `as_of` a past instant searches the rows
valid then, with the vectors of the words as they were. Erasure (a PURGE in
the log, or ErasePatientMemories directly) deletes every row of the memory.
Accesses and importance changes do not touch the index (ranking reads them
from the database), so recall bookkeeping costs no embedding. Lexical
matching does not use Milvus (see lexical.py).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np
from hacs.records.v1 import record_pb2

from services.common.db.base import utcnow
from services.common.db.engine import Database
from services.embedding.embedder import Embedder
from services.memory.blocks import (
    COLLECTION,
    TYPE_NAMES,
    digest,
    embedding_text,
    expire_time,
    index_text,
    memory_id,
    memory_time,
    patient_id,
    utc,
    vector_id,
)
from services.records.store import RecordStore
from services.search.indexer import RECORDS_INDEX, record_pk
from services.search.tables import IndexCursorRow
from services.search.vector_index import Hit, IndexDoc, VectorIndex

KIND = "memory"
CURSOR = "memory"
CHANGES_PER_ROUND = 1000
EMBED_BATCH = 128
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

Provider = Callable[[], Awaitable[Any]]


def _ms(record_time: object) -> int:
    return int(utc(record_time).timestamp() * 1000)


def _meta(record: record_pb2.Record) -> str:
    """What the index filters on, besides the words."""
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


def _content(record: record_pb2.Record) -> str:
    """The words (the vector is a function of the content alone)."""
    return digest(record.memory_block.content, index_text(record.memory_block))


class MemoryIndex:
    def __init__(
        self,
        db: Database,
        vector_index: Callable[[], Awaitable[VectorIndex]],
        embedder: Callable[[], Awaitable[Embedder]],
    ) -> None:
        self._db = db
        self._store = RecordStore(db)
        self._vector_index = vector_index
        self._embedder = embedder
        self._locks: dict[str, asyncio.Lock] = {}

    async def index(self) -> VectorIndex:
        return await self._vector_index()

    async def embed(self, texts: list[str], *, query: bool) -> np.ndarray:
        embedder = await self._embedder()
        return await embedder.embed(texts, query=query)

    # -- keeping in step -------------------------------------------------------

    async def catch_up(self, tenant_id: str) -> int:
        """Apply the tenant's memory changes since the cursor; returns rows written."""
        lock = self._locks.setdefault(tenant_id, asyncio.Lock())
        async with lock:
            written = 0
            while True:
                cursor = await self._cursor(tenant_id)
                async with self._store.transaction(tenant_id) as tx:
                    head = await tx.head_sequence()
                    if cursor >= head:
                        return written
                    changes = await tx.changes(
                        after=cursor, up_to=head, limit=CHANGES_PER_ROUND, collections=[COLLECTION]
                    )
                if changes:
                    ids = list(dict.fromkeys(c.record_id for c in changes))
                    written += await self._apply(tenant_id, ids)
                done = changes[-1].sequence if len(changes) == CHANGES_PER_ROUND else head
                await self._save_cursor(tenant_id, done)

    async def _apply(self, tenant_id: str, ids: list[str]) -> int:
        async with self._store.transaction(tenant_id) as tx:
            current = await tx.get_many([(COLLECTION, i) for i in ids])
        index = await self.index()
        existing = await index.fetch(
            KIND, tenant_id, [vector_id(tenant_id, i) for i in ids], ROW_FIELDS
        )
        upserts: list[IndexDoc] = []
        closed_live: list[str] = []
        erased: list[str] = []
        fresh: list[tuple[record_pb2.Record, int]] = []
        for record_id in ids:
            record = current.get((COLLECTION, record_id))
            pk = vector_id(tenant_id, record_id)
            row = existing.get(pk)
            if record is None:  # purged: every row goes
                erased.append(f"tenants/{tenant_id}/{COLLECTION}/{record_id}")
                continue
            if record.HasField("delete_time"):
                if row is not None:
                    end = "superseded" if record.memory_block.superseded_by else "deleted"
                    upserts.append(_closed(row, _ms(record.delete_time), end))
                    closed_live.append(pk)
                continue
            extra = dict(row["extra"]) if row is not None else {}
            if row is not None and extra.get("content") == _content(record):
                if extra.get("meta") != _meta(record):
                    upserts.append(_document(record, pk, _vector(row), int(extra["from"])))
                continue
            if row is not None:
                upserts.append(_closed(row, _ms(record.update_time), ""))
            fresh.append((record, await self._content_since(tenant_id, record)))
        for start in range(0, len(fresh), EMBED_BATCH):
            batch = fresh[start : start + EMBED_BATCH]
            texts = await asyncio.to_thread(_embedding_texts, [r for r, _ in batch])
            vectors = await self.embed(texts, query=False)
            for (record, since), vector in zip(batch, vectors, strict=True):
                pk = vector_id(tenant_id, memory_id(record.name))
                upserts.append(_document(record, pk, vector, since))
        await index.upsert(KIND, upserts)
        await index.delete(KIND, tenant_id, closed_live)
        if erased:
            await self.erase(tenant_id, erased)
        return len(upserts) + len(closed_live) + len(erased)

    async def _content_since(self, tenant_id: str, record: record_pb2.Record) -> int:
        """When the memory's current words were first written (ms), in its current life."""
        if record.version == 1:
            return _ms(record.create_time)
        async with self._store.transaction(tenant_id) as tx:
            history = await tx.history(
                COLLECTION, memory_id(record.name), before_version=None, limit=200
            )
        since = _ms(record.update_time)
        content = _content(record)
        for version in history:  # newest first
            if version.HasField("delete_time") or _content(version) != content:
                break
            since = _ms(version.update_time)
        return since

    async def _cursor(self, tenant_id: str) -> int:
        async with self._db.transaction(tenant_id) as session:
            row = await session.get(IndexCursorRow, (tenant_id, CURSOR))
        return row.last_sequence if row else 0

    async def _save_cursor(self, tenant_id: str, sequence: int) -> None:
        async with self._db.transaction(tenant_id) as session:
            row = await session.get(IndexCursorRow, (tenant_id, CURSOR), with_for_update=True)
            if row is None:
                session.add(
                    IndexCursorRow(
                        tenant_id=tenant_id,
                        index_name=CURSOR,
                        last_sequence=sequence,
                        update_time=utcnow(),
                    )
                )
            elif sequence > row.last_sequence:
                row.last_sequence = sequence
                row.update_time = utcnow()

    # -- reading ---------------------------------------------------------------

    async def search(self, tenant_id: str, vector: np.ndarray, expr: str, depth: int) -> list[Hit]:
        """Nearest rows by cosine, the search carrying the tenant and the scope."""
        index = await self.index()
        return await index.dense_search(KIND, tenant_id, vector, expr, depth, HIT_FIELDS)

    async def vectors(self, tenant_id: str, pks: Sequence[str]) -> dict[str, np.ndarray]:
        index = await self.index()
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(pks), 1000):
            rows = await index.fetch(
                KIND, tenant_id, list(pks[start : start + 1000]), ["pk", "dense"]
            )
            found.update({pk: _vector(row) for pk, row in rows.items()})
        return found

    async def count_rows(self, tenant_id: str, names: Sequence[str]) -> int:
        if not names:
            return 0
        index = await self.index()
        return await index.count(KIND, tenant_id, f"name in {json.dumps(list(names))}")

    async def erase(self, tenant_id: str, names: Sequence[str]) -> int:
        """Delete every row (open and closed) of these memories; returns how many."""
        if not names:
            return 0
        index = await self.index()
        removed = 0
        for start in range(0, len(names), 500):
            chunk = json.dumps(list(names[start : start + 500]))
            removed += await index.count(KIND, tenant_id, f"name in {chunk}")
            await index.delete_where(KIND, tenant_id, f"name in {chunk}")
        return removed

    async def erase_from_record_index(self, tenant_id: str, names: Sequence[str]) -> int:
        """Delete these memories' rows from the search service's record index.

        The record indexer indexes every record, memories included; it drops
        purged ones when it reads their PURGE entries, but erasure should not
        wait for it.
        """
        index = await self.index()
        exists = await asyncio.to_thread(
            index.client.has_collection, index.collection(RECORDS_INDEX)
        )
        if not exists or not names:
            return 0
        pks = [record_pk(tenant_id, COLLECTION, memory_id(name)) for name in names]
        found = await index.fetch(RECORDS_INDEX, tenant_id, pks, ["pk"])
        await index.delete(RECORDS_INDEX, tenant_id, pks)
        return len(found)


def _embedding_texts(records: list[record_pb2.Record]) -> list[str]:
    return [embedding_text(r.memory_block) for r in records]


def _vector(row: dict[str, Any]) -> np.ndarray:
    return np.asarray(row["dense"], dtype=np.float32)


def _closed(row: dict[str, Any], until_ms: int, end: str) -> IndexDoc:
    extra = dict(row["extra"])
    extra.update(to=until_ms, end=end)
    return IndexDoc(
        pk=f"{row['pk']}@{extra['from']}",
        tenant_id=row["tenant_id"],
        name=row["name"],
        kind=row["kind"],
        text=row["text"],
        vector=_vector(row),
        title=row["title"],
        patient_id=row["patient_id"],
        clinical_time=int(row["clinical_time"]),
        codes=list(row["codes"]),
        labels=dict(row["labels"] or {}),
        version=int(row["version"]),
        group=row["grp"],
        extra=extra,
    )


def _document(record: record_pb2.Record, pk: str, vector: np.ndarray, since: int) -> IndexDoc:
    block = record.memory_block
    expires = expire_time(record)
    name = record.name
    return IndexDoc(
        pk=pk,
        tenant_id=name.split("/")[1],
        name=name,
        kind=TYPE_NAMES.get(block.memory_type, "unspecified"),
        text=index_text(block),
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
            "content": _content(record),
            "meta": _meta(record),
            "expires": int(expires.timestamp()) if expires else 0,
        },
    )
