"""SAML 2.0 service provider: HACS signs people in with a hospital's SAML identity provider.

    GET  /auth/saml/{tenant}/{provider}/metadata   HACS's SP metadata for the IdP's admin
    GET  /auth/saml/{tenant}/{provider}/login?return_to=URL
         -> an AuthnRequest to the IdP (HTTP-Redirect); its id is kept, one use, 10 minutes
    POST /auth/saml/{tenant}/{provider}/acs          (SAMLResponse, RelayState)
         -> 302 to return_to#access_token=...&token_type=Bearer&expires_in=...&actor=...

What an answer must be (pysaml2 with xmlsec1 checks the first four; HACS the rest):
the assertion signed by the key in the registered IdP metadata (an unsigned one, or one
signed by anyone else, is refused); for HACS's entity id (audience); within its
NotBefore/NotOnOrAfter, a minute of clock skew; addressed to HACS's ACS (recipient and
destination); an answer to a request HACS made and has not seen answered (IdP-initiated
sign-in is refused: nothing ties it to a browser session); an assertion id never seen
before (kept until the assertion expires: a replayed POST signs nobody in).

pysaml2 blocks and runs xmlsec1 per signature: its work runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2.client import Saml2Client
from saml2.config import SPConfig
from saml2.metadata import create_metadata_string

from services.common.db.base import utcnow
from services.common.errors import HacsError, Unauthenticated, Unavailable
from services.tenant.identity.browser import STATUS, landing, page
from services.tenant.identity.providers import Person, Provider, ProviderStore
from services.tenant.identity.sign_in import SignIns

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REQUEST, ASSERTION = "saml-request", "saml-assertion"
REQUEST_SECONDS = 600
CLOCK_SKEW_SECONDS = 60
METHOD = "/auth/saml/acs"
BASE = "/auth/saml/{tenant}/{provider}"


def xmlsec_binary() -> str:
    found = shutil.which("xmlsec1")
    if found is None:
        raise Unavailable("xmlsec1 is not installed (apt-get install xmlsec1); SAML cannot run")
    return found


def client_for(provider: Provider) -> Saml2Client:
    """A pysaml2 SP for one registered provider (built per call: configs are small)."""
    config = provider.config
    settings: dict[str, Any] = {
        "entityid": config.get("sp_entity_id", ""),
        "xmlsec_binary": xmlsec_binary(),
        "crypto_backend": "xmlsec1",
        "metadata": {"inline": [config.get("idp_metadata_xml", "")]},
        "allow_unknown_attributes": True,
        "accepted_time_diff": CLOCK_SKEW_SECONDS,
        "service": {
            "sp": {
                "endpoints": {
                    "assertion_consumer_service": [(config.get("acs_url", ""), BINDING_HTTP_POST)]
                },
                "want_assertions_signed": True,
                "want_response_signed": False,
                "allow_unsolicited": False,
                "authn_requests_signed": False,
                "only_use_keys_in_metadata": True,
            }
        },
    }
    sp_config = SPConfig()
    sp_config.load(settings)
    return Saml2Client(config=sp_config)


class SamlSignIn:
    def __init__(self, sign_ins: SignIns, store: ProviderStore) -> None:
        self._sign_ins = sign_ins
        self._store = store

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [
            ("GET", f"{BASE}/metadata", self.metadata),
            ("GET", f"{BASE}/login", self.login),
            ("POST", f"{BASE}/acs", self.acs),
        ]

    async def _provider(self, request: web.Request) -> Provider:
        tenant_id, provider_id = request.match_info["tenant"], request.match_info["provider"]
        return await self._sign_ins.provider(tenant_id, provider_id, "saml")

    async def metadata(self, request: web.Request) -> web.StreamResponse:
        try:
            provider = await self._provider(request)
            client = await asyncio.to_thread(client_for, provider)
        except HacsError as exc:
            return page(STATUS.get(exc.reason, 500), str(exc))
        document = await asyncio.to_thread(create_metadata_string, None, client.config)
        return web.Response(body=document, content_type="application/samlmetadata+xml")

    async def login(self, request: web.Request) -> web.StreamResponse:
        try:
            provider = await self._provider(request)
            return_to = request.query.get("return_to", "")
            if return_to not in provider.config.get("return_urls", []):
                return page(400, "return_to is not one of this provider's return URLs")
            client = await asyncio.to_thread(client_for, provider)
            request_id, info = await asyncio.to_thread(
                client.prepare_for_authenticate, binding=BINDING_HTTP_REDIRECT
            )
        except HacsError as exc:
            return page(STATUS.get(exc.reason, 500), str(exc))
        except Exception as exc:  # pysaml2: metadata without an SSO endpoint, and the like
            return page(502, f"cannot build a SAML request for this provider: {exc}")
        async with self._store.transaction(provider.tenant_id) as tx:
            await tx.put_nonce(
                provider.tenant_id,
                REQUEST,
                request_id,
                provider.id,
                {"return_to": return_to},
                utcnow() + timedelta(seconds=REQUEST_SECONDS),
            )
        location = dict(info["headers"])["Location"]
        separator = "&" if "?" in location else "?"
        raise web.HTTPFound(f"{location}{separator}{urlencode({'RelayState': request_id})}")

    async def acs(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        encoded, relay = str(form.get("SAMLResponse", "")), str(form.get("RelayState", ""))
        if not encoded or len(encoded) > 1_000_000 or not relay or len(relay) > 200:
            return page(400, "a SAMLResponse and the RelayState of a HACS sign-in are needed")
        try:
            provider = await self._provider(request)
        except HacsError as exc:
            return page(STATUS.get(exc.reason, 500), str(exc))
        async with self._store.transaction(provider.tenant_id) as tx:
            kept = await tx.take_nonce(provider.tenant_id, REQUEST, relay, provider.id)
        if kept is None:
            return page(400, "this sign-in is unknown, used already or too old; start again")
        try:
            person, assertion_id, expires = await asyncio.to_thread(_read, provider, encoded, relay)
            async with self._store.transaction(provider.tenant_id) as tx:
                fresh = await tx.put_nonce(
                    provider.tenant_id, ASSERTION, assertion_id, provider.id, {}, expires
                )
            if not fresh:
                raise Unauthenticated("this assertion was used already (a replay)")
        except HacsError as exc:
            await self._sign_ins.refuse(
                provider, Person("", "(SAML response refused)"), METHOD, exc
            )
            return page(STATUS.get(exc.reason, 500), str(exc))
        try:
            signed = await self._sign_ins.complete(provider, person, METHOD, 0, [])
        except HacsError as exc:
            return page(STATUS.get(exc.reason, 500), str(exc))
        raise landing(kept["return_to"], signed)


def _read(provider: Provider, encoded: str, request_id: str) -> tuple[Person, str, datetime]:
    """The person a response vouches for, its assertion id and expiry; or Unauthenticated."""
    client = client_for(provider)
    config = provider.config
    try:
        response = client.parse_authn_request_response(
            encoded,
            BINDING_HTTP_POST,
            outstanding={request_id: config.get("acs_url", "")},
            conv_info={"entity_id": config.get("sp_entity_id", "")},
        )
    except Exception as exc:  # every pysaml2 refusal (some are bare Exceptions) is one answer
        raise Unauthenticated(f"the SAML response was refused: {_reason(exc)}") from None
    assertion = getattr(response, "assertion", None)
    name_id = getattr(response, "name_id", None)
    if response is None or assertion is None or name_id is None or not name_id.text:
        raise Unauthenticated("the SAML response holds no assertion for HACS (destination?)")
    attributes: dict[str, list[str]] = response.get_identity() or {}
    groups = attributes.get(config.get("groups_attribute", ""), [])
    wanted = config.get("username_attribute", "")
    username = (attributes.get(wanted) or [name_id.text])[0] if wanted else name_id.text
    expires = datetime.fromtimestamp(
        response.not_on_or_after or (utcnow() + timedelta(hours=1)).timestamp(), UTC
    )
    person = Person(
        subject=str(name_id.text),
        username=str(username),
        display_name=str(username),
        groups=tuple(str(g) for g in groups),
    )
    return person, str(assertion.id), expires + timedelta(seconds=CLOCK_SKEW_SECONDS)


def _reason(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text[:300]
