"""OpenID Connect: a provider's tokens verified against its discovery document and JWKS.

What a token must be to be accepted (anything else is UNAUTHENTICATED, with the reason):
signed by a key the provider's JWKS publishes now (an unknown key id fetches the JWKS
again, at most once a second per provider: rotation works, a flood of forged ids does
not become a flood of fetches), with an asymmetric algorithm (never `none` or HMAC);
issued by exactly the registered issuer; for one of the registered audiences (an ID
token: the client id; an access token: the API audiences); not expired, not before its
time (a minute of clock skew); an access token typed `at+jwt` (RFC 9068).

The issuer must be https, except on loopback (a provider the tests start).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import jwt

from services.common.errors import Unauthenticated, Unavailable
from services.tenant.identity.providers import Person

ID_TOKEN = "urn:ietf:params:oauth:token-type:id_token"
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"
TOKEN_TYPES = (ID_TOKEN, ACCESS_TOKEN)
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
LEEWAY_SECONDS = 60
DISCOVERY_TTL_SECONDS = 3600.0
MIN_REFETCH_SECONDS = 1.0


@dataclass(frozen=True)
class OidcConfig:
    issuer: str
    client_id: str
    audiences: tuple[str, ...] = ()
    groups_claim: str = "groups"
    username_claim: str = "email"
    client_secret_ref: str = ""
    redirect_uri: str = ""
    return_urls: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ("openid", "email", "profile")

    @classmethod
    def of(cls, config: dict[str, Any]) -> OidcConfig:
        return cls(
            issuer=str(config.get("issuer", "")),
            client_id=str(config.get("client_id", "")),
            audiences=tuple(config.get("audiences", ())),
            groups_claim=str(config.get("groups_claim") or "groups"),
            username_claim=str(config.get("username_claim") or "email"),
            client_secret_ref=str(config.get("client_secret_ref", "")),
            redirect_uri=str(config.get("redirect_uri", "")),
            return_urls=tuple(config.get("return_urls", ())),
            scopes=tuple(config.get("scopes") or ("openid", "email", "profile")),
        )


def issuer_problem(issuer: str) -> str:
    """Why `issuer` cannot be registered ("" when it can)."""
    parts = urlsplit(issuer)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return "must be an https:// URL"
    if parts.query or parts.fragment:
        return "must have no query or fragment"
    if parts.scheme == "http" and not _loopback(parts.hostname):
        return "must be https (plain http only for a provider on this host)"
    return ""


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class _Keys:
    jwks_uri: str
    document: dict[str, Any]
    discovered_at: float
    by_kid: dict[str, Any]
    fetched_at: float


class OidcVerifier:
    """Verifies tokens of any registered issuer; one cache of keys per issuer."""

    def __init__(self, *, timeout_seconds: float = 5.0) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._issuers: dict[str, _Keys] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def endpoint(self, issuer: str, name: str) -> str:
        """An endpoint of the provider's discovery document (authorization, token)."""
        async with self._locks.setdefault(issuer, asyncio.Lock()):
            keys = await self._discovered(issuer)
        url = keys.document.get(name)
        if not isinstance(url, str) or issuer_problem(_origin(url)):
            raise Unavailable(f"the discovery document of {issuer} has no usable {name}")
        return url

    async def redeem(
        self,
        config: OidcConfig,
        code: str,
        redirect_uri: str,
        code_verifier: str,
        client_secret: str,
    ) -> str:
        """The ID token for an authorization code (PKCE; the client secret if there is one)."""
        url = await self.endpoint(config.issuer, "token_endpoint")
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": code_verifier,
            "client_id": config.client_id,
        }
        auth = aiohttp.BasicAuth(config.client_id, client_secret) if client_secret else None
        try:
            async with (
                aiohttp.ClientSession(timeout=self._timeout) as http,
                http.post(url, data=form, auth=auth, allow_redirects=False) as reply,
            ):
                body = json.loads(await reply.text() or "{}")
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise Unavailable(f"cannot redeem the code at {url}: {exc}") from exc
        if reply.status != 200 or not isinstance(body, dict) or "id_token" not in body:
            error = body.get("error", reply.status) if isinstance(body, dict) else reply.status
            raise Unauthenticated(f"the provider refused the sign-in code ({error})")
        return str(body["id_token"])

    async def verify(
        self, config: OidcConfig, token: str, token_type: str, *, nonce: str | None = None
    ) -> Person:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"the subject token is not a JWT: {exc}") from None
        algorithm, kid = header.get("alg"), header.get("kid")
        if algorithm not in ALGORITHMS:
            raise Unauthenticated(f"tokens signed with {algorithm!r} are not accepted")
        typ = str(header.get("typ", "")).lower()
        if token_type == ACCESS_TOKEN and typ not in ("at+jwt", "application/at+jwt"):
            raise Unauthenticated("an access token must be a JWT of type at+jwt (RFC 9068)")
        if token_type == ID_TOKEN and typ in ("at+jwt", "application/at+jwt"):
            raise Unauthenticated("an access token was given as an ID token")
        if token_type == ID_TOKEN:
            audiences = [config.client_id, *config.audiences]
        else:
            audiences = list(config.audiences)
            if not audiences:
                raise Unauthenticated(
                    "this provider accepts ID tokens only: no API audience is registered"
                )
        key = await self._key(config.issuer, str(kid or ""))
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[str(algorithm)],
                audience=audiences,
                issuer=config.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "iss", "sub", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"the subject token was refused: {exc}") from None
        if nonce is not None and not hmac.compare_digest(str(claims.get("nonce", "")), nonce):
            raise Unauthenticated("the ID token is not the one this sign-in asked for (nonce)")
        groups = claims.get(config.groups_claim, [])
        if isinstance(groups, str):
            groups = [groups]
        username = str(claims.get(config.username_claim) or claims.get("preferred_username") or "")
        return Person(
            subject=str(claims["sub"]),
            username=username or str(claims["sub"]),
            display_name=str(claims.get("name") or username or claims["sub"]),
            groups=tuple(str(g) for g in groups if isinstance(g, str | int)),
            claims=claims,
        )

    async def _key(self, issuer: str, kid: str) -> Any:
        if not kid:
            raise Unauthenticated("the subject token names no key (kid)")
        async with self._locks.setdefault(issuer, asyncio.Lock()):
            keys = await self._discovered(issuer)
            # A key id not seen: the provider may have rotated (a JWKS just fetched by a
            # new discovery is not fetched again: the bound below holds for it too).
            if kid not in keys.by_kid and time.monotonic() - keys.fetched_at >= MIN_REFETCH_SECONDS:
                keys.by_kid = await self._jwks(keys.jwks_uri)
                keys.fetched_at = time.monotonic()
        found = keys.by_kid.get(kid)
        if found is None:
            raise Unauthenticated(f"the subject token is signed by a key {issuer} does not publish")
        return found

    async def _discovered(self, issuer: str) -> _Keys:
        """The issuer's discovery and keys, read again once older than an hour (the caller
        holds the issuer's lock)."""
        keys = self._issuers.get(issuer)
        if keys is None or time.monotonic() - keys.discovered_at > DISCOVERY_TTL_SECONDS:
            keys = self._issuers[issuer] = await self._discover(issuer)
        return keys

    async def _discover(self, issuer: str) -> _Keys:
        url = issuer.rstrip("/") + "/.well-known/openid-configuration"
        document = await self._get_json(url)
        if document.get("issuer") != issuer:
            raise Unavailable(f"{url} names the issuer {document.get('issuer')!r}, not {issuer!r}")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str) or issuer_problem(_origin(jwks_uri)):
            raise Unavailable(f"{url} has no usable jwks_uri")
        now = time.monotonic()
        return _Keys(jwks_uri, document, now, await self._jwks(jwks_uri), now)

    async def _jwks(self, url: str) -> dict[str, Any]:
        document = await self._get_json(url)
        keys: dict[str, Any] = {}
        for entry in document.get("keys", []):
            if not isinstance(entry, dict) or "kid" not in entry:
                continue
            if entry.get("use", "sig") != "sig":  # encryption keys verify nothing
                continue
            try:
                keys[str(entry["kid"])] = jwt.PyJWK.from_dict(entry).key
            except jwt.PyJWTError:
                continue  # a key type this build does not know: skip it, keep the rest
        return keys

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            async with (
                aiohttp.ClientSession(timeout=self._timeout) as http,
                http.get(url, allow_redirects=False) as reply,
            ):
                reply.raise_for_status()
                document = json.loads(await reply.text())
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise Unavailable(f"cannot read {url}: {exc}") from exc
        if not isinstance(document, dict):
            raise Unavailable(f"{url} is not a JSON object")
        return document


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
