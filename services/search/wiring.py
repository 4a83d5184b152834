"""Builds the search servicer and the live record indexer from the kernel's retrieval parts."""

from __future__ import annotations

import grpc
from hacs.search.v1 import search_service_pb2_grpc

from services.kernel.modules import Kernel
from services.kernel.retrieval.hybrid import Searcher
from services.search.domain import SearchDomain
from services.search.indexer import RecordIndexer
from services.search.servicer import SearchServicer

KERNEL_MODULES = ("records", "models", "embedder", "vector_index", "lexical_index")


async def record_indexer(kernel: Kernel) -> RecordIndexer:
    """The process's indexer of the records change log (runs unless HACS_INDEXER_ENABLED=false)."""

    async def build() -> RecordIndexer:
        platform = kernel.platform
        indexer = RecordIndexer(
            platform.db,
            await kernel.vector_index(),
            await kernel.lexical_index(),
            await kernel.embedder(),
            bus=platform.change_bus,
        )
        if platform.settings.indexer_enabled:
            indexer.start()
            platform.on_close(indexer.stop)
        return indexer

    return await kernel.platform.shared("record_indexer", build)


async def search_servicer(kernel: Kernel) -> SearchServicer:
    index = await kernel.vector_index()
    registry = await kernel.models()
    searcher = Searcher(index, await kernel.lexical_index(), await kernel.embedder())
    domain = SearchDomain(searcher, index, await record_indexer(kernel), kernel.record_store())
    return SearchServicer(domain, registry.default_name)


async def register(kernel: Kernel, server: grpc.aio.Server) -> None:
    search_service_pb2_grpc.add_SearchServiceServicer_to_server(
        await search_servicer(kernel), server
    )
