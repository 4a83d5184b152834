"""Builds the embedding servicer: the registry is shared with search and RAG in-process."""

from __future__ import annotations

from services.common.runtime.platform import Platform
from services.embedding.service import EmbeddingDomain
from services.embedding.servicer import EmbeddingServicer


async def embedding_servicer(platform: Platform) -> EmbeddingServicer:
    registry = await platform.model_registry()
    return EmbeddingServicer(EmbeddingDomain(registry))
