"""Builds the RAG servicer; its heavy parts are built on the first call.

Configuration is read at start (a malformed HACS_LLM_PROVIDERS stops the
process there), but the vector index, the embedding model and the tokenizer
are only opened when a RAG call first needs them, so a process hosting RAG
starts as fast as one that does not. The vector index, the lexical index
and the embedder are the process-wide ones search uses.
"""

from __future__ import annotations

import asyncio

import grpc
from hacs.rag.v1 import rag_service_pb2_grpc

from services.common.runtime.platform import Platform
from services.embedding.service import EmbeddingDomain
from services.kernel.records.reads import RecordReader
from services.kernel.records.store import RecordStore
from services.rag import providers
from services.rag.answer import Answerer
from services.rag.config import RagConfig
from services.rag.documents import Documents
from services.rag.indexing import DocumentIndexer
from services.rag.ingest import Ingest
from services.rag.knowledge_bases import KnowledgeBases
from services.rag.providers.http import SharedSession
from services.rag.retrieval import Retriever
from services.rag.servicer import RagDomain, RagServicer
from services.rag.store import KnowledgeStore
from services.rag.tokens import TokenCounters
from services.search.wiring import lexical_index, vector_index


def rag_servicer(platform: Platform, config: RagConfig) -> RagServicer:
    async def build() -> RagDomain:
        index = await vector_index(platform)
        lexical = await lexical_index(platform)
        embedder = await platform.embedder()
        registry = await platform.model_registry()
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
            RecordReader(RecordStore(platform.db)),
            EmbeddingDomain(registry),
        )
        return RagDomain(
            knowledge_bases=knowledge_bases,
            documents=Documents(store, index, lexical),
            ingest=Ingest(store, indexer, config.max_document_bytes),
            retriever=retriever,
            answerer=Answerer(retriever, store, providers.build(config.providers, session)),
        )

    lock = asyncio.Lock()  # two first calls at once must not build two of everything

    async def domain() -> RagDomain:
        async with lock:
            return await platform.shared("rag_domain", build)

    return RagServicer(domain)


async def register(platform: Platform, server: grpc.aio.Server) -> None:
    rag_service_pb2_grpc.add_RagServiceServicer_to_server(
        rag_servicer(platform, RagConfig.from_env()), server
    )
