"""The search service's domain: search (with the records behind the hits), query parsing,
the index's status, and backfills — each call checked against the caller's tenant."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

from services.common.caller import Caller
from services.common.errors import Forbidden
from services.kernel.records.names import parse_record_name
from services.kernel.records.store import RecordStore
from services.kernel.retrieval.hybrid import Searcher, SearchOutcome, SearchParams
from services.kernel.retrieval.query_parser import Parse
from services.kernel.retrieval.vector_index import KNOWLEDGE, RECORDS, VectorIndex
from services.search.indexer import BackfillProgress, RecordIndexer


@dataclass(frozen=True)
class IndexStatus:
    indexed_sequence: int
    head_sequence: int
    indexed_at: datetime | None
    records: int
    chunks: int


@dataclass(frozen=True)
class BackfillDone:
    indexed: int
    sequence: int


class SearchDomain:
    def __init__(
        self, searcher: Searcher, index: VectorIndex, indexer: RecordIndexer, store: RecordStore
    ) -> None:
        self._searcher = searcher
        self._index = index
        self._indexer = indexer
        self._store = store

    async def search(
        self, caller: Caller, params: SearchParams, *, with_records: bool
    ) -> SearchOutcome:
        outcome = await self._searcher.search(caller, params)
        if with_records:  # the hits are records the caller may read (the searcher saw to that)
            async with self._store.transaction(params.tenant_id) as tx:
                for found in outcome.hits:
                    if found.collection == RECORDS:
                        name = parse_record_name(str(found.candidate.fields.get("name", "")))
                        found.record = await tx.get(name.info.collection, name.id)
        return outcome

    def parse(self, caller: Caller, tenant_id: str, query: str) -> Parse:
        _own_tenant(caller, tenant_id, "read:*")
        return self._searcher.parse(query)

    async def status(self, caller: Caller, tenant_id: str) -> IndexStatus:
        _own_tenant(caller, tenant_id, "read:*")
        caller.require("read:changes", f"tenants/{tenant_id}")
        sequence, when = await self._indexer.cursors.read(tenant_id)
        async with self._store.transaction(tenant_id) as tx:
            head = await tx.head_sequence()
        return IndexStatus(
            indexed_sequence=sequence,
            head_sequence=head,
            indexed_at=when,
            records=await self._index.count(RECORDS, tenant_id),
            chunks=await self._index.count(KNOWLEDGE, tenant_id),
        )

    async def backfill(
        self, caller: Caller, tenant_id: str, collections: list[str] | None, batch_size: int
    ) -> AsyncIterator[BackfillProgress | BackfillDone]:
        """Rebuild the tenant's record index: progress as it goes, then what was indexed."""
        _own_tenant(caller, tenant_id, "admin:search")
        caller.require("admin:search", f"tenants/{tenant_id}")
        queue: asyncio.Queue[BackfillProgress | None] = asyncio.Queue(maxsize=100)

        async def report(progress: BackfillProgress) -> None:
            await queue.put(progress)

        work = asyncio.create_task(
            self._indexer.backfill(
                tenant_id, collections=collections, batch_size=batch_size, progress=report
            )
        )
        work.add_done_callback(lambda _: queue.put_nowait(None))
        try:
            while (progress := await queue.get()) is not None:
                yield progress
            indexed, sequence = await work
        finally:
            work.cancel()
        yield BackfillDone(indexed, sequence)


def _own_tenant(caller: Caller, tenant_id: str, permission: str) -> None:
    if caller.tenant_id != tenant_id:
        raise Forbidden(f"tenants/{tenant_id} is not the caller's tenant", permission=permission)
