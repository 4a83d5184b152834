"""Exchanges an API key for a short-lived RS256 JWT carrying tenant, actor and permissions."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt

from services.common.db.base import utcnow
from services.common.errors import FieldViolation, Forbidden, Invalid, Unauthenticated
from services.common.permissions import grants
from services.common.signing_keys import SigningKeys
from services.tenant.api_keys import matches, parse_key
from services.tenant.models import Actor
from services.tenant.store import TenantStore

BAD_KEY = "API key not recognised, revoked or expired"


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expire_time: datetime
    actor_name: str
    permissions: tuple[str, ...]


class TokenIssuer:
    def __init__(
        self,
        store: TenantStore,
        keys: SigningKeys,
        *,
        issuer: str,
        audience: str,
        default_ttl_seconds: int,
        max_ttl_seconds: int,
    ) -> None:
        self._store = store
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._default_ttl = default_ttl_seconds
        self._max_ttl = max_ttl_seconds

    async def issue(self, api_key: str, ttl_seconds: int, scopes: list[str]) -> IssuedToken:
        parsed = parse_key(api_key)
        if parsed is None:
            # Same answer for every bad key, so a caller learns nothing from it.
            raise Unauthenticated(BAD_KEY)
        now = utcnow()
        async with self._store.transaction(parsed.tenant_id) as tx:
            found = await tx.get_api_key(parsed.tenant_id, parsed.key_id)
            if found is None or not matches(parsed.full, found[1]):
                raise Unauthenticated(BAD_KEY)
            key = found[0]
            if key.revoke_time is not None or (
                key.expire_time is not None and key.expire_time <= now
            ):
                raise Unauthenticated(BAD_KEY)
            actor = await tx.get_actor(key.tenant_id, key.actor_id)
            tenant = await tx.get_tenant(key.tenant_id)
            if actor is None or not actor.is_active:
                raise Unauthenticated(BAD_KEY)
            if tenant is None or not tenant.active:
                raise Forbidden(f"tenant {key.tenant_id!r} is suspended; no tokens are issued")
            await tx.touch_api_key(key.tenant_id, key.id, now)

        # Every call checks that this key is not revoked (services/common/runtime/admission.py).
        return self.sign(actor, ttl_seconds, scopes, now, extra={"key": key.id})

    def sign(
        self,
        actor: Actor,
        ttl_seconds: int,
        scopes: list[str],
        now: datetime,
        *,
        extra: dict[str, str],
    ) -> IssuedToken:
        """A token for `actor`: its permissions, or `scopes` narrowing them; `extra` claims
        say what it was issued for (an API key's id; an identity provider's)."""
        permissions = tuple(actor.permissions)
        if scopes:
            ungranted = [s for s in scopes if not grants(permissions, s)]
            if ungranted:
                raise Invalid(
                    FieldViolation("scopes", f"not held by {actor.name}: {', '.join(ungranted)}")
                )
            permissions = tuple(dict.fromkeys(scopes))
        ttl = min(ttl_seconds or self._default_ttl, self._max_ttl)
        expire_time = now.replace(microsecond=0) + timedelta(seconds=ttl)
        claims = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": actor.name,
            "tenant": actor.tenant_id,
            "actor": actor.id,
            "role": actor.role,
            "permissions": list(permissions),
            "iat": int(now.timestamp()),
            "nbf": int(now.timestamp()),
            "exp": int(expire_time.timestamp()),
            "jti": uuid.uuid4().hex,
            **extra,
        }
        signing = self._keys.active
        token = jwt.encode(
            claims, signing.private_key, algorithm="RS256", headers={"kid": signing.kid}
        )
        return IssuedToken(token, expire_time, actor.name, permissions)
