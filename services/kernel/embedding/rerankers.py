"""Re-ranking through the registry's cross-encoders: the port RAG and EmbeddingService share.

A cross-encoder is loaded on its first use and kept for the life of the
process. Permission checks stay with the callers (EmbeddingService's Rerank,
RAG's Retrieve), which know who is asking and why.
"""

from __future__ import annotations

import asyncio

import numpy as np

from services.common.errors import Conflict, FieldViolation, Invalid
from services.kernel.embedding.registry import ModelEntry, ModelRegistry
from services.kernel.embedding.reranker import CrossEncoder


class Rerankers:
    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry
        self._loaded: dict[str, CrossEncoder] = {}

    def available(self) -> bool:
        """Whether any re-ranker is registered."""
        return any(e.config.kind == "reranker" for e in self.registry.entries())

    async def score(
        self, model: str, query: str, passages: list[str]
    ) -> tuple[ModelEntry, np.ndarray, list[bool]]:
        """(the model used, one logit per passage, which passages were cut to fit)."""
        entry = self._entry(model)
        encoder = self._loaded.get(entry.config.name)
        if encoder is None:
            encoder = await asyncio.to_thread(CrossEncoder, entry.config, "auto")
            self._loaded[entry.config.name] = encoder
            entry.device, entry.dtype, entry.state = encoder.device, encoder.dtype, "ready"
        scores, truncated = await asyncio.to_thread(encoder.score, query, passages)
        return entry, scores, truncated

    def _entry(self, model: str) -> ModelEntry:
        if model:
            entry = self.registry.get(model)
            if entry.config.kind != "reranker":
                raise Invalid(
                    FieldViolation("model", f"{model} is an embedding model, not a re-ranker")
                )
            return entry
        rerankers = [e for e in self.registry.entries() if e.config.kind == "reranker"]
        if not rerankers:
            raise Conflict(
                "no re-ranker is registered; register a local cross-encoder with RegisterModel "
                "(kind MODEL_KIND_RERANKER)",
                subject="models",
            )
        return next((e for e in rerankers if e.is_default), rerankers[0])
