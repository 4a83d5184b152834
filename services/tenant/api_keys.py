"""API keys: long-lived secrets an actor exchanges for short-lived tokens.

Format: `hk_<tenant>_<key id>_<secret>`. The tenant in the key lets the
token endpoint open a transaction scoped to that tenant (row-level security)
before it knows anything else; the key id finds the row; only the SHA-256 of
the whole key is stored, compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from services.common.caller import Caller
from services.common.db.base import utcnow
from services.common.errors import Forbidden, NotFound, QuotaExceeded, QuotaViolation
from services.common.pagination import decode_page_token, take_page
from services.tenant.models import ApiKey
from services.tenant.store import TenantStore, TenantTx

PREFIX = "hk"
MAX_LIVE_KEYS_PER_ACTOR = 20


@dataclass(frozen=True)
class ParsedKey:
    tenant_id: str
    key_id: str
    full: str


def new_secret(tenant_id: str) -> tuple[str, str]:
    key_id = secrets.token_hex(6)
    return key_id, f"{PREFIX}_{tenant_id}_{key_id}_{secrets.token_urlsafe(32)}"


def hash_key(full_key: str) -> str:
    return hashlib.sha256(full_key.encode()).hexdigest()


def matches(full_key: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_key(full_key), stored_hash)


def parse_key(full_key: str) -> ParsedKey | None:
    parts = full_key.strip().split("_", 3)
    if len(parts) != 4 or parts[0] != PREFIX or not all(parts):
        return None
    return ParsedKey(tenant_id=parts[1], key_id=parts[2], full=full_key.strip())


def authorize_key_management(caller: Caller, tenant_id: str, actor_id: str) -> None:
    """Actors manage their own keys; tenant admins manage everyone's in their tenant."""
    if caller.tenant_id != tenant_id:
        raise Forbidden(
            f"tenants/{tenant_id} is not the caller's tenant", permission="admin:tenant"
        )
    if caller.actor_id != actor_id:
        caller.require("admin:tenant", f"tenants/{tenant_id}/actors/{actor_id}")


async def no_announcement(tenant_id: str) -> None:
    """Where nothing else must hear of a registry change (the domain's unit tests)."""


class ApiKeys:
    def __init__(
        self, store: TenantStore, on_change: Callable[[str], Awaitable[None]] = no_announcement
    ) -> None:
        self._store = store
        # Told the tenant id once a revocation is committed: the key's tokens end everywhere.
        self._on_change = on_change

    async def create(
        self,
        caller: Caller,
        tenant_id: str,
        actor_id: str,
        display_name: str,
        expire_time: datetime | None,
    ) -> ApiKey:
        authorize_key_management(caller, tenant_id, actor_id)
        async with self._store.transaction(tenant_id) as tx:
            actor = await tx.get_actor(tenant_id, actor_id)
            if actor is None or not actor.is_active:
                raise NotFound("Actor", f"tenants/{tenant_id}/actors/{actor_id}")
            if await tx.count_live_api_keys(tenant_id, actor_id) >= MAX_LIVE_KEYS_PER_ACTOR:
                raise QuotaExceeded(
                    f"actor {actor.name!r} already has {MAX_LIVE_KEYS_PER_ACTOR} live API keys; "
                    "revoke one first",
                    [QuotaViolation(actor.name, f"{MAX_LIVE_KEYS_PER_ACTOR} live API keys")],
                )
            return await issue_key(tx, tenant_id, actor_id, display_name, expire_time)

    async def list(
        self, caller: Caller, tenant_id: str, actor_id: str, page_size: int, page_token: str
    ) -> tuple[list[ApiKey], str]:
        authorize_key_management(caller, tenant_id, actor_id)
        after = decode_page_token("apiKeys", page_token) if page_token else ""
        async with self._store.transaction(tenant_id) as tx:
            if await tx.get_actor(tenant_id, actor_id) is None:
                raise NotFound("Actor", f"tenants/{tenant_id}/actors/{actor_id}")
            keys = await tx.list_api_keys(tenant_id, actor_id, after_id=after, limit=page_size + 1)
        return take_page(keys, page_size, "apiKeys", lambda k: k.id)

    async def revoke(self, caller: Caller, tenant_id: str, actor_id: str, key_id: str) -> ApiKey:
        authorize_key_management(caller, tenant_id, actor_id)
        name = f"tenants/{tenant_id}/actors/{actor_id}/apiKeys/{key_id}"
        async with self._store.transaction(tenant_id) as tx:
            found = await tx.get_api_key(tenant_id, key_id)
            if found is None or found[0].actor_id != actor_id:
                raise NotFound("ApiKey", name)
            await tx.revoke_api_keys(tenant_id, utcnow(), actor_id=actor_id, key_id=key_id)
            revoked = await tx.get_api_key(tenant_id, key_id)
        assert revoked is not None
        await self._on_change(tenant_id)
        return revoked[0]


async def issue_key(
    tx: TenantTx, tenant_id: str, actor_id: str, display_name: str, expire_time: datetime | None
) -> ApiKey:
    """Create and store a key inside an open transaction; the secret is returned once."""
    key_id, secret = new_secret(tenant_id)
    key = ApiKey(
        tenant_id=tenant_id,
        id=key_id,
        actor_id=actor_id,
        display_name=display_name,
        secret_prefix=secret[: len(PREFIX) + len(tenant_id) + len(key_id) + 3 + 4],
        create_time=utcnow(),
        expire_time=expire_time,
        secret=secret,
    )
    await tx.add_api_key(key, hash_key(secret))
    return key
