"""What both HTTP providers share: one aiohttp session, timeouts, and SSE reading.

Timeouts: `timeout_seconds` bounds connecting and every wait for the next
bytes of the response (so a stalled stream fails as fast as a dead server);
`total_timeout_seconds` bounds the whole answer.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from services.rag.providers.base import ProviderError, scrub, status_error


@asynccontextmanager
async def post_stream(
    session: aiohttp.ClientSession,
    provider: str,
    url: str,
    headers: dict[str, str],
    body: dict[str, Any],
    *,
    timeout_seconds: float,
    total_timeout_seconds: float,
    secret: str,
) -> AsyncIterator[aiohttp.ClientResponse]:
    """POST `body` as JSON; yield the 200 response, or raise a ProviderError."""
    timeout = aiohttp.ClientTimeout(
        total=total_timeout_seconds, connect=timeout_seconds, sock_read=timeout_seconds
    )
    try:
        async with session.post(url, json=body, headers=headers, timeout=timeout) as response:
            if response.status != 200:
                raise status_error(provider, response.status, await response.text(), secret)
            yield response
    except TimeoutError as exc:
        raise ProviderError("timeout", f"{provider} timed out after {timeout_seconds:g}s") from exc
    except aiohttp.ClientError as exc:
        raise ProviderError(
            "unavailable",
            f"{provider} unreachable: {scrub(exc.__class__.__name__ + ' ' + str(exc), secret)}",
            retryable=True,
        ) from exc


async def sse_events(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, str]]:
    """Server-sent events as (event name, data); 'message' when the event is unnamed."""
    event, data = "message", list[str]()
    async for raw in response.content:
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            key, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if key == "event":
                event = value
            elif key == "data":
                data.append(value)
    if data:
        yield event, "\n".join(data)


def json_data(provider: str, data: str) -> dict[str, Any]:
    try:
        parsed = json.loads(data)
    except ValueError as exc:
        raise ProviderError("error", f"{provider} sent a malformed stream event") from exc
    if not isinstance(parsed, dict):
        raise ProviderError("error", f"{provider} sent a malformed stream event")
    return parsed


class SharedSession:
    """One HTTP connection pool per process, opened on first use."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> aiohttp.ClientSession:
        async with self._lock:
            if self._session is None or self._session.closed:
                self._session = aiohttp.ClientSession()
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
