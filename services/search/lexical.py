"""The lexical (BM25) retriever, behind one small interface, two engines.

* `MilvusLexical`: Milvus's own BM25 function and sparse index, in the same
  collection as the dense vectors. Used with a Milvus server (2.5 or later),
  where the sparse inverted index is fast and shared by every replica.
* `Fts5Lexical`: SQLite FTS5 (real BM25, Porter stemming) in a file beside
  Milvus Lite. Milvus Lite scans sparse vectors without an index — about
  0.6 s per query at 15,000 documents on this hardware, growing linearly — so
  the embedded mode keeps its lexical index in FTS5, which answers in
  milliseconds at a million documents.

Both filter with the same FilterSpec, and both always filter by tenant.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import threading
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Protocol

from services.search.expressions import (
    FilterSpec,
    code_key,
    knowledge_expression,
    records_expression,
    years_before,
)
from services.search.vector_index import Hit, IndexDoc, VectorIndex

_TOKEN = re.compile(r"[A-Za-z0-9]+")
MAX_QUERY_TERMS = 64


class LexicalIndex(Protocol):
    name: str

    async def upsert(self, kind: str, docs: Sequence[IndexDoc]) -> None: ...

    async def delete(self, kind: str, tenant_id: str, pks: Sequence[str]) -> None: ...

    async def delete_all(self, kind: str, tenant_id: str, types: Sequence[str] = ()) -> None: ...

    async def search(
        self, kind: str, tenant_id: str, text: str, spec: FilterSpec, limit: int
    ) -> list[Hit]: ...


def expression(kind: str, spec: FilterSpec) -> str:
    return knowledge_expression(spec) if kind == "knowledge" else records_expression(spec)


class MilvusLexical:
    """BM25 inside the Milvus collection (the BM25 function fills the sparse field on insert)."""

    name = "milvus"

    def __init__(self, index: VectorIndex, fields: list[str]) -> None:
        self._index = index
        self._fields = fields

    async def upsert(self, kind: str, docs: Sequence[IndexDoc]) -> None:
        """Nothing to do: the text is in the collection, Milvus derives the sparse vector."""

    async def delete(self, kind: str, tenant_id: str, pks: Sequence[str]) -> None:
        """Nothing to do: deleting the Milvus row deletes its sparse vector."""

    async def delete_all(self, kind: str, tenant_id: str, types: Sequence[str] = ()) -> None:
        """Nothing to do (see delete)."""

    async def search(
        self, kind: str, tenant_id: str, text: str, spec: FilterSpec, limit: int
    ) -> list[Hit]:
        return await self._index.lexical_search(
            kind, tenant_id, text, expression(kind, spec), limit, self._fields
        )


_SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    pk TEXT NOT NULL UNIQUE,
    tenant_id TEXT NOT NULL,
    name TEXT NOT NULL,
    type TEXT NOT NULL,
    title TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    birth_ymd INTEGER NOT NULL,
    gender TEXT NOT NULL,
    clinical_time INTEGER NOT NULL,
    codes TEXT NOT NULL,
    labels TEXT NOT NULL,
    grp TEXT NOT NULL,
    extra TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS docs_scope ON docs (tenant_id, kind, type);
CREATE INDEX IF NOT EXISTS docs_patient ON docs (tenant_id, patient_id);
"""

# The full-text table: the title (a record's display name, a document's title)
# as its own column so BM25 can weigh it above the body.
_FTS = """
CREATE VIRTUAL TABLE IF NOT EXISTS {name}
    USING fts5 (title, text, tokenize = 'porter unicode61 remove_diacritics 2')
"""

LAYOUT_VERSION = 2  # PRAGMA user_version; 1 = single-column fts (before titles were weighed)

# BM25 weight of a title match relative to a body match, per kind. Tuned on the
# MedQuAD *train* split (scripts/tune_search_fusion.py; docs/search.md): the
# lexical row rose 0.617 -> 0.662 nDCG@10 and hybrid 0.770 -> 0.783 at 5, with
# gains flattening above it. Knowledge chunks keep 1: their text already opens
# with a context header naming the document, and RAG's relevance model
# (services/rag/relevance.py) is calibrated on those scores.
TITLE_WEIGHTS = {"records": 5.0, "knowledge": 1.0}


_UPSERT_DOC = """
INSERT INTO docs (kind, pk, tenant_id, name, type, title, patient_id, birth_ymd, gender,
                  clinical_time, codes, labels, grp, extra)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (pk) DO UPDATE SET
    kind = excluded.kind, tenant_id = excluded.tenant_id, name = excluded.name,
    type = excluded.type, title = excluded.title, patient_id = excluded.patient_id,
    birth_ymd = excluded.birth_ymd, gender = excluded.gender,
    clinical_time = excluded.clinical_time, codes = excluded.codes,
    labels = excluded.labels, grp = excluded.grp, extra = excluded.extra
RETURNING id
"""


def fts_query(text: str) -> str:
    """Any of the query's words (BM25 weighs them), each quoted so no word is FTS syntax."""
    words = list(dict.fromkeys(w.lower() for w in _TOKEN.findall(text)))[:MAX_QUERY_TERMS]
    return " OR ".join(f'"{w}"' for w in words)


class Fts5Lexical:
    """BM25 over SQLite FTS5: one writer connection, a few readers (WAL lets them run together)."""

    name = "sqlite-fts5"

    def __init__(self, path: Path, readers: int = 4) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._writer = self._connect()
        self._writer.executescript(_SCHEMA)
        _migrate(self._writer)
        self._write_lock = threading.Lock()
        self._readers = [self._connect() for _ in range(readers)]
        self._free: asyncio.Queue[sqlite3.Connection] = asyncio.Queue()
        for reader in self._readers:
            self._free.put_nowait(reader)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=10000")
        return conn

    def close(self) -> None:
        for conn in (self._writer, *self._readers):
            conn.close()

    # -- writes ------------------------------------------------------------------

    async def upsert(self, kind: str, docs: Sequence[IndexDoc]) -> None:
        if docs:
            await asyncio.to_thread(self._upsert, kind, list(docs))

    def _upsert(self, kind: str, docs: list[IndexDoc]) -> None:
        with self._write_lock:
            cur = self._writer.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                for d in docs:
                    row = (
                        kind,
                        d.pk,
                        d.tenant_id,
                        d.name,
                        d.kind,
                        d.title,
                        d.patient_id,
                        d.birth_ymd,
                        d.gender,
                        d.clinical_time,
                        json.dumps(d.codes),
                        json.dumps(d.labels),
                        d.group,
                        json.dumps(d.extra),
                    )
                    cur.execute(
                        _UPSERT_DOC,
                        row,
                    )
                    (doc_id,) = cur.fetchone()
                    cur.execute("DELETE FROM fts WHERE rowid = ?", (doc_id,))
                    cur.execute(
                        "INSERT INTO fts (rowid, title, text) VALUES (?, ?, ?)",
                        (doc_id, d.title, d.text),
                    )
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise

    async def delete(self, kind: str, tenant_id: str, pks: Sequence[str]) -> None:
        if pks:
            await asyncio.to_thread(
                self._delete_where,
                "tenant_id = ? AND kind = ? AND pk IN (SELECT value FROM json_each(?))",
                (tenant_id, kind, json.dumps(list(pks))),
            )

    async def delete_all(self, kind: str, tenant_id: str, types: Sequence[str] = ()) -> None:
        if types:
            await asyncio.to_thread(
                self._delete_where,
                "tenant_id = ? AND kind = ? AND type IN (SELECT value FROM json_each(?))",
                (tenant_id, kind, json.dumps(list(types))),
            )
        else:
            await asyncio.to_thread(
                self._delete_where, "tenant_id = ? AND kind = ?", (tenant_id, kind)
            )

    def _delete_where(self, where: str, params: tuple[Any, ...]) -> None:
        with self._write_lock:
            cur = self._writer.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                cur.execute(
                    f"DELETE FROM fts WHERE rowid IN (SELECT id FROM docs WHERE {where})", params
                )
                cur.execute(f"DELETE FROM docs WHERE {where}", params)
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise

    # -- reads -------------------------------------------------------------------

    async def search(
        self, kind: str, tenant_id: str, text: str, spec: FilterSpec, limit: int
    ) -> list[Hit]:
        query = fts_query(text)
        if not query:
            return []
        where, params = _filters(spec, kind)
        sql = f"""
            SELECT d.pk, d.name, d.type, d.title, d.patient_id, d.grp, d.extra, fts.text,
                   bm25(fts, ?, 1.0) AS score
            FROM fts JOIN docs AS d ON d.id = fts.rowid
            WHERE fts MATCH ? AND d.tenant_id = ? AND d.kind = ? {where}
            ORDER BY score LIMIT ?"""
        weight = TITLE_WEIGHTS.get(kind, 1.0)
        conn = await self._free.get()
        try:
            # execute() already runs the query (the MATCH and the sort), so it runs in the
            # thread too, not only the fetch: the event loop never waits on SQLite.
            rows = await asyncio.to_thread(
                lambda: conn.execute(
                    sql, (weight, query, tenant_id, kind, *params, limit)
                ).fetchall()
            )
        finally:
            self._free.put_nowait(conn)
        # FTS5's bm25() is negated (lower is better); the score is its magnitude.
        return [
            Hit(
                pk,
                -float(score),
                {
                    "pk": pk,
                    "name": name,
                    "kind": kind_,
                    "title": title,
                    "patient_id": patient,
                    "grp": grp,
                    "extra": json.loads(extra),
                    "text": body,
                },
            )
            for pk, name, kind_, title, patient, grp, extra, body, score in rows
        ]

    async def count(self, kind: str, tenant_id: str) -> int:
        conn = await self._free.get()
        try:
            row = await asyncio.to_thread(
                lambda: conn.execute(
                    "SELECT count(*) FROM docs WHERE tenant_id = ? AND kind = ?", (tenant_id, kind)
                ).fetchone()
            )
        finally:
            self._free.put_nowait(conn)
        return int(row[0])


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring a lexical.db to LAYOUT_VERSION in place; nothing is re-embedded or lost.

    Version 1 kept one fts column (the text, whose first line is usually the
    title); version 2 adds the title column, filled from the docs table.
    """
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    columns = [row[1] for row in conn.execute("PRAGMA table_info(fts)")]
    if columns == ["title", "text"] or not columns:
        if not columns:
            conn.execute(_FTS.format(name="fts"))
        if version != LAYOUT_VERSION:
            conn.execute(f"PRAGMA user_version = {LAYOUT_VERSION}")
        return
    if columns != ["text"]:
        raise RuntimeError(
            f"lexical index has an unknown layout (fts columns {columns}); move the file "
            "aside and run `hacs index backfill` to rebuild it"
        )
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("DROP TABLE IF EXISTS fts_v2")
        conn.execute(_FTS.format(name="fts_v2"))
        conn.execute(
            "INSERT INTO fts_v2 (rowid, title, text) "
            "SELECT f.rowid, d.title, f.text FROM fts AS f JOIN docs AS d ON d.id = f.rowid"
        )
        conn.execute("DROP TABLE fts")
        conn.execute("ALTER TABLE fts_v2 RENAME TO fts")
        conn.execute(f"PRAGMA user_version = {LAYOUT_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _filters(spec: FilterSpec, kind: str, today: date | None = None) -> tuple[str, list[Any]]:
    """The FilterSpec as SQL over `docs AS d` (values are always bound parameters)."""
    today = today or datetime.now(UTC).date()
    parts: list[str] = []
    params: list[Any] = []

    def any_of(column: str, values: Sequence[Any]) -> None:
        parts.append(f"{column} IN (SELECT value FROM json_each(?))")
        params.append(json.dumps(list(values)))

    if kind == "knowledge":
        if spec.groups:
            any_of("d.grp", spec.groups)
        if spec.document_tags:
            for tag in spec.document_tags:
                parts.append("EXISTS (SELECT 1 FROM json_each(d.codes) WHERE value = ?)")
                params.append(f"tag:{tag}")
        return "".join(f" AND {p}" for p in parts), params
    if spec.kinds:
        any_of("d.type", spec.kinds)
    if spec.patient_ids:
        any_of("d.patient_id", spec.patient_ids)
    if spec.min_age is not None:
        parts.append("d.birth_ymd >= 0 AND d.birth_ymd <= ?")
        params.append(years_before(today, spec.min_age))
    if spec.max_age is not None:
        parts.append("d.birth_ymd > ?")
        params.append(years_before(today, spec.max_age + 1))
    if spec.genders:
        any_of("d.gender", spec.genders)
    if spec.codes:
        parts.append(
            "EXISTS (SELECT 1 FROM json_each(d.codes) AS c "
            "WHERE c.value IN (SELECT value FROM json_each(?)))"
        )
        params.append(json.dumps([code_key(c) for c in spec.codes]))
    if spec.start_time is not None:
        parts.append("d.clinical_time >= ?")
        params.append(int(spec.start_time.timestamp()))
    if spec.end_time is not None:
        parts.append("d.clinical_time < ?")
        params.append(int(spec.end_time.timestamp()))
    for key, value in sorted(spec.labels.items()):
        if value:
            parts.append("json_extract(d.labels, ?) = ?")
            params += [f'$."{key}"', value]
        else:
            parts.append("json_type(d.labels, ?) IS NOT NULL")
            params.append(f'$."{key}"')
    return "".join(f" AND {p}" for p in parts), params
