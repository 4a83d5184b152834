"""Browser sign-in with OpenID Connect: authorization code + PKCE, as a browser does it.

A real oidc-provider (npm) knows HACS as a confidential client whose redirect URI is
HACS's callback; the test plays the browser: it opens HACS's login URL, follows the
provider's sign-in (tests/support/oidc_provider.py), hands the provider's redirect to
HACS's callback, and reads the HACS token from the fragment of where HACS sends it.
"""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hacs.tenant.v1 import identity_pb2 as ipb
from hacs.tenant.v1 import tenant_service_pb2 as pb

from tests.support.harness import Harness, bearer, make_settings, running_platform
from tests.support.oidc_provider import DEFAULT_USERS, OidcProvider
from tests.support.postgres import free_port

CLIENT, SECRET = "hacs-browser", "browser-client-secret"
SECRET_VARIABLE = "HACS_TEST_OIDC_CLIENT_SECRET"
CONSOLE = "http://127.0.0.1:9/console"


@pytest.fixture(scope="module")
def http_port() -> int:
    return free_port()


def callback_url(port: int, tenant_id: str) -> str:
    return f"http://127.0.0.1:{port}/auth/oidc/{tenant_id}/hospital/callback"


@pytest.fixture(scope="module")
def idp(http_port: int) -> Iterator[OidcProvider]:
    """A provider that knows HACS's callback for the tenants the tests make."""
    provider = OidcProvider(
        clients=[
            {
                "client_id": CLIENT,
                "client_secret": SECRET,
                "redirect_uris": [callback_url(http_port, t) for t in ("ward-one", "ward-two")],
                "grant_types": ["authorization_code"],
            }
        ],
        users=DEFAULT_USERS,
        pkce="all",
    )
    provider.start()
    try:
        yield provider
    finally:
        provider.stop()


@pytest.fixture
async def platform(
    tmp_path: Path, http_port: int, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Harness]:
    monkeypatch.setenv(SECRET_VARIABLE, SECRET)
    settings = make_settings(
        tmp_path / "data", "", services="tenant", http_listen=f"127.0.0.1:{http_port}"
    )
    async with running_platform(settings) as harness:
        yield harness


async def register(platform: Harness, idp: OidcProvider, tenant_id: str, port: int) -> None:
    tenant = await platform.new_tenant(tenant_id)
    await platform.tenant.CreateIdentityProvider(
        ipb.CreateIdentityProviderRequest(
            parent=tenant.name,
            identity_provider_id="hospital",
            identity_provider=ipb.IdentityProvider(
                display_name="Hospital sign-in",
                oidc=ipb.OidcProvider(
                    issuer=idp.issuer,
                    client_id=CLIENT,
                    client_secret_ref=f"env:{SECRET_VARIABLE}",
                    redirect_uri=callback_url(port, tenant_id),
                    return_urls=[CONSOLE],
                    scopes=["openid", "email", "profile", "groups"],
                ),
                role_mappings=[ipb.RoleMapping(group="clinicians", role="physician")],
                jit_provisioning=True,
            ),
        ),
        metadata=bearer(tenant.admin_token),
    )


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def get(url: str) -> tuple[int, str, str]:
    """(status, Location, body) of one GET, redirects not followed."""
    opener = urllib.request.build_opener(_NoRedirects, urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=30) as reply:
            return reply.status, reply.headers.get("Location", ""), reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Location", ""), error.read().decode()


async def fetch(url: str) -> tuple[int, str, str]:
    """`get` off the event loop (the HACS server under test runs on it)."""
    return await asyncio.to_thread(get, url)


async def test_a_person_signs_in_with_the_browser_and_lands_with_a_token(
    platform: Harness, idp: OidcProvider, http_port: int
) -> None:
    await register(platform, idp, "ward-one", http_port)
    base = f"http://127.0.0.1:{http_port}/auth/oidc/ward-one/hospital"
    status, to_provider, _ = await fetch(f"{base}/login?return_to={urllib.parse.quote(CONSOLE)}")
    assert status == 302 and to_provider.startswith(idp.discovery["authorization_endpoint"])
    asked = urllib.parse.parse_qs(urllib.parse.urlsplit(to_provider).query)
    assert asked["code_challenge_method"] == ["S256"] and asked["nonce"] and asked["state"]

    back_to_hacs = idp.follow(
        to_provider, "alice", redirect_uri=callback_url(http_port, "ward-one")
    )
    status, landing, _ = await fetch(back_to_hacs)
    assert status == 302 and landing.startswith(CONSOLE + "#")
    fragment = urllib.parse.parse_qs(urllib.parse.urlsplit(landing).fragment)
    token, actor = fragment["access_token"][0], fragment["actor"][0]
    assert fragment["token_type"] == ["Bearer"] and int(fragment["expires_in"][0]) > 0
    me = await platform.tenant.GetActor(pb.GetActorRequest(name=actor), metadata=bearer(token))
    assert (me.actor.role, me.actor.display_name) == ("physician", "Alice Clinician")

    # The same callback again (a replayed or leaked redirect) signs nobody in.
    status, landing, body = await fetch(back_to_hacs)
    assert status == 400 and not landing and "used already" in body


async def test_sign_ins_that_must_not_complete(
    platform: Harness, idp: OidcProvider, http_port: int
) -> None:
    await register(platform, idp, "ward-two", http_port)
    base = f"http://127.0.0.1:{http_port}/auth/oidc/ward-two/hospital"
    status, _, body = await fetch(
        f"{base}/login?return_to={urllib.parse.quote('https://evil.example/')}"
    )
    assert status == 400 and "return URLs" in body
    status, _, body = await fetch(f"{base}/callback?code=x&state=made-up")
    assert status == 400 and "unknown" in body
    status, _, _ = await fetch(
        f"http://127.0.0.1:{http_port}/auth/oidc/ward-two/nobody/login?return_to={CONSOLE}"
    )
    assert status == 404

    # A state from a login at this provider is refused at another provider's callback.
    _, to_provider, _ = await fetch(f"{base}/login?return_to={urllib.parse.quote(CONSOLE)}")
    back = idp.follow(to_provider, "alice", redirect_uri=callback_url(http_port, "ward-two"))
    elsewhere = back.replace("/ward-two/hospital/", "/ward-two/other/")
    status, _, _ = await fetch(elsewhere)
    assert status == 400
