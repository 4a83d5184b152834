"""The RAG service's own settings, read from the environment once at start.

`HACS_RAG_MAX_DOCUMENT_BYTES` (default 67108864, 64 MiB) bounds one ingested
document; the LLM providers are configured by `HACS_LLM_PROVIDERS` and
friends (providers/config.py). All are documented in docs/rag.md.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from services.rag.providers.config import ProviderConfig, ProviderConfigError, load_providers

DEFAULT_MAX_DOCUMENT_BYTES = 64 << 20


@dataclass(frozen=True)
class RagConfig:
    providers: list[ProviderConfig]
    max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RagConfig:
        env = os.environ if environ is None else environ
        raw = env.get("HACS_RAG_MAX_DOCUMENT_BYTES", "")
        try:
            max_bytes = int(raw) if raw else DEFAULT_MAX_DOCUMENT_BYTES
        except ValueError as exc:
            raise ProviderConfigError(
                f"HACS_RAG_MAX_DOCUMENT_BYTES must be a whole number, not {raw!r}"
            ) from exc
        if max_bytes <= 0:
            raise ProviderConfigError("HACS_RAG_MAX_DOCUMENT_BYTES must be positive")
        return cls(load_providers(env), max_bytes)
