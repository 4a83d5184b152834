"""Registry changes announced to every replica over Redis pub/sub.

When the tenant service suspends a tenant, deletes or edits an actor, or
revokes an API key, it publishes the tenant id on `hacs:registry`; each
replica's admission forgets what it remembered about that tenant and reads
the registry again on the next call. Pub/sub, not a stream: a missed
announcement costs nothing but time, since admission trusts what it read for
at most HACS_REVOCATION_SECONDS anyway. Publishing never fails the change
(it has committed): an unreachable Redis is logged, and the bound still holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as redis_asyncio
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

CHANNEL = "hacs:registry"


class RedisAnnouncements:
    def __init__(self, url: str, *, channel: str = CHANNEL, timeout_seconds: float = 1.0) -> None:
        self._url = url
        self._channel = channel
        self._timeout = timeout_seconds
        self._client = redis_asyncio.from_url(url, decode_responses=True)
        self._listener: asyncio.Task[None] | None = None
        self._last_warning = 0.0

    async def publish(self, tenant_id: str) -> None:
        try:
            await asyncio.wait_for(self._client.publish(self._channel, tenant_id), self._timeout)
        except (RedisError, OSError, TimeoutError) as exc:
            self._warn(f"could not announce a registry change to other replicas ({exc!r})")

    def listen(self, forget: Callable[[str], None]) -> None:
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen(forget), name="registry-news")

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        await self._client.aclose()

    async def _listen(self, forget: Callable[[str], None]) -> None:
        backoff = 0.1
        while True:
            pubsub: Any = self._client.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                backoff = 0.1
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        forget(str(message["data"]))
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self._warn(f"listening for registry changes failed ({exc!r}); retrying")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_warning > 30:  # one line per outage
            self._last_warning = now
            log.warning(
                "%s (%s); a change reaches them within HACS_REVOCATION_SECONDS instead",
                message,
                self._url.rsplit("@", 1)[-1],
            )
