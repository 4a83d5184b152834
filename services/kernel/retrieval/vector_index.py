"""The vector index: Milvus Lite (a local file) by default, a Milvus server by URI.

One collection per content kind (records, knowledge chunks), each with the
text, a dense vector, a BM25 sparse vector computed by Milvus from the text,
scalar fields for the filters, and the tenant as partition key. Every search
carries the tenant in its own filter expression — never only in a shared
hybrid filter — so one tenant's query cannot touch another's rows.

Milvus servers before 2.5 have no BM25 function: there the collections are
dense-only and `lexical_supported` is False (hybrid search degrades to
dense and says so).

Every Milvus call blocks a thread while the server works, so the index runs
them on its own thread pool: a slow or waiting Milvus never takes the threads
the embedder and SQLite need.

Consistency on a server: writes wait until they are readable (one Strong read
after each write call), so what a write acknowledged is visible to every read
that starts after it; reads then use Bounded consistency, which answers from
what the server has already applied instead of waiting for its next time tick
(a Strong search costs a ~200 ms wait on Milvus's default tick). With several
in-memory replicas, a replica may lag by up to Milvus's graceful time; set
HACS_MILVUS_READ_CONSISTENCY=strong to make every read wait instead.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import re
from collections import Counter
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import numpy as np
from pymilvus import DataType, Function, FunctionType, MilvusClient
from pymilvus.client.types import LoadState
from pymilvus.exceptions import MilvusException

from services.common.errors import Unavailable
from services.common.settings import is_milvus_lite
from services.kernel.retrieval.expressions import in_tenant, is_in
from services.kernel.retrieval.search_batcher import SearchBatcher

log = logging.getLogger(__name__)

T = TypeVar("T")
# The kinds of documents, one collection each: records (by the search service's
# indexer) and knowledge chunks (by RAG ingest). Memories have their own (memory).
RECORDS = "records"
KNOWLEDGE = "knowledge"
READ_CONSISTENCY = ("bounded", "strong")

MAX_TEXT = 16_000
FLUSH_EVERY = 5_000
REPAIR_BATCH = 1_000  # keys per read when repairing a Milvus Lite collection
# The text fields searches filter on by equality. Without an index Milvus compares
# the strings of every row of the partition on every search: at a million rows the
# tenant filter alone cost ~1 ms and `kind` / `gender` 4-5 ms each (Milvus 2.3.5;
# docs/search.md). Numbers (birth date, clinical time) gained nothing from a sort
# index. Indexes are made with a new collection (before its first load): adding one
# to a loaded collection fails its searches until it is released and loaded again
# (docs/search.md says how).
INDEXED_FILTER_FIELDS = ("tenant_id", "kind", "gender", "patient_id", "grp")
ANALYZER = {
    "tokenizer": "standard",
    "filter": [
        "lowercase",
        {"type": "stop", "stop_words": ["_english_"]},
        {"type": "stemmer", "language": "english"},
    ],
}


@dataclass
class IndexDoc:
    """One searchable thing: a record or a knowledge chunk."""

    pk: str  # "{tenant}/{collection}/{id}" or the chunk name
    tenant_id: str
    name: str
    kind: str  # HACS resource type, or "Chunk"
    text: str
    vector: np.ndarray
    title: str = ""
    patient_id: str = ""
    clinical_time: int = 0  # epoch seconds
    gender: str = ""
    birth_ymd: int = -1  # YYYYMMDD of the patient's birth date; -1 unknown
    codes: list[str] = field(default_factory=list)  # "system|code" and "*|code"
    labels: dict[str, str] = field(default_factory=dict)
    version: int = 0
    group: str = ""  # knowledge base of a chunk
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Hit:
    pk: str
    score: float
    fields: dict[str, Any]


def record_pk(tenant_id: str, collection: str, record_id: str) -> str:
    """The primary key of a record's document in the records collection."""
    return f"{tenant_id}/{collection}/{record_id}"


class VectorIndex:
    def __init__(
        self,
        uri: str,
        dimension: int,
        *,
        read_consistency: str = "bounded",
        client_threads: int = 32,
        token: str = "",
    ) -> None:
        if read_consistency not in READ_CONSISTENCY:
            raise ValueError(f"read consistency {read_consistency!r}: bounded or strong")
        self._uri = uri
        self._token = token
        self.dimension = dimension
        self._client: MilvusClient | None = None
        self.lexical_supported = True
        self.upsert_misroutes = False
        self.is_lite = is_milvus_lite(uri)
        self._ready: set[str] = set()
        self._lock = asyncio.Lock()
        self._executor = ThreadPoolExecutor(
            max_workers=max(1, client_threads), thread_name_prefix="milvus"
        )
        # Rows written since the last flush, per collection (see maybe_flush).
        self._unflushed: dict[str, int] = {}
        # Milvus Lite reads its own writes. On a server, reads ask for Bounded (or
        # Strong, if configured) and writes wait until they are readable (see
        # _until_readable): Session consistency did not give read-your-writes
        # (pymilvus 3 against Milvus 2.3 returned nothing just written).
        self._write_barrier = not self.is_lite and read_consistency == "bounded"
        self.read_options: dict[str, str] = (
            {} if self.is_lite else {"consistency_level": read_consistency.capitalize()}
        )
        self._dense: SearchBatcher[np.ndarray, list[Hit]] = SearchBatcher(self._dense_batch)

    async def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run one blocking Milvus client call on the index's own threads."""
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, functools.partial(context.run, fn, *args, **kwargs)
        )

    async def until_readable(self, kind: str) -> None:
        """Wait until every write this process made to `kind`'s collection is readable."""
        await self._until_readable(await self.ensure(kind))

    async def _until_readable(self, name: str) -> None:
        """Wait until every write this process made to `name` is visible to reads.

        A Strong read waits for the server to apply everything before it; after
        it, Bounded reads (from any process) see those writes on a single replica.
        """
        if self._write_barrier:
            await self.call(
                self.client.query,
                name,
                filter='pk == ""',
                output_fields=["pk"],
                limit=1,
                consistency_level="Strong",
            )

    async def connect(self) -> None:
        def connect() -> MilvusClient:
            # A token (user:password, or a Zilliz Cloud API key) only for a server.
            return (
                MilvusClient(self._uri, token=self._token)
                if self._token
                else MilvusClient(self._uri)
            )

        try:
            client = await self.call(connect)
        except MilvusException as exc:
            raise Unavailable(f"cannot reach Milvus at {self._uri}: {exc}") from exc
        self._client = client
        version = await self.call(client.get_server_version)
        if str(version).lower().startswith("milvus_lite") and not self.is_lite:
            # Milvus Lite served over gRPC by another process (the supervisor of
            # `hacs serve --workers N` runs one for its workers): still Lite.
            self._as_lite()
        # Milvus Lite has BM25 but no sparse index (it scans): HACS does lexical search
        # elsewhere there (services/kernel/retrieval/lexical.py) and keeps the collections dense.
        self.lexical_supported = _supports_bm25(str(version)) and not self.is_lite
        self.upsert_misroutes = not self.is_lite and _misroutes_upserts(str(version))
        log.info(
            "Milvus %s at %s (BM25 %s)",
            version,
            self._uri,
            "on" if self.lexical_supported else "off",
        )

    def _as_lite(self) -> None:
        """Lite's rules: it reads its own writes (no barrier, no consistency level)."""
        self.is_lite = True
        self._write_barrier = False
        self.read_options = {}

    @property
    def client(self) -> MilvusClient:
        if self._client is None:
            raise Unavailable("the vector index is not connected")
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self.call(self._client.close)
        self._executor.shutdown(wait=False)

    def collection(self, kind: str) -> str:
        return f"hacs_{kind}_{self.dimension}"

    async def ensure(self, kind: str) -> str:
        name = self.collection(kind)
        if name in self._ready:
            return name
        async with self._lock:
            if name not in self._ready:
                await self.call(self._make_ready, name)
                if self.is_lite:
                    await self.call(self._repair_lite_duplicates, name)
                self._ready.add(name)
        return name

    def _make_ready(self, name: str) -> None:
        """Create `name` if missing, complete its indexes, load it.

        Several processes do this at once (every service's indexer, `hacs index
        backfill`, a new pod), so each step holds when another process is mid-way:
        creating an existing collection of the same schema and an existing index of
        the same parameters both succeed, and no process loads the collection before
        every index exists — a collection loaded with fewer indexes than it has
        refuses every later load ("can't change the index for loaded collection"),
        which is repaired here by releasing it and loading it again.
        """
        client = self.client
        if not client.has_collection(name):
            # Session: a process reads its own writes at once (Milvus Lite does anyway).
            client.create_collection(
                name, schema=self._schema(), num_partitions=64, consistency_level="Session"
            )
            log.info("created Milvus collection %s", name)
        missing = self._index_params(exclude=set(client.list_indexes(name)))
        if len(missing):
            if client.get_load_state(name)["state"] != LoadState.NotLoad:
                # Serving already (a collection older than its indexes): adding one now
                # would fail its searches until a reload, so that is an operator's
                # maintenance step (docs/search.md, "scalar indexes").
                log.warning(
                    "Milvus collection %s lacks the indexes %s; it works without them "
                    "(docs/search.md says how to add them)",
                    name,
                    ", ".join(index.field_name for index in missing),
                )
                return
            client.create_index(name, missing)
        try:
            client.load_collection(name)
        except MilvusException as exc:
            if "change the index for loaded collection" not in str(exc):
                raise
            log.warning(
                "Milvus collection %s was loaded before all its indexes existed; "
                "releasing and loading it again",
                name,
            )
            client.release_collection(name)
            client.load_collection(name)

    def _repair_lite_duplicates(self, name: str) -> None:
        """Keep one row per primary key in a Milvus Lite collection.

        Milvus Lite 3.2 commits a flush (its manifest names the new segment) before it
        deletes the write-ahead log the segment came from; a process killed between the
        two replays that log on the next open, and every row of that flush is then
        there twice with the same sequence number — counted twice and found twice by
        search. Writing each such row again (an upsert: a newer sequence than both
        copies) leaves one. Only this process has the file open (Lite locks it), so
        nothing writes in between. The scan reads every key once per open.
        """
        client = self.client
        rows = client.query(name, filter='pk != ""', output_fields=["pk"])
        twice = [pk for pk, n in Counter(row["pk"] for row in rows).items() if n > 1]
        for start in range(0, len(twice), REPAIR_BATCH):
            batch = twice[start : start + REPAIR_BATCH]
            # A read by key answers one row per key.
            full = client.query(name, filter=is_in("pk", batch), output_fields=["*"])
            client.upsert(name, list({row["pk"]: row for row in full}.values()))
        if twice:
            log.warning(
                "Milvus Lite collection %s held %d rows twice after an unclean stop "
                "(killed during a flush); kept one of each",
                name,
                len(twice),
            )

    def _index_params(self, exclude: set[str]) -> Any:
        """The collection's indexes (named for their fields), less those in `exclude`."""
        index = self.client.prepare_index_params()
        wanted: list[tuple[str, dict[str, Any]]] = [
            (
                "dense",
                {
                    "index_type": "HNSW",
                    "metric_type": "IP",
                    "params": {"M": 16, "efConstruction": 200},
                },
            )
        ]
        if self.lexical_supported:
            wanted.append(
                ("sparse", {"index_type": "SPARSE_INVERTED_INDEX", "metric_type": "BM25"})
            )
        if not self.is_lite:  # Lite wants a type named, and scans small collections anyway
            # The server's default type (2.3: a trie).
            wanted += [(field, {"index_type": ""}) for field in INDEXED_FILTER_FIELDS]
        for field_name, params in wanted:
            if field_name not in exclude:
                index.add_index(field_name, **params)
        return index

    def _schema(self) -> Any:
        client = self.client
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("pk", DataType.VARCHAR, max_length=512, is_primary=True)
        schema.add_field("tenant_id", DataType.VARCHAR, max_length=40, is_partition_key=True)
        schema.add_field("name", DataType.VARCHAR, max_length=512)
        schema.add_field("kind", DataType.VARCHAR, max_length=40)
        schema.add_field("title", DataType.VARCHAR, max_length=512)
        if self.lexical_supported:
            schema.add_field(
                "text",
                DataType.VARCHAR,
                max_length=65_535,
                enable_analyzer=True,
                analyzer_params=ANALYZER,
            )
            schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
            schema.add_function(
                Function(
                    name="bm25",
                    function_type=FunctionType.BM25,
                    input_field_names=["text"],
                    output_field_names=["sparse"],
                )
            )
        else:
            schema.add_field("text", DataType.VARCHAR, max_length=65_535)
        schema.add_field("dense", DataType.FLOAT_VECTOR, dim=self.dimension)
        schema.add_field("patient_id", DataType.VARCHAR, max_length=64)
        schema.add_field("clinical_time", DataType.INT64)
        schema.add_field("gender", DataType.VARCHAR, max_length=16)
        schema.add_field("birth_ymd", DataType.INT64)
        schema.add_field(
            "codes", DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=256, max_length=256
        )
        schema.add_field("labels", DataType.JSON)
        schema.add_field("version", DataType.INT64)
        schema.add_field("grp", DataType.VARCHAR, max_length=512)
        schema.add_field("extra", DataType.JSON)
        return schema

    async def upsert(self, kind: str, docs: list[IndexDoc], *, wait: bool = True) -> None:
        """Write `docs`; with `wait` (the default) return once reads see them. A writer of
        many batches passes wait=False and calls `until_readable` once at the end."""
        if not docs:
            return
        name = await self.ensure(kind)
        rows = [
            {
                "pk": d.pk,
                "tenant_id": d.tenant_id,
                "name": d.name,
                "kind": d.kind,
                "title": d.title[:500],
                "text": d.text[:MAX_TEXT],
                "dense": d.vector.astype(np.float32).tolist(),
                "patient_id": d.patient_id,
                "clinical_time": d.clinical_time,
                "gender": d.gender,
                "birth_ymd": d.birth_ymd,
                "codes": d.codes[:256],
                "labels": d.labels,
                "version": d.version,
                "grp": d.group,
                "extra": d.extra,
            }
            for d in docs
        ]
        if self.upsert_misroutes:
            # Milvus before 2.4 computes an upsert's partition from the wrong field
            # (milvus-io/milvus#30772): rows land outside their tenant's partition and
            # tenant-filtered reads miss them. Delete then insert routes them right; a
            # reader between the two calls misses these rows for that moment.
            pks = [row["pk"] for row in rows]
            await self.call(self.client.delete, name, filter=is_in("pk", pks))
            await self.call(self.client.insert, name, rows)
        else:
            await self.call(self.client.upsert, name, rows)
        if wait:
            await self._until_readable(name)
        self._unflushed[name] = self._unflushed.get(name, 0) + len(rows)
        if self._unflushed[name] >= FLUSH_EVERY:
            await self.flush(kind)

    async def flush(self, kind: str) -> None:
        """Seal what was written: searches over growing segments are brute force (slow)."""
        name = await self.ensure(kind)
        if self._unflushed.pop(name, 0):
            await self.call(self.client.flush, name)

    async def delete(self, kind: str, tenant_id: str, pks: list[str], *, wait: bool = True) -> None:
        if not pks:
            return
        name = await self.ensure(kind)
        await self.call(self.client.delete, name, filter=in_tenant(tenant_id, is_in("pk", pks)))
        if wait:
            await self._until_readable(name)

    async def delete_where(self, kind: str, tenant_id: str, expr: str) -> None:
        name = await self.ensure(kind)
        await self.call(self.client.delete, name, filter=in_tenant(tenant_id, expr))
        await self._until_readable(name)

    async def dense_search(
        self,
        kind: str,
        tenant_id: str,
        vector: np.ndarray,
        expr: str,
        limit: int,
        fields: list[str],
    ) -> list[Hit]:
        """The `limit` nearest rows; concurrent searches alike but for the vector share a call."""
        name = await self.ensure(kind)
        key = (name, in_tenant(tenant_id, expr), limit, tuple(fields))
        return await self._dense.search(key, vector)

    async def _dense_batch(self, key: Hashable, vectors: list[np.ndarray]) -> list[list[Hit]]:
        name, scoped, limit, fields = cast(tuple[str, str, int, tuple[str, ...]], key)
        pk_only = fields == ("pk",)  # search's case: the primary key comes with every hit
        result = await self.call(
            self.client.search,
            name,
            data=[v.astype(np.float32).tolist() for v in vectors],
            anns_field="dense",
            limit=limit,
            filter=scoped,
            output_fields=[] if pk_only else list(fields),
            search_params={"metric_type": "IP", "params": {"ef": max(64, limit)}},
            **self.read_options,
        )
        if pk_only and all(hasattr(hits, "distances") for hits in result):
            # read pymilvus's id and score columns, not a dict per hit
            return [
                [Hit(str(pk), float(d), {}) for pk, d in zip(hits.ids, hits.distances, strict=True)]
                for hits in result
            ]
        return [
            [
                Hit(r["pk"] if "pk" in r else r["id"], float(r["distance"]), dict(r["entity"]))
                for r in hits
            ]
            for hits in result
        ]

    async def lexical_search(
        self, kind: str, tenant_id: str, text: str, expr: str, limit: int, fields: list[str]
    ) -> list[Hit]:
        if not self.lexical_supported:
            return []
        name = await self.ensure(kind)
        result = await self.call(
            self.client.search,
            name,
            data=[text],
            anns_field="sparse",
            limit=limit,
            filter=in_tenant(tenant_id, expr),
            output_fields=fields,
            search_params={"metric_type": "BM25", "params": {}},
            **self.read_options,
        )
        # Milvus Lite reports BM25 as a negative distance, servers as a positive
        # score; either way the magnitude is the BM25 score.
        return [
            Hit(r["pk"] if "pk" in r else r["id"], abs(float(r["distance"])), dict(r["entity"]))
            for r in result[0]
        ]

    async def fetch(
        self, kind: str, tenant_id: str, pks: list[str], fields: list[str]
    ) -> dict[str, dict[str, Any]]:
        if not pks:
            return {}
        name = await self.ensure(kind)
        rows = await self.call(
            self.client.query,
            name,
            filter=in_tenant(tenant_id, is_in("pk", pks)),
            output_fields=fields,
            **self.read_options,
        )
        return {row["pk"]: dict(row) for row in rows}

    async def count(self, kind: str, tenant_id: str, expr: str = "") -> int:
        name = await self.ensure(kind)
        rows = await self.call(
            self.client.query,
            name,
            filter=in_tenant(tenant_id, expr),
            output_fields=["count(*)"],
            **self.read_options,
        )
        return int(rows[0]["count(*)"]) if rows else 0


def _server_version(version: str) -> tuple[int, int]:
    """(major, minor) of a server version such as "v2.3.5-lite" or "2.5.1"."""
    numbers = re.findall(r"\d+", version)
    return (int(numbers[0]), int(numbers[1])) if len(numbers) >= 2 else (0, 0)


def _misroutes_upserts(version: str) -> bool:
    """Servers before 2.4 put upserted rows in the wrong partition-key partition."""
    return _server_version(version) < (2, 4)


def _supports_bm25(version: str) -> bool:
    """Milvus 2.5+ servers have BM25 functions; Milvus Lite reports "milvus_lite-x.y.z"."""
    if version.lower().startswith("milvus_lite"):
        return True
    return _server_version(version) >= (2, 5)
