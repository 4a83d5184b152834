"""The port other services embed text through: in-process or over gRPC.

In all-in-one mode search and RAG call the registry in this process (same
batcher, same model); in the mesh they call the embedding pods'
EmbeddingService (HACS_EMBEDDING_URL), so GPU nodes serve everyone. Over
gRPC the tenant the tokens are for travels in a header the embedding pods
believe from platform callers only (usage_attribution.py); the tenant's quota
is checked here, before the call, since those pods do not check on-behalf calls.
"""

from __future__ import annotations

from typing import Protocol

import grpc
import numpy as np
from hacs.client import HacsClient
from hacs.embedding.v1 import embedding_service_pb2 as pb

from services.common.errors import Unavailable
from services.common.runtime.quotas import EMBEDDING_TOKENS_PER_MONTH, UsageQuotas
from services.common.usage_attribution import attribution, outgoing_metadata
from services.kernel.embedding.registry import ModelRegistry


class Embedder(Protocol):
    async def embed(self, texts: list[str], *, query: bool, model: str = "") -> np.ndarray: ...


class LocalEmbedder:
    def __init__(self, registry: ModelRegistry) -> None:
        self._registry = registry

    async def embed(self, texts: list[str], *, query: bool, model: str = "") -> np.ndarray:
        entry, batcher = await self._registry.batcher(model)
        prefix = entry.config.query_prefix if query else entry.config.document_prefix
        result = await batcher.embed(
            [prefix + t for t in texts],
            max_length=entry.config.max_length,
            normalize=entry.config.normalize,
        )
        return result.vectors


class RemoteEmbedder:
    """EmbeddingService over gRPC, as the platform's own service actor.

    The embedding pods authenticate every call like any other; this side
    holds a service API key (HACS_SERVICE_API_KEY, an actor of the platform
    tenant with read:embedding) and lets the SDK keep its token fresh.
    """

    def __init__(
        self,
        target: str,
        api_key: str,
        *,
        token_target: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        quotas: UsageQuotas | None = None,
    ) -> None:
        self._quotas = quotas
        # The token comes from the tenant pods (HACS_TENANT_URL); the embedding pods host
        # no TenantService. With HACS_TLS=on, `credentials` verify the embedding pods and
        # present this process's certificate (mTLS).
        self._client = HacsClient(
            target, api_key=api_key, token_target=token_target, credentials=credentials
        )

    async def embed(self, texts: list[str], *, query: bool, model: str = "") -> np.ndarray:
        payer = attribution()
        if self._quotas is not None and payer.own_call:
            await self._quotas.check(payer.tenant_id, EMBEDDING_TOKENS_PER_MONTH)
        request = pb.EmbedRequest(
            model=model,
            texts=texts,
            options=pb.EmbedOptions(
                input_type=pb.INPUT_TYPE_QUERY if query else pb.INPUT_TYPE_DOCUMENT
            ),
        )
        try:
            reply = await self._client.embedding.Embed(
                request, timeout=30, metadata=outgoing_metadata()
            )
        except grpc.aio.AioRpcError as exc:
            raise Unavailable(f"embedding service: {exc.code().name} {exc.details()}") from exc
        return np.array([list(e.values) for e in reply.embeddings], dtype=np.float32)

    async def close(self) -> None:
        await self._client.close()
