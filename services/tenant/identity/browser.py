"""Browser sign-in on the edge: OpenID Connect authorization code + PKCE.

    GET /auth/oidc/{tenant}/{provider}/login?return_to=URL
        -> 302 to the provider, with a one-use state, a nonce and a PKCE challenge (S256)
    GET /auth/oidc/{tenant}/{provider}/callback?code=...&state=...
        -> the code redeemed (with the PKCE verifier, and the client secret if the provider
           has one), the ID token verified (signature, issuer, audience, expiry, nonce),
           the person signed in as for ExchangeToken, and
        -> 302 to return_to#access_token=...&token_type=Bearer&expires_in=...&actor=...

`return_to` must be one of the provider's `return_urls`, exactly: the HACS token goes only
where the tenant administrator said. The token travels in the fragment, which browsers
never send to a server. A state serves once and for ten minutes; a callback replayed, for
another provider, or late, is refused. The routes are served on the tenant service's HTTP
port; the edge forwards `/auth/` there.
"""

from __future__ import annotations

import base64
import hashlib
import html
import secrets
from collections.abc import Awaitable, Callable
from datetime import timedelta
from urllib.parse import urlencode

from aiohttp import web

from services.common.db.base import utcnow
from services.common.errors import HacsError
from services.tenant.identity.oidc import ID_TOKEN, OidcConfig, OidcVerifier
from services.tenant.identity.providers import ProviderStore, resolve_secret
from services.tenant.identity.sign_in import SignedIn, SignIns

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
STATE = "oidc-state"
STATE_SECONDS = 600
LOGIN = "/auth/oidc/{tenant}/{provider}/login"
CALLBACK = "/auth/oidc/{tenant}/{provider}/callback"
METHOD = "/auth/oidc/callback"
STATUS = {
    "INVALID_ARGUMENT": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 429,
    "UNAVAILABLE": 502,
}


class BrowserSignIn:
    def __init__(self, sign_ins: SignIns, store: ProviderStore, oidc: OidcVerifier) -> None:
        self._sign_ins = sign_ins
        self._store = store
        self._oidc = oidc

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [("GET", LOGIN, self.login), ("GET", CALLBACK, self.callback)]

    async def login(self, request: web.Request) -> web.StreamResponse:
        tenant_id, provider_id = request.match_info["tenant"], request.match_info["provider"]
        try:
            provider = await self._sign_ins.provider(tenant_id, provider_id, "oidc")
            config = OidcConfig.of(provider.config)
            return_to = request.query.get("return_to", "")
            if not config.redirect_uri or return_to not in config.return_urls:
                return page(400, "return_to is not one of this provider's return URLs")
            authorize = await self._oidc.endpoint(config.issuer, "authorization_endpoint")
        except HacsError as exc:
            return page(STATUS.get(exc.reason, 500), str(exc))
        state, nonce, verifier = (secrets.token_urlsafe(32) for _ in range(3))
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        async with self._store.transaction(tenant_id) as tx:
            await tx.put_nonce(
                tenant_id,
                STATE,
                state,
                provider_id,
                {"nonce": nonce, "verifier": verifier, "return_to": return_to},
                utcnow() + timedelta(seconds=STATE_SECONDS),
            )
        query = {
            "response_type": "code",
            "client_id": config.client_id,
            "redirect_uri": config.redirect_uri,
            "scope": " ".join(config.scopes),
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge.rstrip(b"=").decode(),
            "code_challenge_method": "S256",
        }
        separator = "&" if "?" in authorize else "?"
        raise web.HTTPFound(f"{authorize}{separator}{urlencode(query)}")

    async def callback(self, request: web.Request) -> web.StreamResponse:
        tenant_id, provider_id = request.match_info["tenant"], request.match_info["provider"]
        state = request.query.get("state", "")
        if not state or len(state) > 200:
            return page(400, "the sign-in has no state; start again")
        async with self._store.transaction(tenant_id) as tx:
            kept = await tx.take_nonce(tenant_id, STATE, state, provider_id)
        if kept is None:
            return page(400, "this sign-in is unknown, used already or too old; start again")
        if "error" in request.query:
            reason = request.query.get("error_description") or request.query["error"]
            return page(401, f"the identity provider did not sign you in: {reason}")
        try:
            provider = await self._sign_ins.provider(tenant_id, provider_id, "oidc")
            config = OidcConfig.of(provider.config)
            secret = resolve_secret(config.client_secret_ref) if config.client_secret_ref else ""
            id_token = await self._oidc.redeem(
                config, request.query.get("code", ""), config.redirect_uri, kept["verifier"], secret
            )
            person = await self._oidc.verify(config, id_token, ID_TOKEN, nonce=kept["nonce"])
            signed = await self._sign_ins.complete(provider, person, METHOD, 0, [])
        except HacsError as exc:
            return page(STATUS.get(exc.reason, 500), str(exc))
        raise landing(kept["return_to"], signed)


def landing(return_to: str, signed: SignedIn) -> web.HTTPFound:
    """The redirect back to the app, the HACS token in the fragment (never sent to a
    server by the browser)."""
    expires_in = int((signed.token.expire_time - utcnow()).total_seconds())
    fragment = urlencode(
        {
            "access_token": signed.token.token,
            "token_type": "Bearer",
            "expires_in": str(max(expires_in, 0)),
            "actor": signed.token.actor_name,
        }
    )
    return web.HTTPFound(f"{return_to}#{fragment}", headers={"Cache-Control": "no-store"})


def page(status: int, message: str) -> web.Response:
    """A small page a person can read; never cached."""
    body = (
        "<!doctype html><meta charset=utf-8><title>HACS sign-in</title>"
        f"<h1>Sign-in failed</h1><p>{html.escape(message)}</p>"
    )
    return web.Response(
        status=status,
        text=body,
        content_type="text/html",
        headers={"Cache-Control": "no-store"},
    )
