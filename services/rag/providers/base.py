"""The one small interface every LLM provider implements, and its errors.

A provider streams a completion: text deltas as they arrive, and token
usage when the provider reports it. Failures are `ProviderError`s with an
outcome the fallback logic understands ("timeout", "rate_limited",
"unavailable", "error") and a message that never contains a credential.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

OUTCOMES = ("ok", "timeout", "error", "unavailable", "rate_limited")


@dataclass(frozen=True)
class CompletionRequest:
    system: str
    user: str
    max_tokens: int = 1024
    temperature: float = 0.0


@dataclass(frozen=True)
class StreamEvent:
    """A piece of the answer, or usage counts (either may be empty/None)."""

    text: str = ""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class ProviderError(Exception):
    def __init__(self, outcome: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.message = message
        self.retryable = retryable


class Provider(Protocol):
    name: str  # e.g. "openai", "anthropic", "local-vllm"
    model: str
    max_retries: int
    timeout_seconds: float

    def stream(self, request: CompletionRequest) -> AsyncIterator[StreamEvent]:
        """Deltas of the completion; raises ProviderError."""
        ...


def scrub(text: str, secret: str) -> str:
    """An error text safe to log and return: the credential replaced, the length bounded."""
    if secret:
        text = text.replace(secret, "***")
    return text[:300]


def status_error(provider: str, status: int, body: str, secret: str) -> ProviderError:
    """An HTTP error status as a ProviderError (429 and 5xx may be retried)."""
    detail = scrub(body.strip().replace("\n", " "), secret)
    message = f"{provider} answered HTTP {status}: {detail}"
    if status == 429:
        return ProviderError("rate_limited", message, retryable=True)
    if status in (500, 502, 503, 504, 529):
        return ProviderError("unavailable", message, retryable=True)
    return ProviderError("error", message)
