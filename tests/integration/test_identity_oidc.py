"""Sign-in with a hospital's OpenID Connect provider, against a real one.

The provider is panva's certified `oidc-provider` (npm) on loopback, started by the
tests; its ID tokens and JWT access tokens come from the real authorization code + PKCE
flow (tests/support/oidc_provider.py). HACS exchanges them for its own token (RFC 8693)
after checking signature, issuer, audience, expiry and type; a person's groups map to a
role, the actor is created at first sign-in, and a person no longer allowed is refused
and their actor deactivated at the next exchange.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from google.protobuf.field_mask_pb2 import FieldMask
from hacs.tenant.v1 import identity_pb2 as ipb
from hacs.tenant.v1 import tenant_pb2
from hacs.tenant.v1 import tenant_service_pb2 as pb

from services.tenant.identity.oidc import ACCESS_TOKEN, ID_TOKEN
from tests.support.harness import Harness, NewTenant, bearer, make_settings, running_platform
from tests.support.oidc_provider import (  # noqa: F401  (the fixture)
    API_RESOURCE,
    SERVER_CLIENT,
    SERVER_SECRET,
    WEB_CLIENT,
    OidcProvider,
    oidc_provider,
)


@pytest.fixture
async def platform(database_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    settings = make_settings(tmp_path / "data", database_url, services="tenant")
    async with running_platform(settings) as harness:
        yield harness


def provider_message(idp: OidcProvider, **fields: object) -> ipb.IdentityProvider:
    return ipb.IdentityProvider(
        display_name="St Mary's sign-in",
        oidc=ipb.OidcProvider(issuer=idp.issuer, client_id=WEB_CLIENT, audiences=[API_RESOURCE]),
        role_mappings=[
            ipb.RoleMapping(group="admins", role="administrator"),
            ipb.RoleMapping(group="clinicians", role="physician"),
        ],
        **{"jit_provisioning": True, **fields},  # type: ignore[arg-type]
    )


async def register(
    platform: Harness,
    tenant: NewTenant,
    idp: OidcProvider,
    provider_id: str = "sso",
    **fields: object,
) -> str:
    reply = await platform.tenant.CreateIdentityProvider(
        ipb.CreateIdentityProviderRequest(
            parent=tenant.name,
            identity_provider_id=provider_id,
            identity_provider=provider_message(idp, **fields),
        ),
        metadata=bearer(tenant.admin_token),
    )
    return reply.identity_provider.name


async def exchange(
    platform: Harness, provider: str, token: str, kind: str = ID_TOKEN
) -> ipb.SignIn:
    reply = await platform.tenant.ExchangeToken(
        ipb.ExchangeTokenRequest(
            identity_provider=provider, subject_token=token, subject_token_type=kind
        )
    )
    return reply.sign_in


async def status_of(call: object) -> grpc.StatusCode:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def test_a_provider_token_becomes_a_hacs_token_of_a_mapped_actor(
    platform: Harness,
    oidc_provider: OidcProvider,  # noqa: F811
) -> None:
    tenant = await platform.new_tenant()
    provider = await register(platform, tenant, oidc_provider)
    alice = oidc_provider.tokens_for("alice")

    first = await exchange(platform, provider, alice["id_token"])
    assert first.provisioned and first.issued_token_type == "urn:ietf:params:oauth:token-type:jwt"
    assert first.actor.startswith(f"{tenant.name}/actors/sso-")
    again = await exchange(platform, provider, oidc_provider.tokens_for("alice")["id_token"])
    assert not again.provisioned and again.actor == first.actor

    # The HACS token works like any other: Alice reads her tenant and sees herself.
    me = await platform.tenant.GetActor(
        pb.GetActorRequest(name=first.actor), metadata=bearer(again.access_token)
    )
    assert (me.actor.role, me.actor.display_name) == ("physician", "Alice Clinician")
    claims = jwt.decode(again.access_token, options={"verify_signature": False})
    assert claims["idp"] == "sso" and claims["tenant"] == tenant.tenant_id and "key" not in claims

    # Bob is in admins and clinicians: the first matching mapping's role, both permissions.
    bob = await exchange(platform, provider, oidc_provider.tokens_for("bob")["id_token"])
    assert "admin:*" in bob.permissions or "admin:tenant" in bob.permissions
    bob_actor = await platform.tenant.GetActor(
        pb.GetActorRequest(name=bob.actor), metadata=bearer(tenant.admin_token)
    )
    assert bob_actor.actor.role == "administrator"

    # A JWT access token for the HACS API audience exchanges too; as the other type, not.
    access = oidc_provider.tokens_for("alice", resource=API_RESOURCE)["access_token"]
    assert (await exchange(platform, provider, access, ACCESS_TOKEN)).actor == first.actor
    assert await status_of(exchange(platform, provider, access, ID_TOKEN)) == (
        grpc.StatusCode.UNAUTHENTICATED
    )


def _tampered(token: str) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["groups"] = ["admins"]
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


async def test_forged_foreign_tampered_and_misdirected_tokens_are_refused(
    platform: Harness,
    oidc_provider: OidcProvider,  # noqa: F811
) -> None:
    tenant = await platform.new_tenant()
    provider = await register(platform, tenant, oidc_provider)
    id_token = oidc_provider.tokens_for("alice")["id_token"]
    claims = jwt.decode(id_token, options={"verify_signature": False})
    own_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    kid = jwt.get_unverified_header(id_token)["kid"]
    refused = {
        "tampered": _tampered(id_token),
        "signed by a key the provider does not publish": jwt.encode(
            claims, own_key, algorithm="RS256", headers={"kid": "not-theirs"}
        ),
        "the provider's kid on a foreign key": jwt.encode(
            claims, own_key, algorithm="RS256", headers={"kid": kid}
        ),
        "alg none": jwt.encode(claims, None, algorithm="none"),
        "expired": jwt.encode(
            {**claims, "iat": int(time.time()) - 7200, "exp": int(time.time()) - 3600},
            own_key,
            algorithm="RS256",
            headers={"kid": kid},
        ),
        "for another client": oidc_provider.tokens_for(
            "alice", SERVER_CLIENT, client_secret=SERVER_SECRET
        )["id_token"],
    }
    for why, token in refused.items():
        code = await status_of(exchange(platform, provider, token))
        assert code == grpc.StatusCode.UNAUTHENTICATED, why

    # A provider registered with another issuer refuses this provider's tokens.
    other = await platform.tenant.CreateIdentityProvider(
        ipb.CreateIdentityProviderRequest(
            parent=tenant.name,
            identity_provider_id="elsewhere",
            identity_provider=ipb.IdentityProvider(
                display_name="Another issuer",
                oidc=ipb.OidcProvider(issuer=oidc_provider.issuer + "/other", client_id=WEB_CLIENT),
                role_mappings=[ipb.RoleMapping(group="clinicians", role="physician")],
                jit_provisioning=True,
            ),
        ),
        metadata=bearer(tenant.admin_token),
    )
    assert await status_of(exchange(platform, other.identity_provider.name, id_token)) in (
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.UNAVAILABLE,  # its discovery document does not exist
    )


async def test_the_provider_rotating_its_keys_is_followed(
    platform: Harness,
    oidc_provider: OidcProvider,  # noqa: F811
) -> None:
    tenant = await platform.new_tenant()
    provider = await register(platform, tenant, oidc_provider)
    await exchange(platform, provider, oidc_provider.tokens_for("alice")["id_token"])  # cached
    new_kid = oidc_provider.rotate_keys(keep_old=False)
    token = oidc_provider.tokens_for("alice")["id_token"]
    assert jwt.get_unverified_header(token)["kid"] == new_kid
    await asyncio.sleep(1.1)  # the refetch bound for an unknown key id
    assert (await exchange(platform, provider, token)).access_token


async def test_someone_no_longer_allowed_is_refused_and_deprovisioned(
    platform: Harness,
    oidc_provider: OidcProvider,  # noqa: F811
) -> None:
    tenant = await platform.new_tenant()
    provider = await register(platform, tenant, oidc_provider)
    alice = await exchange(platform, provider, oidc_provider.tokens_for("alice")["id_token"])
    read_self = pb.GetActorRequest(name=alice.actor)
    assert await status_of(
        platform.tenant.GetActor(read_self, metadata=bearer(alice.access_token))
    ) == (grpc.StatusCode.OK)
    current = await platform.tenant.GetIdentityProvider(
        ipb.GetIdentityProviderRequest(name=provider), metadata=bearer(tenant.admin_token)
    )
    changed = ipb.IdentityProvider()
    changed.CopyFrom(current.identity_provider)
    changed.allowed_groups[:] = ["admins"]
    await platform.tenant.UpdateIdentityProvider(
        ipb.UpdateIdentityProviderRequest(
            identity_provider=changed, update_mask=FieldMask(paths=["allowed_groups"])
        ),
        metadata=bearer(tenant.admin_token),
    )
    assert (
        await status_of(exchange(platform, provider, oidc_provider.tokens_for("alice")["id_token"]))
        == grpc.StatusCode.PERMISSION_DENIED
    )
    # The token she already had ends within the revocation bound.
    for _ in range(60):
        code = await status_of(
            platform.tenant.GetActor(read_self, metadata=bearer(alice.access_token))
        )
        if code == grpc.StatusCode.UNAUTHENTICATED:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the deprovisioned person's token still works")
    bob = await exchange(platform, provider, oidc_provider.tokens_for("bob")["id_token"])
    assert bob.access_token  # an admin is still allowed

    events = await platform.tenant.ListAuditEvents(
        pb.ListAuditEventsRequest(parent=tenant.name, page_size=100),
        metadata=bearer(tenant.admin_token),
    )
    outcomes = [
        (e.method.rsplit("/", 1)[-1], e.outcome)
        for e in events.audit_events
        if e.resource == provider
    ]
    assert ("ExchangeToken", "PERMISSION_DENIED") in outcomes and ("deprovision", "OK") in outcomes
    assert outcomes.count(("ExchangeToken", "OK")) >= 2


async def test_without_just_in_time_creation_or_room_a_stranger_is_refused(
    platform: Harness,
    oidc_provider: OidcProvider,  # noqa: F811
) -> None:
    tenant = await platform.new_tenant()
    closed = await register(platform, tenant, oidc_provider, "closed", jit_provisioning=False)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await exchange(platform, closed, oidc_provider.tokens_for("alice")["id_token"])
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "ask an administrator" in (caught.value.details() or "")

    full = await platform.new_tenant(limits=tenant_pb2.TenantLimits(max_users=1))
    provider = await register(platform, full, oidc_provider)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await exchange(platform, provider, oidc_provider.tokens_for("alice")["id_token"])
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_providers_are_the_tenants_own_and_checked_when_registered(
    platform: Harness,
    oidc_provider: OidcProvider,  # noqa: F811
) -> None:
    ours, theirs = await platform.new_tenant(), await platform.new_tenant()
    provider = await register(platform, ours, oidc_provider)
    assert (
        await status_of(
            platform.tenant.GetIdentityProvider(
                ipb.GetIdentityProviderRequest(name=provider), metadata=bearer(theirs.admin_token)
            )
        )
        == grpc.StatusCode.PERMISSION_DENIED
    )
    listed = await platform.tenant.ListIdentityProviders(
        ipb.ListIdentityProvidersRequest(parent=theirs.name), metadata=bearer(theirs.admin_token)
    )
    assert not listed.identity_providers

    bad = {
        "identity_provider.oidc.issuer": ipb.OidcProvider(
            issuer="http://login.hospital.org", client_id=WEB_CLIENT
        ),
        "identity_provider.oidc.client_secret_ref": ipb.OidcProvider(
            issuer=oidc_provider.issuer, client_id=WEB_CLIENT, client_secret_ref="hunter2"
        ),
    }
    for field, oidc in bad.items():
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await platform.tenant.CreateIdentityProvider(
                ipb.CreateIdentityProviderRequest(
                    parent=ours.name,
                    identity_provider_id="bad",
                    identity_provider=ipb.IdentityProvider(display_name="Bad", oidc=oidc),
                ),
                metadata=bearer(ours.admin_token),
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in (caught.value.details() or ""), caught.value.details()

    removed = await platform.tenant.DeleteIdentityProvider(
        ipb.DeleteIdentityProviderRequest(name=provider), metadata=bearer(ours.admin_token)
    )
    assert removed.identity_provider.state == ipb.IdentityProvider.STATE_DISABLED
    assert (
        await status_of(exchange(platform, provider, oidc_provider.tokens_for("alice")["id_token"]))
        == grpc.StatusCode.PERMISSION_DENIED
    )
