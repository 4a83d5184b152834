"""Builds the search servicer, the shared vector index and the live indexer."""

from __future__ import annotations

import asyncio

import grpc
from hacs.search.v1 import search_service_pb2_grpc

from services.common.runtime.platform import Platform
from services.kernel.retrieval.hybrid import FIELDS, Searcher
from services.kernel.retrieval.lexical import LexicalIndex, MilvusLexical
from services.kernel.retrieval.lexical_store import SqliteLexical
from services.kernel.retrieval.vector_index import VectorIndex
from services.search.indexer import RecordIndexer
from services.search.servicer import SearchServicer


async def vector_index(platform: Platform) -> VectorIndex:
    """One Milvus connection per process, sized for the default embedding model."""

    async def build() -> VectorIndex:
        registry = await platform.model_registry()
        dimension = registry.get("").config.dimension
        settings = platform.settings
        index = VectorIndex(
            settings.resolved_milvus_uri,
            dimension,
            read_consistency=settings.milvus_read_consistency,
            client_threads=settings.milvus_client_threads,
        )
        await index.connect()
        platform.on_close(index.close)
        return index

    return await platform.shared("vector_index", build)


async def lexical_index(platform: Platform) -> LexicalIndex:
    """Milvus's BM25 on a server that indexes it; in-process BM25 over SQLite otherwise."""

    async def build() -> LexicalIndex:
        index = await vector_index(platform)
        engine = platform.settings.lexical_engine
        if engine == "auto":
            engine = "milvus" if index.lexical_supported else "sqlite"
        if engine == "milvus":
            if not index.lexical_supported:
                raise RuntimeError(
                    "HACS_LEXICAL_ENGINE=milvus needs a Milvus server 2.5 or later "
                    "(BM25 with a sparse index)"
                )
            return MilvusLexical(index, FIELDS)
        store = SqliteLexical(platform.settings.data_path / "lexical.db")
        # Built in the background so the first searches do not wait for them.
        preload = asyncio.create_task(store.preload(), name="lexical-preload")

        async def close() -> None:
            store.stop_preloading()
            await asyncio.gather(preload, return_exceptions=True)  # ends after its current index
            store.close()

        platform.on_close(close)
        return store

    return await platform.shared("lexical_index", build)


async def record_indexer(platform: Platform) -> RecordIndexer:
    async def build() -> RecordIndexer:
        indexer = RecordIndexer(
            platform.db,
            await vector_index(platform),
            await lexical_index(platform),
            await platform.embedder(),
            bus=platform.change_bus,
        )
        if platform.settings.indexer_enabled:
            indexer.start()
            platform.on_close(indexer.stop)
        return indexer

    return await platform.shared("record_indexer", build)


async def search_servicer(platform: Platform) -> SearchServicer:
    index = await vector_index(platform)
    embedder = await platform.embedder()
    registry = await platform.model_registry()
    return SearchServicer(
        Searcher(index, await lexical_index(platform), embedder),
        index,
        await record_indexer(platform),
        platform.db,
        registry.default_name,
    )


async def register(platform: Platform, server: grpc.aio.Server) -> None:
    search_service_pb2_grpc.add_SearchServiceServicer_to_server(
        await search_servicer(platform), server
    )
