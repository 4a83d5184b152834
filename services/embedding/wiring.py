"""Builds the embedding servicer: the registry is shared with search and RAG in-process."""

from __future__ import annotations

import grpc
from hacs.embedding.v1 import embedding_service_pb2_grpc

from services.common.runtime.platform import Platform
from services.embedding.service import EmbeddingDomain
from services.embedding.servicer import EmbeddingServicer


async def embedding_servicer(platform: Platform) -> EmbeddingServicer:
    registry = await platform.model_registry()
    return EmbeddingServicer(EmbeddingDomain(registry))


async def register(platform: Platform, server: grpc.aio.Server) -> None:
    embedding_service_pb2_grpc.add_EmbeddingServiceServicer_to_server(
        await embedding_servicer(platform), server
    )
