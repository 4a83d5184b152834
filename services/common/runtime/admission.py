"""Admission: does the registry still stand behind a verified token?

A token is signed for up to an hour; the signature alone cannot say that its
actor was deleted, its API key revoked, its permissions narrowed or its
tenant suspended since. So every call, after the signature check, asks the
registry (tenant, actor, API key) about the caller, and every streamed
response asks again:

- tenant suspended or gone -> PERMISSION_DENIED (as before);
- actor deactivated or gone, or the token's API key revoked -> UNAUTHENTICATED;
- the actor's role or permissions changed -> the call runs with the token's
  permissions narrowed to what the actor holds now (never widened), and the
  actor's current role.

What the registry said is remembered per process for at most
`HACS_REVOCATION_SECONDS` (5 s by default), so a change reaches every
replica within that bound even when nothing announces it. The tenant service
announces each change (`announce`): the process that made it forgets at once,
and, in the mesh, every other replica hears it over Redis within
milliseconds (`RedisAnnouncements`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field, replace
from typing import Generic, Protocol, TypeVar

from services.common.caller import Caller
from services.common.errors import Forbidden, Unauthenticated
from services.common.permissions import narrowed

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

REVOKED = "token revoked: {why}; exchange a current API key for a new token"


@dataclass(frozen=True)
class TenantStanding:
    active: bool
    calls_per_minute: int
    max_patients: int = 0
    # Token quotas of the plan or the tenant's overrides (0: none); runtime/quotas.py.
    embedding_tokens_per_month: int = 0
    llm_tokens_per_day: int = 0


@dataclass(frozen=True)
class Credentials:
    """What the registry says now about the actor, and API key, a token was issued to."""

    actor_active: bool
    role: str
    permissions: frozenset[str]
    # The token's API key is revoked or gone (False when the token names no key).
    key_revoked: bool = False
    # Token permission sets -> what is left of them under `permissions` (computed once).
    _narrowed: dict[frozenset[str], frozenset[str]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def narrow(self, granted: frozenset[str]) -> frozenset[str]:
        if granted <= self.permissions:  # the usual case: nothing was taken away
            return granted
        if granted not in self._narrowed:
            self._narrowed[granted] = narrowed(granted, self.permissions)
        return self._narrowed[granted]


class Registry(Protocol):
    """Reads of the tenant registry (implemented by the kernel's tenancy module)."""

    async def tenant(self, tenant_id: str) -> TenantStanding | None: ...

    async def credentials(
        self, tenant_id: str, actor_id: str, key_id: str
    ) -> Credentials | None: ...


class Announcements(Protocol):
    """Tells the other replicas that a tenant's standing or credentials changed."""

    async def publish(self, tenant_id: str) -> None: ...

    def listen(self, forget: Callable[[str], None]) -> None: ...

    async def close(self) -> None: ...


class InProcess:
    """One process: nothing to tell anyone else."""

    async def publish(self, tenant_id: str) -> None:
        return None

    def listen(self, forget: Callable[[str], None]) -> None:
        return None

    async def close(self) -> None:
        return None


class Remembered(Generic[K, V]):
    """Values read from the registry, each trusted for `seconds`; concurrent misses on the
    same key share one read, and every key of a tenant can be dropped at once."""

    def __init__(self, seconds: float, *, capacity: int = 100_000) -> None:
        self._seconds = seconds
        self._capacity = capacity
        self._values: dict[K, tuple[float, V]] = {}
        self._reads: dict[K, asyncio.Future[V]] = {}

    async def get(self, key: K, read: Callable[[], Awaitable[V]]) -> V:
        known = self._values.get(key)
        now = time.monotonic()
        if known is not None and now - known[0] < self._seconds:
            return known[1]
        pending = self._reads.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._reads[key] = future
        try:
            value = await read()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody else must
            raise
        finally:
            self._reads.pop(key, None)
        future.set_result(value)
        if len(self._values) >= self._capacity:
            self._values.clear()  # a flood of distinct keys must not grow without bound
        self._values[key] = (now, value)
        return value

    def forget(self, matches: Callable[[K], bool]) -> None:
        for key in [k for k in self._values if matches(k)]:
            del self._values[key]


class Admission:
    def __init__(
        self,
        registry: Registry,
        *,
        bound_seconds: float,
        announcements: Announcements | None = None,
    ) -> None:
        self._registry = registry
        self._tenants: Remembered[str, TenantStanding | None] = Remembered(bound_seconds)
        self._credentials: Remembered[tuple[str, str, str], Credentials | None] = Remembered(
            bound_seconds
        )
        self._announcements = announcements or InProcess()
        self._announcements.listen(self.forget)

    async def standing(self, tenant_id: str) -> TenantStanding | None:
        return await self._tenants.get(tenant_id, lambda: self._registry.tenant(tenant_id))

    async def admit(self, caller: Caller) -> tuple[Caller, TenantStanding]:
        """The caller as the registry allows it now, and its tenant's standing; or raise."""
        tenant_id = caller.tenant_id
        standing = await self.standing(tenant_id)
        if standing is None or not standing.active:
            raise Forbidden(f"tenant {tenant_id!r} is suspended or does not exist")
        key = (tenant_id, caller.actor_id, caller.key_id)
        credentials = await self._credentials.get(key, lambda: self._registry.credentials(*key))
        if credentials is None or not credentials.actor_active:
            raise Unauthenticated(REVOKED.format(why=f"{caller.actor_name} is deactivated"))
        if credentials.key_revoked:
            raise Unauthenticated(
                REVOKED.format(why=f"the API key it was issued for ({caller.key_id}) is revoked")
            )
        permissions = credentials.narrow(caller.permissions)
        if permissions is not caller.permissions or credentials.role != caller.role:
            caller = replace(caller, permissions=permissions, role=credentials.role)
        return caller, standing

    def forget(self, tenant_id: str) -> None:
        """Read the tenant's standing and credentials again on their next use."""
        self._tenants.forget(lambda t: t == tenant_id)
        self._credentials.forget(lambda k: k[0] == tenant_id)

    async def announce(self, tenant_id: str) -> None:
        """The tenant service changed something about the tenant: forget it here, tell the rest."""
        self.forget(tenant_id)
        await self._announcements.publish(tenant_id)

    async def close(self) -> None:
        await self._announcements.close()


async def still_admitted(admission: Admission, started: Caller) -> None:
    """Before a streamed response: the stream's caller must still be admitted, with no less
    than it started with (a stream cannot switch to narrower permissions half-way)."""
    now, _ = await admission.admit(started)
    if now.role != started.role or now.permissions != started.permissions:
        raise Forbidden(
            f"the role or permissions of {started.actor_name} changed while this stream was "
            "open; open it again",
        )
