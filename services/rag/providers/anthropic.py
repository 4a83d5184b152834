"""Anthropic Messages API, streamed.

POST {url} (https://api.anthropic.com/v1/messages) with `x-api-key` and
`anthropic-version`; the answer arrives as server-sent events:
`message_start` (input tokens), `content_block_delta` with `text_delta`s,
`message_delta` (output tokens), `message_stop`; `error` events carry
overload and other failures mid-stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from services.rag.providers.base import CompletionRequest, ProviderError, StreamEvent
from services.rag.providers.config import ProviderConfig
from services.rag.providers.http import SharedSession, json_data, post_stream, sse_events

API_VERSION = "2023-06-01"


class Anthropic:
    def __init__(self, config: ProviderConfig, session: SharedSession) -> None:
        self.config = config
        self.name = config.name
        self.model = config.model
        self.max_retries = config.max_retries
        self.timeout_seconds = config.timeout_seconds
        self._session = session

    async def stream(self, request: CompletionRequest) -> AsyncIterator[StreamEvent]:
        body: dict[str, Any] = {
            "model": self.model,
            "system": request.system,
            "messages": [{"role": "user", "content": request.user}],
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "stream": True,
        }
        headers = {"anthropic-version": API_VERSION}
        if self.config.api_key:
            headers["x-api-key"] = self.config.api_key
        session = await self._session.get()
        async with post_stream(
            session,
            self.name,
            self.config.url,
            headers,
            body,
            timeout_seconds=self.config.timeout_seconds,
            total_timeout_seconds=self.config.total_timeout_seconds,
            secret=self.config.api_key,
        ) as response:
            async for event, data in sse_events(response):
                payload = json_data(self.name, data)
                kind = payload.get("type", event)
                if kind == "message_start":
                    usage = (payload.get("message") or {}).get("usage") or {}
                    yield StreamEvent(prompt_tokens=int(usage.get("input_tokens") or 0))
                elif kind == "content_block_delta":
                    delta = payload.get("delta") or {}
                    if delta.get("type") == "text_delta" and delta.get("text"):
                        yield StreamEvent(text=str(delta["text"]))
                elif kind == "message_delta":
                    usage = payload.get("usage") or {}
                    yield StreamEvent(completion_tokens=int(usage.get("output_tokens") or 0))
                elif kind == "message_stop":
                    return
                elif kind == "error":
                    error = payload.get("error") or {}
                    overloaded = error.get("type") == "overloaded_error"
                    raise ProviderError(
                        "unavailable" if overloaded else "error",
                        f"{self.name} stream error: {str(error.get('message', 'error'))[:300]}",
                        retryable=overloaded,
                    )
        raise ProviderError("error", f"{self.name} ended the stream without message_stop")
