"""The embedding domain: who may embed, with which model, and how results are reported."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np

from services.common.caller import Caller
from services.common.errors import Conflict, FieldViolation, Invalid
from services.kernel.embedding.encoder import Encoded
from services.kernel.embedding.registry import ModelEntry, ModelRegistry
from services.kernel.embedding.reranker import CrossEncoder

MAX_TEXTS = 2048
MAX_TEXT_CHARS = 100_000


@dataclass(frozen=True)
class EmbedOptions:
    normalize: bool | None = None
    reject_truncation: bool = False
    query: bool = False
    max_length: int = 0


@dataclass(frozen=True)
class EmbedResult:
    entry: ModelEntry
    encoded: Encoded
    normalized: bool


class EmbeddingDomain:
    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry
        self._rerankers: dict[str, CrossEncoder] = {}

    async def embed(
        self, caller: Caller, model: str, texts: list[str], options: EmbedOptions
    ) -> EmbedResult:
        caller.require("read:embedding", model or self.registry.default_name)
        entry, batcher = await self.registry.batcher(model)
        config = entry.config
        max_length = min(options.max_length or config.max_length, config.max_length)
        prefix = config.query_prefix if options.query else config.document_prefix
        prefixed = [prefix + t for t in texts]
        if options.reject_truncation:
            counts = await asyncio.to_thread(batcher.encoder.count_tokens, prefixed)
            too_long = [i for i, n in enumerate(counts) if n > max_length]
            if too_long:
                raise Invalid(
                    [
                        FieldViolation(
                            f"texts[{i}]", f"has {counts[i]} tokens; the model takes {max_length}"
                        )
                        for i in too_long[:20]
                    ]
                )
        normalize = config.normalize if options.normalize is None else options.normalize
        encoded = await batcher.embed(prefixed, max_length=max_length, normalize=normalize)
        return EmbedResult(entry, encoded, normalize)

    async def rerank(
        self, caller: Caller, model: str, query: str, passages: list[str]
    ) -> tuple[ModelEntry, np.ndarray, list[bool]]:
        caller.require("read:embedding", model or "models/(default re-ranker)")
        entry = self._reranker_entry(model)
        encoder = self._rerankers.get(entry.config.name)
        if encoder is None:
            encoder = await asyncio.to_thread(CrossEncoder, entry.config, "auto")
            self._rerankers[entry.config.name] = encoder
            entry.device, entry.dtype, entry.state = encoder.device, encoder.dtype, "ready"
        scores, truncated = await asyncio.to_thread(encoder.score, query, passages)
        return entry, scores, truncated

    def _reranker_entry(self, model: str) -> ModelEntry:
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
