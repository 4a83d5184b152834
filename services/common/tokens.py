"""Token verification, done by every service on every call (zero trust).

Envoy already verified the token at the edge; services verify it again
because the edge is not the only way in (pod-to-pod calls, a misrouted
request, a compromised sidecar). Verification checks the RS256 signature
against the tenant service's keys, `iss`, `aud`, `exp`/`nbf`, and the claims
a `Caller` is built from.

A token verified once is remembered (bounded, least recently used first out)
until it expires: the signature and claims of the same bytes cannot change,
and a hit still asks the key source for the token's key, so a key withdrawn
from the JWKS ends its tokens at once. An agent sends the same token on every
call for its lifetime, so the RSA check and the claim parsing run once per
token, not once per call.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

import aiohttp
import jwt

from services.common.caller import Caller
from services.common.errors import Unauthenticated, Unavailable
from services.common.signing_keys import SigningKeys

log = logging.getLogger(__name__)

LEEWAY_SECONDS = 30
REQUIRED_CLAIMS = ("iss", "aud", "sub", "exp", "iat", "tenant", "actor", "permissions")


class KeySource(Protocol):
    async def public_key(self, kid: str) -> Any: ...


class LocalKeys:
    """Keys of the tenant service in this process."""

    def __init__(self, keys: SigningKeys) -> None:
        self._by_kid = {k.kid: k.private_key.public_key() for k in keys.keys}

    async def public_key(self, kid: str) -> Any:
        try:
            return self._by_kid[kid]
        except KeyError:
            raise Unauthenticated("token signed by an unknown key") from None


class NoKeys:
    """A process whose services take no caller tokens (the rate-limit service): none verify."""

    async def public_key(self, kid: str) -> Any:
        raise Unauthenticated("this process verifies no tokens: it serves no method that takes one")


class RemoteJwks:
    """The tenant service's JWKS over HTTP, cached, refetched on an unknown kid.

    Refetches are rate limited so a flood of forged tokens cannot turn into a
    flood of JWKS requests.
    """

    def __init__(
        self,
        url: str,
        *,
        min_refresh_seconds: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._url = url
        # HACS_TLS=on: https, the tenant pods' certificate verified against the HACS CA.
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._min_refresh = min_refresh_seconds
        self._by_kid: dict[str, Any] = {}
        self._fetched_at = float("-inf")  # the first unknown kid always fetches
        self._lock = asyncio.Lock()

    async def public_key(self, kid: str) -> Any:
        if kid not in self._by_kid:
            # Decide under the lock: a call that arrives while a fetch is in flight
            # waits for it instead of failing on the keys not loaded yet.
            async with self._lock:
                recent = time.monotonic() - self._fetched_at <= self._min_refresh
                if kid not in self._by_kid and not recent:
                    await self._fetch()
        try:
            return self._by_kid[kid]
        except KeyError:
            raise Unauthenticated("token signed by an unknown key") from None

    async def _fetch(self) -> None:
        self._fetched_at = time.monotonic()
        try:
            timeout = aiohttp.ClientTimeout(total=5)
            async with (
                aiohttp.ClientSession(timeout=timeout) as http,
                http.get(self._url, ssl=self._ssl) as resp,
            ):
                resp.raise_for_status()
                document = json.loads(await resp.text())
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise Unavailable(f"cannot fetch the JWKS from {self._url}: {exc}") from exc
        self._by_kid = {
            jwk["kid"]: jwt.algorithms.RSAAlgorithm.from_jwk(json.dumps(jwk))
            for jwk in document.get("keys", [])
            if jwk.get("kty") == "RSA" and "kid" in jwk
        }
        log.info("loaded %d signing keys from %s", len(self._by_kid), self._url)


class TokenVerifier:
    def __init__(
        self, keys: KeySource, *, issuer: str, audience: str, remembered: int = 10_000
    ) -> None:
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._remembered = remembered
        # token -> (kid, the key that verified it, its caller, exp)
        self._verified: OrderedDict[str, tuple[str, Any, Caller, float]] = OrderedDict()

    async def verify(self, token: str) -> Caller:
        known = self._verified.get(token)
        if known is not None:
            kid, key, caller, exp = known
            # Still within its lifetime, and its key still published (and the same key).
            if time.time() <= exp + LEEWAY_SECONDS and await self._keys.public_key(kid) is key:
                self._verified.move_to_end(token)
                return caller
            del self._verified[token]
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"malformed bearer token: {exc}") from exc
        if header.get("alg") != "RS256":
            raise Unauthenticated("token must be signed with RS256")
        kid = str(header.get("kid", ""))
        key = await self._keys.public_key(kid)
        caller = self._decode(token, key)
        if caller.expires_at is not None:
            self._verified[token] = (kid, key, caller, caller.expires_at.timestamp())
            if len(self._verified) > self._remembered:
                self._verified.popitem(last=False)
        return caller

    def _decode(self, token: str, key: Any) -> Caller:
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=["RS256"],
                audience=self._audience,
                issuer=self._issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("token expired: ask the tenant service for a new one") from exc
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"token rejected: {exc}") from exc
        return caller_from_claims(claims)


def caller_from_claims(claims: Mapping[str, Any]) -> Caller:
    permissions = claims.get("permissions")
    if not isinstance(permissions, list) or not all(isinstance(p, str) for p in permissions):
        raise Unauthenticated("token claim 'permissions' must be a list of strings")
    tenant, actor = claims.get("tenant"), claims.get("actor")
    if not isinstance(tenant, str) or not tenant or not isinstance(actor, str) or not actor:
        raise Unauthenticated("token lacks its tenant or actor claim")
    if claims.get("sub") != f"tenants/{tenant}/actors/{actor}":
        raise Unauthenticated("token subject does not match its tenant and actor")
    exp = claims.get("exp")
    return Caller(
        tenant_id=tenant,
        actor_id=actor,
        role=str(claims.get("role", "")),
        permissions=frozenset(permissions),
        token_id=str(claims.get("jti", "")),
        expires_at=datetime.fromtimestamp(exp, UTC) if isinstance(exp, int | float) else None,
        key_id=str(claims.get("key", "")),
    )


def bearer_token(metadata: Mapping[str, str]) -> str:
    value = metadata.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if not value:
        raise Unauthenticated("missing bearer token: send 'authorization: Bearer <token>'")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("authorization metadata must be 'Bearer <token>'")
    return token.strip()
