"""A person a provider vouched for becomes a HACS actor and gets a HACS token.

The rules, the same for every kind of provider:
- a disabled provider refuses every sign-in;
- with allowed groups, a person in none of them is refused — and if they were linked
  before, the link is deprovisioned and their actor deactivated (their tokens end within
  the revocation bound): that is how OIDC and SAML deprovision, at the next sign-in;
- the role is that of the first mapping one of the person's groups matches; the
  permissions are those of every mapping they match (a mapping without permissions
  gives its role's defaults); a person whose groups match no mapping is refused;
- a person seen for the first time is created as an actor when the provider allows
  just-in-time provisioning, within the tenant's max_users; else refused;
- a linked person's actor takes the role and permissions of their groups now, at each
  sign-in (a change is announced, so tokens already out narrow at once);
- a linked actor an administrator deactivated stays deactivated: refused.
Group names are compared without regard to case. Every sign-in, refused or not, is in the
tenant's audit log.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from services.common.audit import AuditLog
from services.common.db.base import utcnow
from services.common.errors import Forbidden, HacsError, NotFound, QuotaExceeded, QuotaViolation
from services.common.permissions import default_permissions
from services.tenant.identity.providers import (
    ACTIVE,
    Link,
    Person,
    Provider,
    ProviderStore,
    ProviderTx,
    actor_id_for,
)
from services.tenant.models import Actor
from services.tenant.store import TenantStore
from services.tenant.token_issuer import IssuedToken, TokenIssuer

DEPROVISIONED = "deprovisioned"


@dataclass(frozen=True)
class SignedIn:
    token: IssuedToken
    provisioned: bool


def grant_for(provider: Provider, groups: tuple[str, ...]) -> tuple[str, tuple[str, ...]] | None:
    """(role, permissions) the person's groups earn, or None when they earn nothing."""
    held = {g.casefold() for g in groups}
    matched = [m for m in provider.role_mappings if m.group.casefold() in held]
    if not matched:
        return None
    permissions: list[str] = []
    for mapping in matched:
        permissions += mapping.permissions or default_permissions(mapping.role)
    return matched[0].role, tuple(dict.fromkeys(permissions))


def allowed(provider: Provider, groups: tuple[str, ...]) -> bool:
    if not provider.allowed_groups:
        return True
    held = {g.casefold() for g in groups}
    return any(g.casefold() in held for g in provider.allowed_groups)


class SignIns:
    def __init__(
        self,
        tenants: TenantStore,
        providers: ProviderStore,
        issuer: TokenIssuer,
        audit: AuditLog,
        on_change: Callable[[str], Awaitable[None]],
    ) -> None:
        self._tenants = tenants
        self._providers = providers
        self._issuer = issuer
        self._audit = audit
        self._on_change = on_change

    async def provider(self, tenant_id: str, provider_id: str, kind: str) -> Provider:
        """An active provider of `kind`; the same NOT_FOUND for a missing or other one."""
        async with self._providers.transaction(tenant_id) as tx:
            provider = await tx.get(tenant_id, provider_id)
        name = f"tenants/{tenant_id}/identityProviders/{provider_id}"
        if provider is None or provider.kind != kind:
            raise NotFound("IdentityProvider", name)
        if not provider.active:
            raise Forbidden(f"{name} is disabled; sign-ins through it are refused")
        return provider

    async def complete(
        self, provider: Provider, person: Person, method: str, ttl_seconds: int, scopes: list[str]
    ) -> SignedIn:
        """The token for `person`, provisioning or updating their actor; audited."""
        try:
            signed = await self._complete(provider, person, ttl_seconds, scopes)
        except HacsError as exc:
            await self._record(provider, person, method, exc.reason, "", str(exc))
            raise
        await self._record(
            provider,
            person,
            method,
            "OK",
            signed.token.actor_name,
            "provisioned" if signed.provisioned else "",
        )
        return signed

    async def refuse(
        self, provider: Provider, person: Person, method: str, error: HacsError
    ) -> None:
        """Audit a sign-in the provider itself refused (a bad password, a bad token)."""
        await self._record(provider, person, method, error.reason, "", str(error))

    async def _complete(
        self, provider: Provider, person: Person, ttl_seconds: int, scopes: list[str]
    ) -> SignedIn:
        tenant_id = provider.tenant_id
        now = utcnow()
        if not allowed(provider, person.groups):
            await self.deprovision(provider, person.subject)
            raise Forbidden(
                f"{person.username} is in none of the groups {provider.name} allows to sign in"
            )
        grant = grant_for(provider, person.groups)
        if grant is None:
            raise Forbidden(
                f"no role mapping of {provider.name} matches the groups of {person.username}"
            )
        role, permissions = grant
        provisioned = changed = False
        async with self._tenants.transaction(tenant_id) as tenants:
            tenant = await tenants.get_tenant(tenant_id, for_update=True)
            if tenant is None or not tenant.active:
                raise Forbidden(f"tenant {tenant_id!r} is suspended; no tokens are issued")
            links = ProviderTx(tenants.session)  # one transaction: the actor and its link
            link = await links.get_link(tenant_id, provider.id, person.subject)
            actor = await tenants.get_actor(tenant_id, link.actor_id) if link else None
            if link is None or actor is None:
                if not provider.jit_provisioning:
                    raise Forbidden(
                        f"{person.username} has no HACS account linked to {provider.name} "
                        "and the provider does not create accounts; ask an administrator"
                    )
                limit = tenant.limits.max_users
                if await tenants.count_active_actors(tenant_id) >= limit:
                    raise QuotaExceeded(
                        f"tenant {tenant.name!r} has reached its plan's limit of {limit} "
                        "active actors; no account can be created for this sign-in",
                        [QuotaViolation(tenant.name, f"max_users={limit}")],
                    )
                actor = Actor(
                    tenant_id=tenant_id,
                    id=actor_id_for(provider.id, person.subject),
                    display_name=(person.display_name or person.username)[:200],
                    role=role,
                    permissions=permissions,
                    labels={"identity-provider": provider.id},
                    create_time=now,
                    update_time=now,
                )
                if await tenants.get_actor(tenant_id, actor.id) is not None:
                    raise Forbidden(f"{actor.name} exists but is not linked to this person")
                await tenants.add_actor(actor)
                provisioned = True
            elif not actor.is_active:
                # Deprovisioned by HACS (out of the directory or the allowed groups) and back
                # now: restored like a new account would be made. Deactivated by an
                # administrator: stays so.
                if link.state != DEPROVISIONED or not provider.jit_provisioning:
                    raise Forbidden(
                        f"{actor.name} is deactivated; an administrator must restore it"
                    )
                restored = actor.with_changes(
                    is_active=True,
                    role=role,
                    permissions=permissions,
                    update_time=now,
                    version=actor.version + 1,
                )
                if not await tenants.save_actor(restored, expected_version=actor.version):
                    raise Forbidden(f"{actor.name} changed during the sign-in; sign in again")
                actor, changed, provisioned = restored, True, True
            elif (actor.role, tuple(actor.permissions)) != (role, permissions):
                updated = actor.with_changes(
                    role=role, permissions=permissions, update_time=now, version=actor.version + 1
                )
                if not await tenants.save_actor(updated, expected_version=actor.version):
                    raise Forbidden(f"{actor.name} changed during the sign-in; sign in again")
                actor, changed = updated, True
            await links.put_link(
                Link(
                    tenant_id,
                    provider.id,
                    person.subject,
                    actor.id,
                    person.username[:200],
                    person.groups,
                    ACTIVE,
                ),
                now,
                new=link is None,
            )
        if changed:
            await self._on_change(tenant_id)
        token = self._issuer.sign(actor, ttl_seconds, scopes, now, extra={"idp": provider.id})
        return SignedIn(token, provisioned)

    async def deprovision(self, provider: Provider, subject: str) -> bool:
        """End a linked person's access: the link deprovisioned, the actor deactivated."""
        tenant_id = provider.tenant_id
        async with self._tenants.transaction(tenant_id) as tenants:
            links = ProviderTx(tenants.session)
            link = await links.get_link(tenant_id, provider.id, subject)
            if link is None or link.state == DEPROVISIONED:
                return False
            await links.set_link_state(link, DEPROVISIONED)
            actor = await tenants.get_actor(tenant_id, link.actor_id)
            if actor is not None and actor.is_active:
                await tenants.save_actor(
                    actor.with_changes(
                        is_active=False, update_time=utcnow(), version=actor.version + 1
                    ),
                    expected_version=actor.version,
                )
        await self._on_change(tenant_id)
        await self._audit.append(
            tenant_id=tenant_id,
            actor=f"tenants/{tenant_id}/actors/{link.actor_id}",
            method="deprovision",
            permission="",
            resource=provider.name,
            outcome="OK",
            details={"subject": subject},
        )
        return True

    async def _record(
        self, provider: Provider, person: Person, method: str, outcome: str, actor: str, note: str
    ) -> None:
        await self._audit.append(
            tenant_id=provider.tenant_id,
            actor=actor or f"{provider.name}/subjects/{person.subject or person.username}"[:200],
            method=method,
            permission="",
            resource=provider.name,
            outcome=outcome,
            details={"username": person.username[:200], "note": note[:500]},
        )
