"""The embedding domain: who may embed, with which model, and how results are reported."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np

from services.common.caller import Caller
from services.common.errors import FieldViolation, Invalid
from services.kernel.embedding.encoder import Encoded
from services.kernel.embedding.registry import ModelEntry, ModelRegistry
from services.kernel.embedding.rerankers import Rerankers

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
    def __init__(self, registry: ModelRegistry, rerankers: Rerankers) -> None:
        self.registry = registry
        self.rerankers = rerankers

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
        return await self.rerankers.score(model, query, passages)
