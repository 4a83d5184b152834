"""The test OpenID Connect provider (tests/support/idp.py) does what the
sign-in tests rely on: the real code + PKCE flow, RS256 tokens verifiable through its
JWKS, and signing-key rotation."""

from __future__ import annotations

import secrets
import urllib.parse
from typing import Any

import jwt
import pytest

from tests.support.oidc_provider import (
    API_RESOURCE,
    REDIRECT_URI,
    SERVER_CLIENT,
    SERVER_SECRET,
    WEB_CLIENT,
    OidcError,
    OidcProvider,
    oidc_provider,  # noqa: F401  (the fixture)
    pkce_pair,
)


@pytest.fixture
def idp(oidc_provider: OidcProvider) -> OidcProvider:  # noqa: F811
    return oidc_provider


def verify(provider: OidcProvider, token: str, audience: str) -> dict[str, Any]:
    key = jwt.PyJWKClient(provider.jwks_uri, cache_keys=False).get_signing_key_from_jwt(token)
    claims: dict[str, Any] = jwt.decode(
        token, key, algorithms=["RS256"], audience=audience, issuer=provider.issuer
    )
    return claims


def test_discovery_document_is_served(idp: OidcProvider) -> None:
    doc = idp.discovery
    assert doc["issuer"] == idp.issuer
    assert doc["jwks_uri"] == idp.jwks_uri
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert "RS256" in doc["id_token_signing_alg_values_supported"]
    assert {"authorization_code", "refresh_token"} <= set(doc["grant_types_supported"])
    assert "groups" in doc["scopes_supported"]


def test_code_flow_with_pkce_yields_a_verifiable_id_token(idp: OidcProvider) -> None:
    verifier, _ = pkce_pair()
    nonce, state = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    code = idp.sign_in(WEB_CLIENT, "alice", REDIRECT_URI, verifier, nonce, state)
    tokens = idp.tokens(code, WEB_CLIENT, REDIRECT_URI, verifier)

    assert jwt.get_unverified_header(tokens["id_token"])["alg"] == "RS256"
    claims = verify(idp, tokens["id_token"], WEB_CLIENT)
    assert claims["sub"] == "user-alice"
    assert claims["nonce"] == nonce
    assert claims["groups"] == ["clinicians"]
    assert claims["email"] == "alice@hospital.test"
    assert tokens["refresh_token"]
    with pytest.raises(OidcError) as replay:  # a code is good once
        idp.tokens(code, WEB_CLIENT, REDIRECT_URI, verifier)
    assert replay.value.error == "invalid_grant"


def test_a_wrong_code_verifier_is_refused(idp: OidcProvider) -> None:
    verifier, _ = pkce_pair()
    code = idp.sign_in(WEB_CLIENT, "alice", REDIRECT_URI, verifier)
    with pytest.raises(OidcError) as refused:
        idp.tokens(code, WEB_CLIENT, REDIRECT_URI, pkce_pair()[0])
    assert refused.value.error == "invalid_grant"
    assert refused.value.status == 400


def test_a_public_client_must_use_pkce(idp: OidcProvider) -> None:
    with pytest.raises(OidcError) as refused:
        idp.sign_in(WEB_CLIENT, "alice", REDIRECT_URI, code_verifier=None)
    assert refused.value.error == "invalid_request"


def test_an_unknown_user_is_denied(idp: OidcProvider) -> None:
    _, challenge = pkce_pair()
    url = idp.authorize_url(WEB_CLIENT, REDIRECT_URI, challenge, state="s-1")
    back = urllib.parse.urlsplit(idp.follow(url, "mallory"))
    query = dict(urllib.parse.parse_qsl(back.query))
    assert query["error"] == "access_denied"
    assert query["state"] == "s-1"


def test_a_resource_gets_a_jwt_access_token(idp: OidcProvider) -> None:
    tokens = idp.tokens_for("bob", resource=API_RESOURCE, scope="openid email profile groups hacs")
    assert jwt.get_unverified_header(tokens["access_token"])["typ"] == "at+jwt"
    claims = verify(idp, tokens["access_token"], API_RESOURCE)
    assert claims["sub"] == "user-bob"
    assert claims["client_id"] == WEB_CLIENT
    assert claims["groups"] == ["admins", "clinicians"]
    assert claims["scope"] == "hacs"


def test_a_confidential_client_signs_in_and_refreshes(idp: OidcProvider) -> None:
    tokens = idp.tokens_for("bob", SERVER_CLIENT, client_secret=SERVER_SECRET)
    assert verify(idp, tokens["id_token"], SERVER_CLIENT)["sub"] == "user-bob"
    refreshed = idp.refresh(tokens["refresh_token"], SERVER_CLIENT, SERVER_SECRET)
    assert verify(idp, refreshed["id_token"], SERVER_CLIENT)["sub"] == "user-bob"
    with pytest.raises(OidcError) as refused:
        idp.refresh(tokens["refresh_token"], SERVER_CLIENT, "wrong-secret")
    assert refused.value.error == "invalid_client"


def test_rotated_keys_sign_new_tokens_under_a_new_kid(idp: OidcProvider) -> None:
    before = idp.tokens_for("alice")["id_token"]
    old_kid = jwt.get_unverified_header(before)["kid"]

    new_kid = idp.rotate_keys()
    after = idp.tokens_for("alice")["id_token"]
    assert jwt.get_unverified_header(after)["kid"] == new_kid != old_kid
    kids = [k["kid"] for k in idp.jwks()["keys"]]
    assert kids[0] == new_kid and old_kid in kids
    assert verify(idp, after, WEB_CLIENT)["sub"] == "user-alice"
    assert verify(idp, before, WEB_CLIENT)["sub"] == "user-alice"

    newest = idp.rotate_keys(keep_old=False)
    assert [k["kid"] for k in idp.jwks()["keys"]] == [newest]
    with pytest.raises(jwt.PyJWKClientError):
        verify(idp, after, WEB_CLIENT)
