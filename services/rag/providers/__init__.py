"""LLM providers behind one small interface (`base.Provider`), built from configuration."""

from __future__ import annotations

from services.rag.providers.anthropic import Anthropic
from services.rag.providers.base import Provider
from services.rag.providers.config import ProviderConfig
from services.rag.providers.http import SharedSession
from services.rag.providers.openai_compatible import OpenAICompatible


def build(configs: list[ProviderConfig], session: SharedSession) -> list[Provider]:
    """One provider per configured entry, in the configured order."""
    built: list[Provider] = []
    for config in configs:
        if config.kind == "anthropic":
            built.append(Anthropic(config, session))
        else:
            built.append(OpenAICompatible(config, session))
    return built
