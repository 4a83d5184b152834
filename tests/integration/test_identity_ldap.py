"""Sign-in with an LDAP / Active Directory password, against a real OpenLDAP.

`slapd` (Debian's) runs on loopback with TLS from a CA the test makes
(tests/support/slapd.py). HACS binds as its service account over StartTLS or LDAPS,
finds the person, binds as them, maps their groups; the periodic sync deactivates people
the directory no longer has, and their tokens end within the revocation bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from hacs.tenant.v1 import identity_pb2 as ipb
from hacs.tenant.v1 import tenant_service_pb2 as pb

from services.common.audit import AuditLog
from services.common.db.engine import Database
from services.tenant.identity.oidc import OidcVerifier
from services.tenant.identity.providers import ProviderStore
from services.tenant.identity.service import Identity
from services.tenant.identity.sign_in import SignIns
from services.tenant.store import TenantStore
from services.tenant.token_issuer import TokenIssuer
from tests.support.harness import Harness, NewTenant, bearer, make_settings, running_platform
from tests.support.slapd import Slapd, slapd  # noqa: F401  (the fixture)

PASSWORD_VARIABLE = "HACS_TEST_DIRECTORY_PASSWORD"


@pytest.fixture
async def platform(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Harness]:
    settings = make_settings(tmp_path / "data", database_url, services="tenant")
    async with running_platform(settings) as harness:
        yield harness


def directory(server: Slapd, *, ldaps: bool = False, **fields: object) -> ipb.LdapProvider:
    return ipb.LdapProvider(
        **{
            "url": server.ldaps_url if ldaps else server.url,
            "start_tls": not ldaps,
            "ca_certificate_pem": Path(server.ca_file).read_text(),
            "bind_dn": server.bind_dn,
            "bind_password_ref": f"env:{PASSWORD_VARIABLE}",
            "user_base_dn": server.people_dn,
            "user_filter": "(uid={username})",
            "group_base_dn": server.groups_dn,
            **fields,
        }  # type: ignore[arg-type]
    )


async def register(
    platform: Harness, tenant: NewTenant, ldap: ipb.LdapProvider, provider_id: str = "directory"
) -> str:
    reply = await platform.tenant.CreateIdentityProvider(
        ipb.CreateIdentityProviderRequest(
            parent=tenant.name,
            identity_provider_id=provider_id,
            identity_provider=ipb.IdentityProvider(
                display_name="Hospital directory",
                ldap=ldap,
                role_mappings=[ipb.RoleMapping(group="nurses", role="nurse")],
                allowed_groups=["nurses"],
                jit_provisioning=True,
            ),
        ),
        metadata=bearer(tenant.admin_token),
    )
    return reply.identity_provider.name


async def sign_in(platform: Harness, provider: str, username: str, password: str) -> ipb.SignIn:
    reply = await platform.tenant.SignInWithPassword(
        ipb.SignInWithPasswordRequest(
            identity_provider=provider, username=username, password=password
        )
    )
    return reply.sign_in


async def refusal(
    platform: Harness, provider: str, username: str, password: str
) -> tuple[grpc.StatusCode, str]:
    try:
        await sign_in(platform, provider, username, password)
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


@pytest.mark.parametrize("ldaps", [False, True], ids=["starttls", "ldaps"])
async def test_a_directory_password_signs_a_person_in(
    platform: Harness,
    slapd: Slapd,  # noqa: F811
    ldaps: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(PASSWORD_VARIABLE, slapd.bind_password)
    tenant = await platform.new_tenant()
    provider = await register(platform, tenant, directory(slapd, ldaps=ldaps))
    slapd.add_user(
        "carol", "Night-shift-1", cn="Carol Nurse", mail="carol@hospital.test", groups=["nurses"]
    )

    carol = await sign_in(platform, provider, "carol", "Night-shift-1")
    assert carol.provisioned and carol.token_type == "Bearer"
    me = await platform.tenant.GetActor(
        pb.GetActorRequest(name=carol.actor), metadata=bearer(carol.access_token)
    )
    assert (me.actor.role, me.actor.display_name) == ("nurse", "Carol Nurse")

    wrong, unknown = (
        await refusal(platform, provider, "carol", "night-shift-1"),
        await refusal(platform, provider, "nobody", "Night-shift-1"),
    )
    assert wrong == unknown  # the same answer: nothing learned about who exists
    assert wrong[0] == grpc.StatusCode.UNAUTHENTICATED
    # Filter metacharacters in a user name match nobody (escaped), never everybody.
    assert (await refusal(platform, provider, "*", "Night-shift-1"))[0] == (
        grpc.StatusCode.UNAUTHENTICATED
    )

    slapd.add_user(
        "dave", "Porter-2", cn="Dave Porter", mail="dave@hospital.test", groups=["porters"]
    )
    code, message = await refusal(platform, provider, "dave", "Porter-2")
    assert code == grpc.StatusCode.PERMISSION_DENIED and "none of the groups" in message


async def test_a_directory_hacs_cannot_trust_or_enter_is_unavailable(
    platform: Harness,
    slapd: Slapd,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    tenant = await platform.new_tenant()
    slapd.add_user("carol", "Night-shift-1", cn="Carol", mail="c@h.test", groups=["nurses"])
    monkeypatch.setenv(PASSWORD_VARIABLE, slapd.bind_password)
    other_ca = _other_ca_pem(tmp_path)
    untrusted = await register(
        platform, tenant, directory(slapd, ca_certificate_pem=other_ca), "untrusted"
    )
    code, message = await refusal(platform, untrusted, "carol", "Night-shift-1")
    assert code == grpc.StatusCode.UNAVAILABLE and "cannot reach the directory" in message

    monkeypatch.setenv(PASSWORD_VARIABLE, "not-the-service-password")
    trusted = await register(platform, tenant, directory(slapd), "wrong-service-password")
    code, message = await refusal(platform, trusted, "carol", "Night-shift-1")
    assert code == grpc.StatusCode.UNAVAILABLE and "refused HACS's service account" in message


def _other_ca_pem(tmp_path: Path) -> str:
    from services.common.runtime.certificates import CertificateAuthority

    ca = CertificateAuthority(tmp_path / "other-ca")
    ca.create()
    return ca.cert_path.read_text()


async def test_the_sync_deprovisions_people_the_directory_dropped(
    platform: Harness,
    slapd: Slapd,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
) -> None:
    monkeypatch.setenv(PASSWORD_VARIABLE, slapd.bind_password)
    tenant = await platform.new_tenant()
    provider_name = await register(platform, tenant, directory(slapd))
    for uid in ("carol", "erin", "frank"):
        slapd.add_user(
            uid, f"{uid}-Pass-1", cn=uid.title(), mail=f"{uid}@h.test", groups=["nurses"]
        )
    tokens = {
        uid: (await sign_in(platform, provider_name, uid, f"{uid}-Pass-1"))
        for uid in ("carol", "erin", "frank")
    }

    slapd.remove_user("carol")  # left the hospital
    slapd.remove_from_group("erin", "nurses")  # moved out of the allowed group

    # What the tenant service's sync loop runs every `sync_interval_seconds`.
    db = Database(database_url)
    try:
        settings = platform.server.settings
        store = TenantStore(db)
        providers = ProviderStore(db)
        issuer = TokenIssuer(
            store,
            platform.server.platform.signing_keys,  # type: ignore[union-attr, arg-type]
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            default_ttl_seconds=60,
            max_ttl_seconds=60,
        )

        async def no_announcement(tenant_id: str) -> None:
            """Another process: the serving one learns within its revocation bound."""

        identity = Identity(
            SignIns(store, providers, issuer, AuditLog(db), no_announcement),
            providers,
            OidcVerifier(),
        )
        async with providers.transaction(tenant.tenant_id) as tx:
            provider = await tx.get(tenant.tenant_id, "directory")
        assert provider is not None
        assert await identity.sync_directory(provider) == 2
        assert await identity.sync_directory(provider) == 0  # nothing more to do
    finally:
        await db.close()

    async def works(uid: str) -> bool:
        try:
            await platform.tenant.GetActor(
                pb.GetActorRequest(name=tokens[uid].actor),
                metadata=bearer(tokens[uid].access_token),
            )
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
            return False
        return True

    for _ in range(70):  # the revocation bound is 5 s
        if not await works("carol") and not await works("erin"):
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("deprovisioned people's tokens still work")
    assert await works("frank")
    # Back in the allowed group: the next sign-in restores the account.
    slapd.add_to_group("erin", "nurses")
    again = await sign_in(platform, provider_name, "erin", "erin-Pass-1")
    assert again.actor == tokens["erin"].actor and again.provisioned
