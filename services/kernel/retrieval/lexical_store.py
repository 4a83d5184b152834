"""The embedded lexical engine: documents in SQLite, BM25 scored in memory.

SQLite (lexical.db beside Milvus Lite, or beside the Milvus client of a
server without BM25) is the durable store: each document's filter fields,
text, length and terms (an id blob, services/kernel/retrieval/terms.py), plus a change
sequence. Each process keeps an in-memory BM25 index per (tenant, kind)
(bm25_index.py), built from SQLite when the process starts (`preload`) or on
that pair's first search, and brought up to date before every search from
the documents and tombstones written since its cursor, so several processes
(the search service, RAG ingest, a backfill) can write the same file and
every reader sees each committed write on its next search.

Scalar filters (type, patient, age, gender, dates, knowledge base) are
evaluated in numpy over fields kept beside each document's postings
(slot_filters.py): one mask, and the index returns the exact best documents
among those allowed. List-valued filters (codes, labels, document tags) are
SQL over the docs table: the best-scoring documents are checked against
them, a few rounds deep; a very selective one instead names the documents
allowed and the index scores only those.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from services.kernel.retrieval.bm25_index import TermIndex, TopK
from services.kernel.retrieval.expressions import FilterSpec
from services.kernel.retrieval.lexical_filters import sql_filters
from services.kernel.retrieval.rwlock import ReadWriteLock
from services.kernel.retrieval.slot_filters import (
    FILTER_COLUMNS,
    FILTER_DTYPE,
    Interned,
    payload,
    scalar_mask,
)
from services.kernel.retrieval.terms import TERM_DTYPE, counts, decode, encode, query_terms
from services.kernel.retrieval.vector_index import Hit, IndexDoc

log = logging.getLogger(__name__)
T = TypeVar("T")

LAYOUT_VERSION = 3  # PRAGMA user_version; 1-2 kept the text in an FTS5 table
TOMBSTONE_WRITES_KEPT = 100_000  # tombstones of the last N write transactions are kept; an
# index further behind than that rebuilds instead of catching up
BUILD_CHUNK = 50_000  # rows read at a time when an index is built
FILTER_ROUNDS = (4, 32, 256)  # x limit: best-scoring documents checked against a filter per round

# BM25 weight of a title match relative to a body match, per kind (a record's title
# is also the first line of its body, so at 1 a title word still counts twice).
# Chosen by the worst case over four train splits (scripts/tune_search_fusion.py;
# docs/search.md): with the shipped fusion weights 1 and 5 give the same worst
# hybrid margin, and 1 gives BM25 alone its best worst case over plain BM25 — 5
# won on MedQuAD's templates, which repeat the answer's title (0.667 vs 0.642), and
# lost on titled free text (consumer-qa-titled 0.483 vs 0.538, plain 0.474).
# Knowledge chunks keep 1: their text already opens with a context header naming
# the document, and RAG's relevance model (services/rag/relevance.py) is
# calibrated on those scores.
TITLE_WEIGHTS = {"records": 1.0, "knowledge": 1.0}

_TABLES = """
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
    extra TEXT NOT NULL,
    text TEXT NOT NULL DEFAULT '',
    length INTEGER NOT NULL DEFAULT 0,
    terms BLOB NOT NULL DEFAULT x'',
    seq INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS vocab (id INTEGER PRIMARY KEY, term TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS tombstones (
    seq INTEGER NOT NULL, tenant_id TEXT NOT NULL, kind TEXT NOT NULL, doc_id INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('seq', 0), ('pruned_through', 0);
"""

_INDEXES = """
CREATE INDEX IF NOT EXISTS docs_scope ON docs (tenant_id, kind, type);
CREATE INDEX IF NOT EXISTS docs_patient ON docs (tenant_id, patient_id);
CREATE INDEX IF NOT EXISTS docs_changes ON docs (tenant_id, kind, seq);
CREATE INDEX IF NOT EXISTS tombstones_scope ON tombstones (tenant_id, kind, seq);
CREATE INDEX IF NOT EXISTS tombstones_seq ON tombstones (seq);
"""

_UPSERT_DOC = """
INSERT INTO docs (kind, pk, tenant_id, name, type, title, patient_id, birth_ymd, gender,
                  clinical_time, codes, labels, grp, extra, text, length, terms, seq)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (pk) DO UPDATE SET
    kind = excluded.kind, tenant_id = excluded.tenant_id, name = excluded.name,
    type = excluded.type, title = excluded.title, patient_id = excluded.patient_id,
    birth_ymd = excluded.birth_ymd, gender = excluded.gender,
    clinical_time = excluded.clinical_time, codes = excluded.codes,
    labels = excluded.labels, grp = excluded.grp, extra = excluded.extra,
    text = excluded.text, length = excluded.length, terms = excluded.terms,
    seq = excluded.seq
"""

_HIT_FIELDS = "d.id, d.pk, d.name, d.type, d.title, d.patient_id, d.grp, d.extra, d.text"
# Reads of listed documents check the tenant and kind with `+column`: the unary plus keeps
# SQLite from answering through the (tenant, kind) index — a scan of the whole tenant —
# instead of looking each listed row up by id or pk.


@dataclass
class _Scope:
    """One (tenant, kind)'s in-memory index and how far into the change sequence it is."""

    # Searches read the index together; catching it up excludes them (threads).
    lock: ReadWriteLock = field(default_factory=ReadWriteLock)
    index: TermIndex | None = None
    cursor: int = 0

    def current(self, seq: int, pruned: int) -> bool:
        """Whether the index holds exactly what a snapshot at `seq` holds."""
        return self.index is not None and seq == self.cursor and pruned <= self.cursor


class SqliteLexical:
    """BM25 over SQLite-stored documents: one writer connection, a few readers (WAL)."""

    name = "sqlite-bm25"

    def __init__(self, path: Path, readers: int = 4) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._writer = self._connect()
        self._writer.executescript(_TABLES)
        _migrate(self._writer)
        self._writer.executescript(_INDEXES)
        self._write_lock = threading.Lock()
        self._readers = [self._connect() for _ in range(readers)]
        self._free: asyncio.Queue[sqlite3.Connection] = asyncio.Queue()
        for reader in self._readers:
            self._free.put_nowait(reader)
        self._vocab: dict[str, int] = {}  # term -> id; ids never change once committed
        self._interned = Interned()  # filter field values -> ids in the indexes' payloads
        self._scopes: dict[tuple[str, str], _Scope] = {}
        self._scopes_lock = threading.Lock()
        self._closing = False

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=10000")
        return conn

    def stop_preloading(self) -> None:
        self._closing = True

    def close(self) -> None:
        self._closing = True
        for conn in (self._writer, *self._readers):
            conn.close()

    # -- writes ------------------------------------------------------------------

    async def upsert(self, kind: str, docs: Sequence[IndexDoc]) -> None:
        if docs:
            await asyncio.to_thread(self._upsert, kind, list(docs))

    def _upsert(self, kind: str, docs: list[IndexDoc]) -> None:
        analysed = [counts(d.title, d.text) for d in docs]  # outside the lock: CPU only
        with self._write_lock:
            cur = self._writer.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                seq = _next_seq(cur)
                new_terms: dict[str, int] = {}
                for d, (term_counts, length) in zip(docs, analysed, strict=True):
                    blob = _blob(cur, term_counts, self._vocab, new_terms)
                    cur.execute(
                        _UPSERT_DOC,
                        (
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
                            d.text,
                            length,
                            blob,
                            seq,
                        ),
                    )
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            self._vocab.update(new_terms)  # only once committed

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
                seq = _next_seq(cur)
                cur.execute(
                    "INSERT INTO tombstones (seq, tenant_id, kind, doc_id) "
                    f"SELECT ?, tenant_id, kind, id FROM docs WHERE {where}",
                    (seq, *params),
                )
                cur.execute(f"DELETE FROM docs WHERE {where}", params)
                _prune_tombstones(cur, seq)
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise

    # -- reads -------------------------------------------------------------------

    async def search(
        self,
        kind: str,
        tenant_id: str,
        text: str,
        spec: FilterSpec,
        limit: int,
        *,
        with_fields: bool = True,
    ) -> list[Hit]:
        """The best `limit` documents, each with its fields (or only its pk)."""
        words = query_terms(text)
        if not words or limit <= 0:
            return []
        scope = self._scope(tenant_id, kind)
        return await self._read(
            self._search, scope, kind, tenant_id, words, spec, limit, with_fields
        )

    async def documents(
        self, kind: str, tenant_id: str, pks: Sequence[str]
    ) -> dict[str, dict[str, Any]]:
        """The stored fields of these documents (those that exist), by pk."""
        if not pks:
            return {}

        def read(conn: sqlite3.Connection) -> list[Any]:
            return conn.execute(
                f"SELECT {_HIT_FIELDS} FROM docs AS d WHERE +d.tenant_id = ? AND +d.kind = ? "
                "AND d.pk IN (SELECT value FROM json_each(?))",
                (tenant_id, kind, json.dumps(list(pks))),
            ).fetchall()

        return {row[1]: _fields(row) for row in await self._read(read)}

    async def preload(self) -> int:
        """Build the index of every (tenant, kind) in the file, so that no search waits for
        one (3-4 s for 905,000 short records here). Returns the number of indexes built."""

        def scopes(conn: sqlite3.Connection) -> list[tuple[str, str]]:
            return conn.execute("SELECT DISTINCT tenant_id, kind FROM docs").fetchall()

        def warm(conn: sqlite3.Connection, scope: _Scope, tenant_id: str, kind: str) -> None:
            with self._snapshot(conn, scope, tenant_id, kind):
                pass

        found = await self._read(scopes)
        for tenant_id, kind in found:
            if self._closing:
                break
            await self._read(warm, self._scope(tenant_id, kind), tenant_id, kind)
        return len(found)

    async def _read(self, fn: Callable[..., T], /, *args: Any) -> T:
        """fn(connection, *args) in a thread with a reader connection of its own.

        The connection goes back to the pool when the thread is done, not when the
        caller stops waiting (a cancelled caller must not hand out a busy connection).
        """
        conn = await self._free.get()
        work = asyncio.ensure_future(asyncio.to_thread(fn, conn, *args))
        work.add_done_callback(lambda _: self._free.put_nowait(conn))
        return await asyncio.shield(work)

    def _search(
        self,
        conn: sqlite3.Connection,
        scope: _Scope,
        kind: str,
        tenant_id: str,
        words: list[str],
        spec: FilterSpec,
        limit: int,
        with_fields: bool,
    ) -> list[Hit]:
        term_ids = self._term_ids_for_read(conn, words)
        if not term_ids:
            return []
        where, params = sql_filters(spec, kind)
        # One read snapshot from catching up to reading the hits: a document id the
        # index returns names the same row when its fields are read.
        with self._snapshot(conn, scope, tenant_id, kind) as index:
            mask = scalar_mask(index.payload, spec, kind, self._interned)
            if not where:
                top = index.top(term_ids, limit, mask)
            else:
                top = _filtered_top(
                    conn, index, term_ids, limit, mask, (tenant_id, kind, where, params)
                )
            return _hits(conn, top, tenant_id, kind, with_fields)

    @contextmanager
    def _snapshot(
        self, conn: sqlite3.Connection, scope: _Scope, tenant_id: str, kind: str
    ) -> Iterator[TermIndex]:
        """The scope's index as of one read transaction, held for reading inside it.

        Searches of a scope run together while the index is current. A search whose
        snapshot holds writes the index has not seen catches it up alone (write lock)
        in a new snapshot (while it waited for the lock, another may have caught the
        index up past its first one), then reads on in that snapshot.
        """
        scope.lock.acquire_read()
        conn.execute("BEGIN")
        if not scope.current(*_sequence(conn)):
            conn.execute("COMMIT")
            scope.lock.release_read()
            scope.lock.acquire_write()
            try:
                conn.execute("BEGIN")
                self._caught_up(conn, scope, tenant_id, kind)
            except BaseException:
                conn.execute("COMMIT")
                scope.lock.release_write()
                raise
            scope.lock.downgrade()
        try:
            assert scope.index is not None
            yield scope.index
        finally:
            conn.execute("COMMIT")
            scope.lock.release_read()

    def _term_ids_for_read(self, conn: sqlite3.Connection, words: list[str]) -> list[int]:
        missing = [w for w in words if w not in self._vocab]
        if missing:
            for term, term_id in conn.execute(
                "SELECT term, id FROM vocab WHERE term IN (SELECT value FROM json_each(?))",
                (json.dumps(missing),),
            ):
                self._vocab[term] = term_id
        return [self._vocab[w] for w in words if w in self._vocab]

    def _scope(self, tenant_id: str, kind: str) -> _Scope:
        with self._scopes_lock:
            return self._scopes.setdefault((tenant_id, kind), _Scope())

    def _caught_up(
        self, conn: sqlite3.Connection, scope: _Scope, tenant_id: str, kind: str
    ) -> TermIndex:
        """The scope's index with every write committed up to the caller's snapshot.

        Built on first use; rebuilt when it fell behind the tombstones kept or when the
        file went back in time (restored); compacted once dead slots outnumber live ones.
        """
        seq, pruned = _sequence(conn)
        index = scope.index
        if index is None or scope.cursor < pruned or seq < scope.cursor:
            scope.index = index = self._built(conn, tenant_id, kind)
        elif seq > scope.cursor:
            for (doc_id,) in conn.execute(
                "SELECT doc_id FROM tombstones WHERE tenant_id = ? AND kind = ? AND seq > ?",
                (tenant_id, kind, scope.cursor),
            ):
                index.remove(doc_id)
            for doc_id, length, blob, *fields in conn.execute(
                f"SELECT id, length, terms, {FILTER_COLUMNS} FROM docs "
                "WHERE tenant_id = ? AND kind = ? AND seq > ?",
                (tenant_id, kind, scope.cursor),
            ):
                index.add(doc_id, length, decode(blob), payload(self._interned, *fields))
            if index.dead > max(index.live, 10_000):
                index.compact()
        index.flush()  # searches only read the index: nothing may be left to do in one
        scope.cursor = seq
        return index

    def _built(self, conn: sqlite3.Connection, tenant_id: str, kind: str) -> TermIndex:
        """The scope's index from the file, read in chunks (a million rows held at once
        as Python objects would cost hundreds of MB the process keeps afterwards)."""
        index = TermIndex(TITLE_WEIGHTS.get(kind, 1.0), FILTER_DTYPE)
        rows = conn.execute(
            f"SELECT id, length, terms, {FILTER_COLUMNS} FROM docs "
            "WHERE tenant_id = ? AND kind = ? ORDER BY id",
            (tenant_id, kind),
        )
        loaded = 0
        while chunk := rows.fetchmany(BUILD_CHUNK):
            count = len(chunk)
            doc_ids = np.fromiter((r[0] for r in chunk), dtype=np.int64, count=count)
            lengths = np.fromiter((r[1] for r in chunk), dtype=np.float32, count=count)
            per_doc = np.fromiter(
                (len(r[2]) // TERM_DTYPE.itemsize for r in chunk), dtype=np.int64, count=count
            )
            records = np.frombuffer(b"".join(r[2] for r in chunk), dtype=TERM_DTYPE)
            payloads = np.array(
                [payload(self._interned, *r[3:]) for r in chunk], dtype=FILTER_DTYPE
            )
            index.load(doc_ids, lengths, records, per_doc, payloads)
            loaded += count
        log.info("lexical index for %s/%s loaded: %d documents", tenant_id, kind, loaded)
        return index

    async def count(self, kind: str, tenant_id: str) -> int:
        def read(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "SELECT count(*) FROM docs WHERE tenant_id = ? AND kind = ?", (tenant_id, kind)
            ).fetchone()
            return int(row[0])

        return await self._read(read)


def _blob(
    cur: sqlite3.Cursor,
    term_counts: dict[str, tuple[int, int]],
    known: Mapping[str, int],
    new_terms: dict[str, int],
) -> bytes:
    """A document's term blob; terms neither `known` nor in `new_terms` get a vocab id
    (added to `new_terms`: the caller makes them known once the transaction commits)."""
    ids: dict[int, tuple[int, int]] = {}
    for term, count in term_counts.items():
        term_id = known.get(term) or new_terms.get(term)
        if term_id is None:
            cur.execute(
                "INSERT INTO vocab (term) VALUES (?) ON CONFLICT (term) DO NOTHING", (term,)
            )
            (term_id,) = cur.execute("SELECT id FROM vocab WHERE term = ?", (term,)).fetchone()
            new_terms[term] = term_id
        ids[term_id] = count
    return encode(ids)


def _next_seq(cur: sqlite3.Cursor) -> int:
    (seq,) = cur.execute(
        "UPDATE meta SET value = value + 1 WHERE key = 'seq' RETURNING value"
    ).fetchone()
    return int(seq)


def _sequence(conn: sqlite3.Connection) -> tuple[int, int]:
    values = dict(
        conn.execute("SELECT key, value FROM meta WHERE key IN ('seq', 'pruned_through')")
    )
    return int(values["seq"]), int(values["pruned_through"])


def _prune_tombstones(cur: sqlite3.Cursor, seq: int) -> None:
    """Forget tombstones older than TOMBSTONE_WRITES_KEPT write transactions; an index
    whose cursor is older than that rebuilds (one large delete stays one transaction)."""
    through = seq - TOMBSTONE_WRITES_KEPT
    if (
        through > 0
        and cur.execute("SELECT 1 FROM tombstones WHERE seq <= ? LIMIT 1", (through,)).fetchone()
    ):
        cur.execute("DELETE FROM tombstones WHERE seq <= ?", (through,))
        cur.execute(
            "UPDATE meta SET value = max(value, ?) WHERE key = 'pruned_through'", (through,)
        )


def _hits(
    conn: sqlite3.Connection, top: TopK, tenant_id: str, kind: str, with_fields: bool
) -> list[Hit]:
    if len(top.doc_ids) == 0:
        return []
    columns = _HIT_FIELDS if with_fields else "d.id, d.pk"
    rows = {
        row[0]: row
        for row in conn.execute(
            f"SELECT {columns} FROM docs AS d WHERE +d.tenant_id = ? AND +d.kind = ? "
            "AND d.id IN (SELECT value FROM json_each(?))",
            (tenant_id, kind, json.dumps(top.doc_ids.tolist())),
        )
    }
    hits = []
    for doc_id, score in zip(top.doc_ids.tolist(), top.scores.tolist(), strict=True):
        row = rows.get(doc_id)
        if row is not None:
            hits.append(Hit(row[1], float(score), _fields(row) if with_fields else {}))
    return hits


def _fields(row: tuple[Any, ...]) -> dict[str, Any]:
    _, pk, name, type_, title, patient, grp, extra, text = row
    return {
        "pk": pk,
        "name": name,
        "kind": type_,
        "title": title,
        "patient_id": patient,
        "grp": grp,
        "extra": json.loads(extra),
        "text": text,
    }


def _filtered_top(
    conn: sqlite3.Connection,
    index: TermIndex,
    term_ids: list[int],
    limit: int,
    mask: np.ndarray | None,
    sql: tuple[str, str, str, list[Any]],
) -> TopK:
    """The best `limit` documents in `mask` that also pass the SQL filter
    (sql = tenant, kind, the SQL conditions, their parameters)."""
    tenant_id, kind, where, params = sql
    for factor in FILTER_ROUNDS:
        top = index.top(term_ids, limit * factor, mask)
        passing = _passing(conn, top.doc_ids, tenant_id, kind, where, params)
        ok = np.isin(top.doc_ids, passing)
        if int(ok.sum()) >= limit or top.complete:
            return TopK(top.doc_ids[ok][:limit], top.scores[ok][:limit], top.complete)
    # A selective filter: name the documents it allows and score only those.
    allowed = np.fromiter(
        (
            row[0]
            for row in conn.execute(
                f"SELECT d.id FROM docs AS d WHERE d.tenant_id = ? AND d.kind = ? {where}",
                (tenant_id, kind, *params),
            )
        ),
        dtype=np.int64,
    )
    allowed_slots = index.mask(allowed)
    return index.top(term_ids, limit, allowed_slots if mask is None else allowed_slots & mask)


def _passing(
    conn: sqlite3.Connection,
    doc_ids: np.ndarray,
    tenant_id: str,
    kind: str,
    where: str,
    params: list[Any],
) -> np.ndarray:
    if len(doc_ids) == 0:
        return np.empty(0, np.int64)
    rows = conn.execute(
        "SELECT d.id FROM docs AS d WHERE +d.tenant_id = ? AND +d.kind = ? "
        f"AND d.id IN (SELECT value FROM json_each(?)) {where}",
        (tenant_id, kind, json.dumps(doc_ids.tolist()), *params),
    ).fetchall()
    return np.array([r[0] for r in rows], dtype=np.int64)


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring a lexical.db to LAYOUT_VERSION in place; nothing is re-embedded or lost.

    Versions 1-2 kept the text in an FTS5 table (`fts`, rowid = docs.id); version
    3 keeps it in docs with each document's terms. The upgrade copies the text,
    analyses every document not analysed yet, stamps them with a new change
    sequence (so running readers pick them up) and drops the FTS5 table. It runs
    under the write lock and looks at the file again once it holds it, so
    processes starting together upgrade it once. An FTS5 table that reappears
    (an older HACS opened the file) is folded in the same way: documents that
    version wrote get their text and terms, nothing else is touched.
    """
    if _layout_current(conn):
        return
    conn.execute("PRAGMA busy_timeout = 3600000")  # another process may be upgrading it
    conn.execute("BEGIN IMMEDIATE")
    try:
        if _layout_current(conn):
            conn.execute("COMMIT")
            return
        columns = {row[1] for row in conn.execute("PRAGMA table_info(docs)")}
        for column, decl in (
            ("text", "TEXT NOT NULL DEFAULT ''"),
            ("length", "INTEGER NOT NULL DEFAULT 0"),
            ("terms", "BLOB NOT NULL DEFAULT x''"),
            ("seq", "INTEGER NOT NULL DEFAULT 0"),
        ):
            if column not in columns:
                conn.execute(f"ALTER TABLE docs ADD COLUMN {column} {decl}")
        if _has_fts(conn):
            fts_columns = [row[1] for row in conn.execute("PRAGMA table_info(fts)")]
            if "text" not in fts_columns:
                raise RuntimeError(
                    f"lexical index has an unknown layout (fts columns {fts_columns}); move the "
                    "file aside and run `hacs index backfill` to rebuild it"
                )
            conn.execute(
                "UPDATE docs SET text = (SELECT f.text FROM fts AS f WHERE f.rowid = docs.id) "
                "WHERE text = '' AND EXISTS (SELECT 1 FROM fts AS f WHERE f.rowid = docs.id)"
            )
        _analyse_unanalysed(conn)
        conn.execute("DROP TABLE IF EXISTS fts")
        conn.execute(f"PRAGMA user_version = {LAYOUT_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    finally:
        conn.execute("PRAGMA busy_timeout = 10000")


def _layout_current(conn: sqlite3.Connection) -> bool:
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    columns = {row[1] for row in conn.execute("PRAGMA table_info(docs)")}
    if "seq" in columns and not _has_fts(conn):
        if version != LAYOUT_VERSION:
            conn.execute(f"PRAGMA user_version = {LAYOUT_VERSION}")  # a new, empty file
        return True
    return False


def _has_fts(conn: sqlite3.Connection) -> bool:
    return (
        conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'fts'").fetchone()
        is not None
    )


def _analyse_unanalysed(conn: sqlite3.Connection, batch: int = 5000) -> None:
    """Terms and length for every document without them, in batches, under one new seq."""
    (pending,) = conn.execute("SELECT count(*) FROM docs WHERE length = 0").fetchone()
    if not pending:
        return
    log.warning("upgrading the lexical index: analysing %d documents", pending)
    cur = conn.cursor()
    seq = _next_seq(cur)
    vocab: dict[str, int] = dict(conn.execute("SELECT term, id FROM vocab"))
    last, done = 0, 0
    while True:
        rows = conn.execute(
            "SELECT id, title, text FROM docs WHERE length = 0 AND id > ? ORDER BY id LIMIT ?",
            (last, batch),
        ).fetchall()
        if not rows:
            break
        for doc_id, title, text in rows:
            term_counts, length = counts(title, text)
            blob = _blob(cur, term_counts, vocab, vocab)
            conn.execute(
                "UPDATE docs SET length = ?, terms = ?, seq = ? WHERE id = ?",
                (length, blob, seq, doc_id),
            )
        last = rows[-1][0]
        done += len(rows)
        log.warning("  %d/%d documents analysed", done, pending)
