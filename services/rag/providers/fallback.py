"""Trying providers in order: retries on transient errors, fallback on failure.

For each provider: up to `max_retries` more tries on a retryable failure
(HTTP 429, 5xx, overload, connection refused) that happens before any text
arrived, with exponential backoff; a timeout is not retried on the same
provider (it would double the wait) but falls back to the next one at once.
A failure after text was streamed emits a Reset (the caller discards the
partial text) and the next provider starts over. Every call is recorded as
an Attempt, with the tokens the provider reported for it (a failed call may
have consumed, and be billed for, some: the answerer meters them all).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from services.rag.providers.base import CompletionRequest, Provider, ProviderError

log = logging.getLogger(__name__)
BACKOFF_SECONDS = 0.25


@dataclass(frozen=True)
class Attempt:
    provider: str
    model: str
    outcome: str
    error: str
    seconds: float
    # What the provider reported it used (0 when it reported nothing).
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class Delta:
    text: str


@dataclass(frozen=True)
class Reset:
    reason: str


@dataclass(frozen=True)
class Completed:
    provider: str
    model: str
    text: str
    prompt_tokens: int
    completion_tokens: int


async def generate(
    providers: Sequence[Provider], request: CompletionRequest
) -> AsyncIterator[Delta | Reset | Attempt | Completed]:
    """Stream from the first provider that succeeds; ends with Completed, or without one."""
    for provider in providers:
        for attempt in range(provider.max_retries + 1):
            started = time.monotonic()
            parts: list[str] = []
            prompt_tokens = completion_tokens = 0
            try:
                async for event in provider.stream(request):
                    if event.text:
                        parts.append(event.text)
                        yield Delta(event.text)
                    prompt_tokens = event.prompt_tokens or prompt_tokens
                    completion_tokens = event.completion_tokens or completion_tokens
            except ProviderError as exc:
                elapsed = time.monotonic() - started
                log.warning("provider %s failed (%s): %s", provider.name, exc.outcome, exc.message)
                yield Attempt(
                    provider.name,
                    provider.model,
                    exc.outcome,
                    exc.message,
                    elapsed,
                    prompt_tokens,
                    completion_tokens,
                )
                if parts:
                    yield Reset(f"provider {provider.name} failed mid-answer: {exc.message}")
                    break
                if not exc.retryable or attempt == provider.max_retries:
                    break
                await asyncio.sleep(BACKOFF_SECONDS * 2**attempt)
                continue
            yield Attempt(
                provider.name,
                provider.model,
                "ok",
                "",
                time.monotonic() - started,
                prompt_tokens,
                completion_tokens,
            )
            yield Completed(
                provider.name, provider.model, "".join(parts), prompt_tokens, completion_tokens
            )
            return
