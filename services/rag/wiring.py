"""Builds the RAG servicer; its heavy parts are built on the first call.

The provider configuration is parsed at start (a malformed HACS_LLM_PROVIDERS
stops the process there), but the vector index, the embedding model and the
tokenizer are only opened when a RAG call first needs them, so a process
hosting RAG starts as fast as one that does not. The vector index, the
lexical index and the embedder are the kernel's, shared with search.
"""

from __future__ import annotations

import asyncio

import grpc
from hacs.rag.v1 import rag_service_pb2_grpc

from services.kernel.modules import Kernel
from services.kernel.records.reads import RecordReader
from services.rag import providers
from services.rag.answer import Answerer
from services.rag.documents import Documents
from services.rag.indexing import DocumentIndexer
from services.rag.ingest import Ingest
from services.rag.knowledge_bases import KnowledgeBases
from services.rag.providers.config import ProviderConfig, load_providers
from services.rag.providers.http import SharedSession
from services.rag.retrieval import Retriever
from services.rag.servicer import RagDomain, RagServicer
from services.rag.store import KnowledgeStore
from services.rag.tokens import TokenCounters

KERNEL_MODULES = ("records", "models", "embedder", "rerankers", "vector_index", "lexical_index")


async def document_indexer(kernel: Kernel) -> DocumentIndexer:
    """The knowledge indexer alone (`hacs index backfill` rebuilds knowledge with it)."""
    return DocumentIndexer(
        KnowledgeStore(kernel.platform.db),
        await kernel.vector_index(),
        await kernel.lexical_index(),
        await kernel.embedder(),
        TokenCounters(await kernel.models()),
    )


def rag_servicer(kernel: Kernel, provider_configs: list[ProviderConfig]) -> RagServicer:
    platform = kernel.platform

    async def build() -> RagDomain:
        index = await kernel.vector_index()
        lexical = await kernel.lexical_index()
        embedder = await kernel.embedder()
        registry = await kernel.models()
        store = KnowledgeStore(platform.db)
        knowledge_bases = KnowledgeBases(store, index, lexical, registry)
        indexer = DocumentIndexer(store, index, lexical, embedder, TokenCounters(registry))
        session = SharedSession()
        platform.on_close(session.close)
        retriever = Retriever(
            store,
            knowledge_bases,
            embedder,
            index,
            lexical,
            RecordReader(kernel.record_store()),
            await kernel.rerankers(),
        )
        return RagDomain(
            knowledge_bases=knowledge_bases,
            documents=Documents(store, index, lexical),
            ingest=Ingest(store, indexer, platform.settings.rag_max_document_bytes),
            retriever=retriever,
            answerer=Answerer(
                retriever,
                store,
                providers.build(provider_configs, session),
                meter=platform.metering,
                quotas=platform.quotas,
            ),
        )

    lock = asyncio.Lock()  # two first calls at once must not build two of everything

    async def domain() -> RagDomain:
        async with lock:
            return await platform.shared("rag_domain", build)

    return RagServicer(domain)


async def register(kernel: Kernel, server: grpc.aio.Server) -> None:
    rag_service_pb2_grpc.add_RagServiceServicer_to_server(
        rag_servicer(kernel, load_providers(kernel.platform.settings)), server
    )
