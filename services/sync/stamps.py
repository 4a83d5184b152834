"""When, by the client's clock, each version written through sync was made.

Last-writer-wins compares an incoming edit's client time with the client
time of the write that set the server's value, ties broken by (actor,
client_id). The record itself keeps only the server's write time, so the sync
service notes a stamp (client time, client id) for every version it writes:
in Redis in the mesh (every replica sees them), in the supervisor's hub for the workers of
one `hacs serve --workers N`, in process memory otherwise.
A stamp also names the offline changes (client id, change id) the version
applied, which is what makes a retried PushChanges idempotent. Stamps are kept
for a day; a value written without one (a plain record write, or an old one)
compares by its write time and an empty client id.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import redis.asyncio as redis_asyncio
from redis.exceptions import RedisError

from services.common.runtime.relay import RelayClient

log = logging.getLogger(__name__)

TTL_SECONDS = 24 * 3600


@dataclass(frozen=True)
class Stamp:
    time: datetime
    client_id: str
    # The offline changes (PushChanges change_id) this version applied: a retried
    # push finds its changes here and reports them applied instead of redoing them.
    change_ids: tuple[str, ...] = ()

    def applied(self, client_id: str, change_id: str) -> bool:
        return bool(client_id) and self.client_id == client_id and change_id in self.change_ids

    def encode(self) -> str:
        return json.dumps([self.time.isoformat(), self.client_id, list(self.change_ids)])

    @classmethod
    def decode(cls, text: str) -> Stamp | None:
        try:
            when, client_id, change_ids = json.loads(text)
            return cls(datetime.fromisoformat(when), str(client_id), tuple(map(str, change_ids)))
        except (ValueError, TypeError):
            return None


class WriteStamps(Protocol):
    async def get(self, record: str, versions: list[int]) -> dict[int, Stamp]: ...

    async def put(self, record: str, version: int, stamp: Stamp) -> None: ...


class LocalWriteStamps:
    """The newest stamps, in this process (the embedded mode has one process)."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._capacity = capacity
        self._stamps: OrderedDict[tuple[str, int], Stamp] = OrderedDict()

    async def get(self, record: str, versions: list[int]) -> dict[int, Stamp]:
        return {v: s for v in versions if (s := self._stamps.get((record, v))) is not None}

    async def put(self, record: str, version: int, stamp: Stamp) -> None:
        self._stamps[(record, version)] = stamp
        self._stamps.move_to_end((record, version))
        while len(self._stamps) > self._capacity:
            self._stamps.popitem(last=False)


class SharedWriteStamps:
    """Stamps held where every process sees them, with this process's newest ones at hand:
    a read asks the shared place only for the versions not known here, and trouble there
    degrades to the local copy (the decision then uses write times for versions made
    elsewhere, which is still deterministic)."""

    def __init__(self) -> None:
        self._local = LocalWriteStamps()

    async def get(self, record: str, versions: list[int]) -> dict[int, Stamp]:
        found = await self._local.get(record, versions)
        missing = [v for v in versions if v not in found]
        if not missing:
            return found
        values = await self._fetch(_key(record), [str(v) for v in missing])
        for version in missing:
            text = values.get(str(version))
            stamp = Stamp.decode(text) if text else None
            if stamp is not None:
                found[version] = stamp
        return found

    async def put(self, record: str, version: int, stamp: Stamp) -> None:
        await self._local.put(record, version, stamp)
        await self._store(_key(record), str(version), stamp.encode())

    async def _fetch(self, key: str, fields: list[str]) -> dict[str, str]:
        raise NotImplementedError

    async def _store(self, key: str, field: str, value: str) -> None:
        raise NotImplementedError


class RedisWriteStamps(SharedWriteStamps):
    """One Redis hash per record (version -> stamp), expiring a day after its last write."""

    def __init__(self, url: str, *, timeout_seconds: float = 0.5) -> None:
        super().__init__()
        self._client = redis_asyncio.from_url(url, decode_responses=True)
        self._timeout = timeout_seconds

    async def _fetch(self, key: str, fields: list[str]) -> dict[str, str]:
        try:
            values: Any = await asyncio.wait_for(self._client.hmget(key, fields), self._timeout)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("could not read write stamps from Redis: %r", exc)
            return {}
        return {f: v for f, v in zip(fields, values or (), strict=False) if v}

    async def _store(self, key: str, field: str, value: str) -> None:
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.hset(key, field, value)
                pipe.expire(key, TTL_SECONDS)
                await asyncio.wait_for(pipe.execute(), self._timeout)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("could not write a write stamp to Redis: %r", exc)

    async def close(self) -> None:
        await self._client.aclose()


class HubWriteStamps(SharedWriteStamps):
    """Stamps shared by the workers of one `hacs serve --workers N`, held by the supervisor's
    hub (services/common/runtime/relay.py) as Redis holds them in the mesh; a hub that does
    not answer in time gives nothing, as Redis trouble does."""

    def __init__(self, relay: RelayClient) -> None:
        super().__init__()
        self._relay = relay

    async def _fetch(self, key: str, fields: list[str]) -> dict[str, str]:
        return await self._relay.get(key, fields)

    async def _store(self, key: str, field: str, value: str) -> None:
        self._relay.put(key, field, value, TTL_SECONDS)


def _key(record: str) -> str:
    return f"hacs:sync:stamps:{record}"
