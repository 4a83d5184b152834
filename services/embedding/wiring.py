"""Builds the embedding servicer over the kernel's model registry (shared in-process)."""

from __future__ import annotations

import grpc
from hacs.embedding.v1 import embedding_service_pb2_grpc

from services.embedding.service import EmbeddingDomain
from services.embedding.servicer import EmbeddingServicer
from services.kernel.modules import Kernel

KERNEL_MODULES = ("models", "rerankers")


async def embedding_servicer(kernel: Kernel) -> EmbeddingServicer:
    return EmbeddingServicer(EmbeddingDomain(await kernel.models(), await kernel.rerankers()))


async def register(kernel: Kernel, server: grpc.aio.Server) -> None:
    embedding_service_pb2_grpc.add_EmbeddingServiceServicer_to_server(
        await embedding_servicer(kernel), server
    )
