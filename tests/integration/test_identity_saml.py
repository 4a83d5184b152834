"""Sign-in with a hospital's SAML 2.0 identity provider, against a real pysaml2 IdP.

The IdP (tests/support/saml_idp.py) signs with its own key through Debian's xmlsec1 and
answers HACS's AuthnRequests; the test plays the browser between them: HACS's login
redirect, the IdP's response posted to HACS's ACS, HACS's redirect with the token. Every
kind of bad response is posted too, each to a fresh request, and refused.
"""

from __future__ import annotations

import asyncio
import datetime
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hacs.tenant.v1 import identity_pb2 as ipb
from hacs.tenant.v1 import tenant_service_pb2 as pb

from tests.support.harness import Harness, bearer, make_settings, running_platform
from tests.support.postgres import free_port
from tests.support.saml_idp import SamlIdp, saml_idp  # noqa: F401  (the fixture)

CONSOLE = "http://127.0.0.1:9/console"
USER = "clinician-42"
ATTRIBUTES = {"groups": ["clinicians"], "email": ["ann@hospital.test"]}


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[Harness]:
    settings = make_settings(
        tmp_path / "data", "", services="tenant", http_listen=f"127.0.0.1:{free_port()}"
    )
    async with running_platform(settings) as harness:
        yield harness


class Sp:
    """HACS's SP for one tenant's provider, and a browser to go through it."""

    def __init__(self, platform: Harness, tenant_id: str) -> None:
        port = platform.server.http_port
        self.base = f"http://127.0.0.1:{port}/auth/saml/{tenant_id}/hospital"
        self.entity_id, self.acs = self.base, f"{self.base}/acs"

    async def login(self) -> tuple[str, str]:
        """(the IdP URL HACS sends the browser to, the RelayState it carries)."""
        query = urllib.parse.urlencode({"return_to": CONSOLE})
        status, location, _ = await fetch(f"{self.base}/login?{query}")
        assert status == 302, location
        relay = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)["RelayState"][0]
        return location, relay

    async def post(self, saml_response: str, relay: str) -> tuple[int, str, str]:
        form = urllib.parse.urlencode({"SAMLResponse": saml_response, "RelayState": relay})
        return await fetch(self.acs, form.encode())


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def _request(url: str, data: bytes | None) -> tuple[int, str, str]:
    opener = urllib.request.build_opener(_NoRedirects, urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, data=data, timeout=30) as reply:
            return reply.status, reply.headers.get("Location", ""), reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Location", ""), error.read().decode()


async def fetch(url: str, data: bytes | None = None) -> tuple[int, str, str]:
    """One request off the event loop (the HACS server under test runs on it)."""
    return await asyncio.to_thread(_request, url, data)


async def registered(platform: Harness, idp: SamlIdp) -> tuple[Sp, str]:
    tenant = await platform.new_tenant()
    sp = Sp(platform, tenant.tenant_id)
    await platform.tenant.CreateIdentityProvider(
        ipb.CreateIdentityProviderRequest(
            parent=tenant.name,
            identity_provider_id="hospital",
            identity_provider=ipb.IdentityProvider(
                display_name="Hospital SAML",
                saml=ipb.SamlProvider(
                    idp_metadata_xml=idp.metadata_xml(),
                    groups_attribute="groups",
                    username_attribute="email",
                    sp_entity_id=sp.entity_id,
                    acs_url=sp.acs,
                    return_urls=[CONSOLE],
                ),
                role_mappings=[ipb.RoleMapping(group="clinicians", role="physician")],
                jit_provisioning=True,
            ),
        ),
        metadata=bearer(tenant.admin_token),
    )
    status, _, metadata = await fetch(f"{sp.base}/metadata")
    assert status == 200 and sp.entity_id in metadata and sp.acs in metadata
    idp.register_sp(metadata)  # the IdP's admin registers what HACS publishes
    return sp, tenant.tenant_id


async def test_a_person_signs_in_through_the_saml_provider(
    platform: Harness,
    saml_idp: SamlIdp,  # noqa: F811
) -> None:
    sp, _ = await registered(platform, saml_idp)
    location, relay = await sp.login()
    asked = saml_idp.read_authn_request(location)
    assert location.startswith(saml_idp.sso_url) and asked.id == relay
    assert (asked.issuer, asked.acs_url) == (sp.entity_id, sp.acs)

    answer = saml_idp.response(sp.entity_id, sp.acs, USER, ATTRIBUTES, in_response_to=asked.id)
    status, landing, _ = await sp.post(answer, relay)
    assert status == 302 and landing.startswith(CONSOLE + "#"), landing
    fragment = urllib.parse.parse_qs(urllib.parse.urlsplit(landing).fragment)
    me = await platform.tenant.GetActor(
        pb.GetActorRequest(name=fragment["actor"][0]),
        metadata=bearer(fragment["access_token"][0]),
    )
    assert (me.actor.role, me.actor.display_name) == ("physician", "ann@hospital.test")

    status, landing, body = await sp.post(answer, relay)  # the same POST again
    assert status == 400 and not landing and "used already" in body


async def test_every_kind_of_bad_response_is_refused(
    platform: Harness,
    saml_idp: SamlIdp,  # noqa: F811
) -> None:
    sp, _ = await registered(platform, saml_idp)
    stranger = SamlIdp()
    try:
        stranger.register_sp(saml_idp.metadata_xml())  # harmless; it only needs to sign
        bad = {
            "unsigned assertion": {"sign_assertion": False, "sign_response": False},
            "another audience": {"audience": "https://someone-else.example/sp"},
            "expired": {"not_on_or_after_delta": datetime.timedelta(minutes=-10)},
            "another recipient": {"recipient": "https://someone-else.example/acs"},
        }
        for why, knobs in bad.items():
            location, relay = await sp.login()
            request_id = saml_idp.read_authn_request(location).id
            answer = saml_idp.response(
                sp.entity_id, sp.acs, USER, ATTRIBUTES, in_response_to=request_id, **knobs
            )
            status, landing, _ = await sp.post(answer, relay)
            assert status == 401 and not landing, why

        # Signed by a key the registered metadata does not hold, claiming the real issuer.
        location, relay = await sp.login()
        request_id = saml_idp.read_authn_request(location).id
        forged = stranger.response(
            sp.entity_id,
            sp.acs,
            USER,
            ATTRIBUTES,
            in_response_to=request_id,
            issuer=saml_idp.entity_id,
        )
        status, _, _ = await sp.post(forged, relay)
        assert status == 401

        # Good, but the answer to another request: a response moved between sign-ins.
        location_a, _ = await sp.login()
        _, relay_b = await sp.login()
        answer_a = saml_idp.response(
            sp.entity_id,
            sp.acs,
            USER,
            ATTRIBUTES,
            in_response_to=saml_idp.read_authn_request(location_a).id,
        )
        status, _, _ = await sp.post(answer_a, relay_b)
        assert status == 401

        # IdP-initiated (no request of HACS's): refused.
        unsolicited = saml_idp.response(sp.entity_id, sp.acs, USER, ATTRIBUTES)
        status, _, body = await sp.post(unsolicited, "")
        assert status == 400 and "RelayState" in body
    finally:
        stranger.close()
