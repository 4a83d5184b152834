"""Counting tokens the way the knowledge base's embedding model will.

Chunk sizes are in the embedding model's tokens, so a chunk fits the model
(all-MiniLM-L6-v2 reads 256 tokens and silently drops the rest). The
tokenizer is loaded from the model's local directory, tokenizer files only
(no weights), once per model. When the directory is not on this machine
(a mesh pod whose embedding model lives on the GPU nodes only), a word-piece
estimate is used instead and a warning says so.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import threading
from pathlib import Path
from typing import Protocol

from services.kernel.embedding.registry import ModelRegistry

log = logging.getLogger(__name__)

_PIECES = re.compile(r"\w+|[^\w\s]", re.UNICODE)


class TokenCounter(Protocol):
    max_length: int  # the model's input limit, special tokens included

    def count(self, texts: list[str]) -> list[int]:
        """Tokens of each text, without special tokens."""
        ...

    def spans(self, text: str) -> list[tuple[int, int]]:
        """(start, end) character offsets of each token of `text`."""
        ...


class HuggingFaceTokens:
    def __init__(self, path: Path, max_length: int) -> None:
        from transformers import AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.max_length = max_length
        # A fast tokenizer used from several threads at once can fail ("Already borrowed").
        self._lock = threading.Lock()

    def count(self, texts: list[str]) -> list[int]:
        if not texts:
            return []
        with self._lock:
            encoded = self._tokenizer(texts, add_special_tokens=False, truncation=False)
        return [len(ids) for ids in encoded["input_ids"]]

    def spans(self, text: str) -> list[tuple[int, int]]:
        with self._lock:
            encoded = self._tokenizer(
                text, add_special_tokens=False, truncation=False, return_offsets_mapping=True
            )
        return [(int(s), int(e)) for s, e in encoded["offset_mapping"]]


class EstimatedTokens:
    """Words and punctuation, long words counted as several pieces (about 1.3 per word)."""

    def __init__(self, max_length: int) -> None:
        self.max_length = max_length

    def count(self, texts: list[str]) -> list[int]:
        return [len(self.spans(t)) for t in texts]

    def spans(self, text: str) -> list[tuple[int, int]]:
        spans: list[tuple[int, int]] = []
        for match in _PIECES.finditer(text):
            start, end = match.span()
            pieces = max(1, math.ceil((end - start) / 6))
            step = math.ceil((end - start) / pieces)
            spans.extend((s, min(s + step, end)) for s in range(start, end, step))
        return spans


def load_token_counter(path: Path, max_length: int) -> TokenCounter:
    try:
        return HuggingFaceTokens(path, max_length)
    except (OSError, ValueError) as exc:
        log.warning(
            "tokenizer of %s not available (%s); chunk sizes are estimated from words", path, exc
        )
        return EstimatedTokens(max_length)


class TokenCounters:
    """One counter per embedding model, loaded (in a thread) on first use."""

    def __init__(self, registry: ModelRegistry) -> None:
        self._registry = registry
        self._counters: dict[str, TokenCounter] = {}
        self._lock = asyncio.Lock()

    async def get(self, model: str) -> TokenCounter:
        config = self._registry.get(model).config
        async with self._lock:
            if config.name not in self._counters:
                self._counters[config.name] = await asyncio.to_thread(
                    load_token_counter, config.path, config.max_length
                )
        return self._counters[config.name]
