"""The memory index: two Milvus collections, kept in step with the change log.

Why tail the change log rather than write vectors beside each write: memory
blocks are records, and records are also written through RecordService
(CreateRecord, FHIR import). Reading the log catches every write however it
came, in commit order, from a cursor committed only after Milvus accepted
the rows, so a crash replays instead of losing (rows are keyed, upserts are
idempotent). The memory service calls `catch_up` after its own writes and
before every read (Recall, Consolidate, Cluster), so callers read their
writes: no stale recall, and no background task to run.

Rows are content revisions (index_rows.py): a live memory has one open
whole-memory row under its `vector_id` ("{tenant}/{id}") in `memory`, and
one open row per passage (passages.py) in `memory_passage`, all with
`extra.from` (when its content began) and `extra.to` = 0. When the content
changes, or the memory is forgotten or superseded, the open rows are copied
to closed ones (`…@{from}`, `extra.to` = when it ended, `extra.end` = why)
before they are replaced or removed. So recall `as_of` a past instant searches the rows
valid then, with the vectors of the words as they were. Erasure (a PURGE in
the log, or ErasePatientMemories directly) deletes every row of the memory.
Accesses and importance changes do not touch the index (ranking reads them
from the database), so recall bookkeeping costs no embedding. Lexical
matching does not use Milvus (see lexical.py).

Every row is derived from the records and their stored versions, so
`rebuild` recreates a tenant's rows (live and closed) after a database
restore into an empty Milvus, or a change of embedding model: it replays each
memory's versions through the same code that keeps the index in step.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from hacs.records.v1 import record_pb2

from services.common.db.engine import Database
from services.common.usage_attribution import metered_as
from services.kernel.embedding.embedder import Embedder
from services.kernel.records.names import record_name
from services.kernel.records.store import RecordStore
from services.kernel.retrieval.cursors import IndexCursors
from services.kernel.retrieval.expressions import is_in
from services.kernel.retrieval.vector_index import RECORDS, Hit, IndexDoc, VectorIndex, record_pk
from services.memory.blocks import COLLECTION, INFO, embedding_text, memory_id, vector_id
from services.memory.index_rows import (
    ALL_KINDS,
    HISTORY,
    HIT_FIELDS,
    PASSAGE,
    ROW_FIELDS,
    WHOLE,
    closed,
    content_digest,
    meta_digest,
    ms,
    passage_pk,
    passage_row,
    vector_of,
    whole_row,
)
from services.memory.passages import passages

KIND = WHOLE  # the whole-memory collection (tests and tools name it)
CURSOR = "memory"
CHANGES_PER_ROUND = 1000
EMBED_BATCH = 128
FETCH_BATCH = 1000
REBUILD_BATCH = 500  # memories whose versions a rebuild replays together

Provider = Callable[[], Awaitable[Any]]


@dataclass
class _Batch:
    """What one round of changes does to the two collections."""

    whole: list[IndexDoc] = field(default_factory=list)
    passages: list[IndexDoc] = field(default_factory=list)
    closed_whole: list[IndexDoc] = field(default_factory=list)
    closed_passages: list[IndexDoc] = field(default_factory=list)
    drop_whole: list[str] = field(default_factory=list)
    drop_passages: list[str] = field(default_factory=list)


class MemoryIndex:
    def __init__(
        self,
        db: Database,
        vector_index: Callable[[], Awaitable[VectorIndex]],
        embedder: Callable[[], Awaitable[Embedder]],
    ) -> None:
        self._db = db
        self._store = RecordStore(db)
        self._cursors = IndexCursors(db, CURSOR)
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
                cursor, _ = await self._cursors.read(tenant_id)
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
                await self._cursors.save(tenant_id, done)

    async def _apply(
        self,
        tenant_id: str,
        ids: list[str],
        as_written: Mapping[str, record_pb2.Record] | None = None,
    ) -> int:
        """Bring these memories' rows to their current records (or, replaying, to the
        versions in `as_written`)."""
        if as_written is None:
            async with self._store.transaction(tenant_id) as tx:
                current = await tx.get_many([(COLLECTION, i) for i in ids])
        else:
            current = {(COLLECTION, i): as_written[i] for i in ids}
        index = await self.index()
        existing = await index.fetch(
            WHOLE, tenant_id, [vector_id(tenant_id, i) for i in ids], ROW_FIELDS
        )
        old_passages = await self._fetch_passages(tenant_id, existing.values(), ROW_FIELDS)
        batch = _Batch()
        erased: list[str] = []
        fresh: list[tuple[record_pb2.Record, int]] = []
        for record_id in ids:
            record = current.get((COLLECTION, record_id))
            pk = vector_id(tenant_id, record_id)
            row = existing.get(pk)
            if record is None:  # purged: every row goes
                erased.append(record_name(tenant_id, INFO, record_id))
                continue
            parts = _parts_of(row, old_passages)
            if record.HasField("delete_time"):
                if row is not None:
                    end = "superseded" if record.memory_block.superseded_by else "deleted"
                    until = ms(record.delete_time)
                    batch.closed_whole.append(closed(row, until, end))
                    batch.closed_passages.extend(closed(p, until, end) for p in parts)
                    batch.drop_whole.append(pk)
                    batch.drop_passages.extend(p["pk"] for p in parts)
                continue
            extra = dict(row["extra"]) if row is not None else {}
            if row is not None and extra.get("content") == content_digest(record):
                if extra.get("meta") != meta_digest(record):  # same vectors, new filter fields
                    since = int(extra["from"])
                    batch.whole.append(whole_row(record, pk, vector_of(row), since, len(parts)))
                    batch.passages.extend(
                        passage_row(record, pk, k, p["text"], vector_of(p), since)
                        for k, p in enumerate(parts)
                    )
                continue
            if row is not None:  # new words: the old revision closes
                until = ms(record.update_time)
                batch.closed_whole.append(closed(row, until, ""))
                batch.closed_passages.extend(closed(p, until, "") for p in parts)
                batch.drop_passages.extend(p["pk"] for p in parts)
            fresh.append((record, await self._content_since(tenant_id, record)))
        for start in range(0, len(fresh), EMBED_BATCH):
            await self._embed_rows(tenant_id, fresh[start : start + EMBED_BATCH], batch)
        # Writes first, then drops (a crash in between replays, never loses a
        # revision); a new revision's passages reuse the open keys they overwrite.
        await index.upsert(HISTORY[WHOLE], batch.closed_whole, wait=False)
        await index.upsert(HISTORY[PASSAGE], batch.closed_passages, wait=False)
        await index.upsert(WHOLE, batch.whole, wait=False)
        await index.upsert(PASSAGE, batch.passages, wait=False)
        reused = {doc.pk for doc in batch.passages}
        stale = [pk for pk in batch.drop_passages if pk not in reused]
        await index.delete(WHOLE, tenant_id, batch.drop_whole, wait=False)
        await index.delete(PASSAGE, tenant_id, stale, wait=False)
        # Readable before the caller hears back (Recall right after Remember): one wait
        # per collection written, side by side.
        touched = {
            kind
            for kind, rows in (
                (HISTORY[WHOLE], batch.closed_whole),
                (HISTORY[PASSAGE], batch.closed_passages),
                (WHOLE, batch.whole or batch.drop_whole),
                (PASSAGE, batch.passages or stale),
            )
            if rows
        }
        await asyncio.gather(*(index.until_readable(kind) for kind in sorted(touched)))
        if erased:
            await self.erase(tenant_id, erased)
        written = batch.whole + batch.passages + batch.closed_whole + batch.closed_passages
        return len(written) + len(batch.drop_whole) + len(erased)

    async def _embed_rows(
        self, tenant_id: str, fresh: list[tuple[record_pb2.Record, int]], batch: _Batch
    ) -> None:
        """Vectors for new content: the whole memory (canonical) and each passage."""
        wholes = await asyncio.to_thread(_embedding_texts, [r for r, _ in fresh])
        parts = [passages(r.memory_block) for r, _ in fresh]
        with metered_as(tenant_id):  # index upkeep: counted for the tenant, never refused
            vectors = await self.embed([*wholes, *(p for ps in parts for p in ps)], query=False)
        at = len(wholes)
        for i, ((record, since), texts) in enumerate(zip(fresh, parts, strict=True)):
            pk = vector_id(tenant_id, memory_id(record.name))
            batch.whole.append(whole_row(record, pk, vectors[i], since, len(texts)))
            for k, text in enumerate(texts):
                batch.passages.append(passage_row(record, pk, k, text, vectors[at], since))
                at += 1

    async def _fetch_passages(
        self, tenant_id: str, rows: Any, fields: list[str]
    ) -> dict[str, dict[str, Any]]:
        """The open passage rows of these open whole rows, by key."""
        index = await self.index()
        pks = [
            passage_pk(row["pk"], k)
            for row in rows
            for k in range(int(dict(row["extra"]).get("parts", 0)))
        ]
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(pks), FETCH_BATCH):
            found.update(
                await index.fetch(PASSAGE, tenant_id, pks[start : start + FETCH_BATCH], fields)
            )
        return found

    async def _content_since(self, tenant_id: str, record: record_pb2.Record) -> int:
        """When the memory's current words were first written (ms), in its current life."""
        if record.version == 1:
            return ms(record.create_time)
        async with self._store.transaction(tenant_id) as tx:
            history = await tx.history(
                COLLECTION, memory_id(record.name), before_version=record.version + 1, limit=200
            )
        since = ms(record.update_time)
        content = content_digest(record)
        for version in history:  # newest first
            if version.HasField("delete_time") or content_digest(version) != content:
                break
            since = ms(version.update_time)
        return since

    # -- rebuilding --------------------------------------------------------------

    async def rebuild(self, tenant_id: str) -> tuple[int, int]:
        """Recreate the tenant's rows from the records; returns (memories, rows written).

        Every row of the tenant goes first. Then each memory's stored versions are
        replayed in order through `_apply` — only those that change its words, its
        filter fields or whether it is live — so the live rows come back with the time
        their words began, and the closed rows (recall `as_of`, superseded memories)
        with when and why they ended. Erased memories have no versions left, so nothing
        of them returns. The cursor moves to the head read at the start: what is
        written meanwhile is applied by the next catch-up.
        """
        lock = self._locks.setdefault(tenant_id, asyncio.Lock())
        async with lock:
            async with self._store.transaction(tenant_id) as tx:
                head = await tx.head_sequence()
            index = await self.index()
            for kind in ALL_KINDS:
                await index.delete_where(kind, tenant_id, "")
            memories = written = 0
            versions: dict[str, list[record_pb2.Record]] = {}
            after: tuple[str, int] | None = None
            while True:
                async with self._store.transaction(tenant_id) as tx:
                    page = await tx.version_bodies(COLLECTION, after=after, limit=FETCH_BATCH)
                for record_id, _, record in page:
                    kept = versions.setdefault(record_id, [])
                    if not kept or _changes_rows(kept[-1], record):
                        kept.append(record)
                # The last memory of a full page may go on in the next one.
                unfinished = page[-1][0] if len(page) == FETCH_BATCH else None
                ready = {i: v for i, v in versions.items() if i != unfinished}
                if len(ready) >= REBUILD_BATCH or unfinished is None:
                    written += await self._replay(tenant_id, ready)
                    memories += len(ready)
                    versions = {i: v for i, v in versions.items() if i == unfinished}
                if unfinished is None:
                    break
                after = (page[-1][0], page[-1][1])
            await self._cursors.save(tenant_id, head, only_forward=False)
        return memories, written

    async def _replay(self, tenant_id: str, versions: dict[str, list[record_pb2.Record]]) -> int:
        """Apply every memory's first kept version, then every second one, and so on."""
        written = 0
        for step in range(max((len(v) for v in versions.values()), default=0)):
            as_written = {i: v[step] for i, v in versions.items() if len(v) > step}
            written += await self._apply(tenant_id, list(as_written), as_written)
        return written

    # -- reading ---------------------------------------------------------------

    async def search(
        self,
        kind: str,
        tenant_id: str,
        vector: np.ndarray,
        scope_expr: str,
        depth: int,
        *,
        as_of: datetime | None = None,
        include_superseded: bool = False,
    ) -> list[Hit]:
        """Nearest rows of `kind` (WHOLE or PASSAGE) by cosine, best first: the live
        revisions, or those valid at `as_of`; superseded memories' last ones on request."""
        index = await self.index()
        searches = [(kind, _and(scope_expr, _opened_by(as_of)))]
        ended = _ended(as_of, include_superseded)
        if ended:
            searches.append((HISTORY[kind], _and(scope_expr, ended)))
        found = await asyncio.gather(
            *(
                index.dense_search(k, tenant_id, vector, expr, depth, HIT_FIELDS)
                for k, expr in searches
            )
        )
        return sorted((hit for hits in found for hit in hits), key=lambda h: -h.score)[:depth]

    async def vectors(self, tenant_id: str, pks: Sequence[str]) -> dict[str, np.ndarray]:
        """The whole-memory vectors of these open rows."""
        index = await self.index()
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(pks), FETCH_BATCH):
            rows = await index.fetch(
                WHOLE, tenant_id, list(pks[start : start + FETCH_BATCH]), ["pk", "dense"]
            )
            found.update({pk: vector_of(row) for pk, row in rows.items()})
        return found

    async def passage_vectors(
        self, tenant_id: str, pks: Sequence[str]
    ) -> dict[str, list[np.ndarray]]:
        """The passage vectors of these open whole rows, by whole-row key."""
        index = await self.index()
        wholes: dict[str, dict[str, Any]] = {}
        for start in range(0, len(pks), FETCH_BATCH):
            chunk = list(pks[start : start + FETCH_BATCH])
            wholes.update(await index.fetch(WHOLE, tenant_id, chunk, ["pk", "extra"]))
        rows = await self._fetch_passages(tenant_id, wholes.values(), ["pk", "dense"])
        return {
            pk: [
                vector_of(rows[passage_pk(pk, k)])
                for k in range(int(dict(whole["extra"]).get("parts", 0)))
                if passage_pk(pk, k) in rows
            ]
            for pk, whole in wholes.items()
        }

    async def count_rows(self, tenant_id: str, names: Sequence[str]) -> int:
        """Rows of these memories in every collection, open and closed."""
        if not names:
            return 0
        index = await self.index()
        expr = is_in("name", names)
        return sum([await index.count(kind, tenant_id, expr) for kind in ALL_KINDS])

    async def erase(self, tenant_id: str, names: Sequence[str]) -> int:
        """Delete every row (open and closed, every collection) of these memories."""
        if not names:
            return 0
        index = await self.index()
        removed = 0
        for start in range(0, len(names), 500):
            expr = is_in("name", names[start : start + 500])
            for kind in ALL_KINDS:
                removed += await index.count(kind, tenant_id, expr)
                await index.delete_where(kind, tenant_id, expr)
        return removed

    async def erase_from_record_index(self, tenant_id: str, names: Sequence[str]) -> int:
        """Delete these memories' rows from the search service's record index.

        The record indexer indexes every record, memories included; it drops
        purged ones when it reads their PURGE entries, but erasure should not
        wait for it.
        """
        index = await self.index()
        exists = await index.call(index.client.has_collection, index.collection(RECORDS))
        if not exists or not names:
            return 0
        pks = [record_pk(tenant_id, COLLECTION, memory_id(name)) for name in names]
        found = await index.fetch(RECORDS, tenant_id, pks, ["pk"])
        await index.delete(RECORDS, tenant_id, pks)
        return len(found)


def _changes_rows(before: record_pb2.Record, after: record_pb2.Record) -> bool:
    """Whether `after` (the next version of `before`) changes what the index holds."""
    deleted = after.HasField("delete_time")
    if deleted != before.HasField("delete_time"):
        return True
    return not deleted and (
        content_digest(after) != content_digest(before) or meta_digest(after) != meta_digest(before)
    )


def _embedding_texts(records: list[record_pb2.Record]) -> list[str]:
    return [embedding_text(r.memory_block) for r in records]


def _and(*parts: str) -> str:
    return " and ".join(p for p in parts if p)


def _opened_by(as_of: datetime | None) -> str:
    """Live rows whose words were there at `as_of` (all live rows without it)."""
    return "" if as_of is None else f'extra["from"] <= {_ms_of(as_of)}'


def _ended(as_of: datetime | None, include_superseded: bool) -> str:
    """History rows that count: valid at `as_of`, or a superseded memory's last words."""
    superseded = 'extra["end"] == "superseded"' if include_superseded else ""
    if as_of is None:
        return superseded
    at = _ms_of(as_of)
    still = f'extra["to"] > {at}'
    return f'extra["from"] <= {at} and ' + (f"({still} or {superseded})" if superseded else still)


def _ms_of(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def _parts_of(
    row: dict[str, Any] | None, passages_by_pk: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """The open passage rows of an open whole row, in order."""
    if row is None:
        return []
    count = int(dict(row["extra"]).get("parts", 0))
    keys = [passage_pk(row["pk"], k) for k in range(count)]
    return [passages_by_pk[k] for k in keys if k in passages_by_pk]
