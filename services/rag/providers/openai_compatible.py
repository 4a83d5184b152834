"""OpenAI-compatible chat completions (OpenAI, Azure OpenAI, vLLM, Ollama, LiteLLM…).

POST {url} with `stream: true`; the answer arrives as server-sent events
`data: {"choices": [{"delta": {"content": "…"}}]}`, usage in a last chunk
(`stream_options.include_usage`), then `data: [DONE]`. Authentication is a
bearer token (OpenAI, vLLM), an `api-key` header (Azure) or none (a local
Ollama).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from services.rag.providers.base import CompletionRequest, ProviderError, StreamEvent
from services.rag.providers.config import ProviderConfig
from services.rag.providers.http import SharedSession, json_data, post_stream, sse_events


class OpenAICompatible:
    def __init__(self, config: ProviderConfig, session: SharedSession) -> None:
        self.config = config
        self.name = config.name
        self.model = config.model
        self.max_retries = config.max_retries
        self.timeout_seconds = config.timeout_seconds
        self._session = session

    def _headers(self) -> dict[str, str]:
        key = self.config.api_key
        if self.config.auth == "api-key" and key:
            return {"api-key": key}
        if self.config.auth == "bearer" and key:
            return {"authorization": f"Bearer {key}"}
        return {}

    async def stream(self, request: CompletionRequest) -> AsyncIterator[StreamEvent]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": request.system},
                {"role": "user", "content": request.user},
            ],
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        session = await self._session.get()
        async with post_stream(
            session,
            self.name,
            self.config.url,
            self._headers(),
            body,
            timeout_seconds=self.config.timeout_seconds,
            total_timeout_seconds=self.config.total_timeout_seconds,
            secret=self.config.api_key,
        ) as response:
            async for _, data in sse_events(response):
                if data.strip() == "[DONE]":
                    return
                event = json_data(self.name, data)
                if "error" in event:
                    message = str((event.get("error") or {}).get("message", "error"))[:300]
                    raise ProviderError("error", f"{self.name} stream error: {message}")
                for choice in event.get("choices") or []:
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        yield StreamEvent(text=str(text))
                usage = event.get("usage")
                if usage:
                    yield StreamEvent(
                        prompt_tokens=int(usage.get("prompt_tokens") or 0),
                        completion_tokens=int(usage.get("completion_tokens") or 0),
                    )
        raise ProviderError("error", f"{self.name} ended the stream without [DONE]")
