"""Identity providers a tenant registers, and the people linked through them (storage)."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.db.base import utcnow
from services.common.db.engine import Database
from services.common.errors import Unavailable
from services.common.etags import etag_for
from services.tenant.identity.tables import (
    ExternalIdentityRow,
    IdentityProviderRow,
    SignInNonceRow,
)

KINDS = ("oidc", "ldap", "saml")
ACTIVE, DISABLED = "active", "disabled"
SECRET_REF = re.compile(r"^(env:[A-Za-z_][A-Za-z0-9_]*|file:/\S+)\Z")


@dataclass(frozen=True)
class RoleMapping:
    group: str
    role: str
    permissions: tuple[str, ...] = ()


@dataclass(frozen=True)
class Provider:
    tenant_id: str
    id: str
    kind: str
    display_name: str
    config: dict[str, Any]
    role_mappings: tuple[RoleMapping, ...] = ()
    allowed_groups: tuple[str, ...] = ()
    jit_provisioning: bool = False
    state: str = ACTIVE
    create_time: datetime | None = None
    update_time: datetime | None = None
    version: int = 1

    @property
    def name(self) -> str:
        return f"tenants/{self.tenant_id}/identityProviders/{self.id}"

    @property
    def etag(self) -> str:
        return etag_for(self.name, self.version)

    @property
    def active(self) -> bool:
        return self.state == ACTIVE

    def with_changes(self, **changes: Any) -> Provider:
        return replace(self, **changes)


@dataclass(frozen=True)
class Person:
    """Someone a provider vouched for: its stable subject, name and groups."""

    subject: str
    username: str
    display_name: str = ""
    groups: tuple[str, ...] = ()
    claims: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Link:
    tenant_id: str
    provider_id: str
    subject: str
    actor_id: str
    username: str
    groups: tuple[str, ...]
    state: str


def actor_id_for(provider_id: str, subject: str) -> str:
    """The HACS actor id of a person first seen through a provider: stable, opaque, valid."""
    digest = hashlib.sha256(f"{provider_id}\0{subject}".encode()).hexdigest()
    return f"sso-{digest[:24]}"


def resolve_secret(reference: str) -> str:
    """A secret named by reference: `env:NAME` or `file:/path` (never stored itself)."""
    if not SECRET_REF.match(reference):
        raise Unavailable(f"secret reference {reference!r} is not env:NAME or file:/path")
    kind, _, where = reference.partition(":")
    if kind == "env":
        value = os.environ.get(where, "")
        if not value:
            raise Unavailable(f"the tenant service has no {where} set (secret reference)")
        return value
    try:
        return Path(where).read_text().strip()
    except OSError as exc:
        raise Unavailable(f"cannot read the secret file {where}: {exc.strerror}") from exc


class ProviderStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    @asynccontextmanager
    async def transaction(self, tenant_id: str) -> AsyncIterator[ProviderTx]:
        async with self._db.transaction(tenant_id) as session:
            yield ProviderTx(session)


class ProviderTx:
    def __init__(self, session: AsyncSession) -> None:
        self._s = session

    async def get(self, tenant_id: str, provider_id: str) -> Provider | None:
        row = await self._s.scalar(
            select(IdentityProviderRow).where(
                IdentityProviderRow.tenant_id == tenant_id, IdentityProviderRow.id == provider_id
            )
        )
        return _provider(row) if row else None

    async def add(self, provider: Provider) -> None:
        self._s.add(
            IdentityProviderRow(
                tenant_id=provider.tenant_id,
                id=provider.id,
                create_time=provider.create_time,
                **_columns(provider),
            )
        )
        await self._s.flush()

    async def save(self, provider: Provider, *, expected_version: int) -> bool:
        result = await self._s.execute(
            update(IdentityProviderRow)
            .where(
                IdentityProviderRow.tenant_id == provider.tenant_id,
                IdentityProviderRow.id == provider.id,
                IdentityProviderRow.version == expected_version,
            )
            .values(**_columns(provider))
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def list_providers(self, tenant_id: str, *, after_id: str, limit: int) -> list[Provider]:
        rows = await self._s.scalars(
            select(IdentityProviderRow)
            .where(IdentityProviderRow.tenant_id == tenant_id, IdentityProviderRow.id > after_id)
            .order_by(IdentityProviderRow.id)
            .limit(limit)
        )
        return [_provider(r) for r in rows]

    async def get_link(self, tenant_id: str, provider_id: str, subject: str) -> Link | None:
        row = await self._s.scalar(
            select(ExternalIdentityRow).where(
                ExternalIdentityRow.tenant_id == tenant_id,
                ExternalIdentityRow.provider_id == provider_id,
                ExternalIdentityRow.subject == subject,
            )
        )
        return _link(row) if row else None

    async def links(self, tenant_id: str, provider_id: str) -> list[Link]:
        rows = await self._s.scalars(
            select(ExternalIdentityRow)
            .where(
                ExternalIdentityRow.tenant_id == tenant_id,
                ExternalIdentityRow.provider_id == provider_id,
            )
            .order_by(ExternalIdentityRow.subject)
        )
        return [_link(r) for r in rows]

    async def put_link(self, link: Link, when: datetime, *, new: bool) -> None:
        values = {
            "actor_id": link.actor_id,
            "username": link.username,
            "groups": list(link.groups),
            "state": link.state,
            "last_sign_in_time": when,
        }
        if new:
            self._s.add(
                ExternalIdentityRow(
                    tenant_id=link.tenant_id,
                    provider_id=link.provider_id,
                    subject=link.subject,
                    create_time=when,
                    **values,
                )
            )
            await self._s.flush()
            return
        await self._s.execute(
            update(ExternalIdentityRow)
            .where(
                ExternalIdentityRow.tenant_id == link.tenant_id,
                ExternalIdentityRow.provider_id == link.provider_id,
                ExternalIdentityRow.subject == link.subject,
            )
            .values(**values)
        )

    async def set_link_state(self, link: Link, state: str) -> None:
        await self._s.execute(
            update(ExternalIdentityRow)
            .where(
                ExternalIdentityRow.tenant_id == link.tenant_id,
                ExternalIdentityRow.provider_id == link.provider_id,
                ExternalIdentityRow.subject == link.subject,
            )
            .values(state=state)
        )

    # -- one-use values of browser sign-in ------------------------------------------

    async def put_nonce(
        self,
        tenant_id: str,
        kind: str,
        value: str,
        provider_id: str,
        data: dict[str, Any],
        expire_time: datetime,
    ) -> bool:
        """Keep `value` until `expire_time`; False when it is already kept (a replay)."""
        await self._s.execute(
            delete(SignInNonceRow).where(
                SignInNonceRow.tenant_id == tenant_id,
                SignInNonceRow.expire_time < utcnow(),
            )
        )
        exists = await self._s.scalar(
            select(SignInNonceRow.value).where(
                SignInNonceRow.tenant_id == tenant_id,
                SignInNonceRow.kind == kind,
                SignInNonceRow.value == value,
            )
        )
        if exists is not None:
            return False
        self._s.add(
            SignInNonceRow(
                tenant_id=tenant_id,
                kind=kind,
                value=value,
                provider_id=provider_id,
                data=data,
                expire_time=expire_time,
            )
        )
        await self._s.flush()
        return True

    async def take_nonce(
        self, tenant_id: str, kind: str, value: str, provider_id: str
    ) -> dict[str, Any] | None:
        """The data kept with `value`, removed so it serves once; None when unknown,
        expired, or kept for another provider."""
        row = await self._s.scalar(
            select(SignInNonceRow).where(
                SignInNonceRow.tenant_id == tenant_id,
                SignInNonceRow.kind == kind,
                SignInNonceRow.value == value,
            )
        )
        if row is None:
            return None
        await self._s.delete(row)
        if row.provider_id != provider_id or row.expire_time <= utcnow():
            return None
        return dict(row.data or {})


def _columns(provider: Provider) -> dict[str, Any]:
    return {
        "kind": provider.kind,
        "display_name": provider.display_name,
        "config": dict(provider.config),
        "role_mappings": [
            {"group": m.group, "role": m.role, "permissions": list(m.permissions)}
            for m in provider.role_mappings
        ],
        "allowed_groups": list(provider.allowed_groups),
        "jit_provisioning": provider.jit_provisioning,
        "state": provider.state,
        "update_time": provider.update_time,
        "version": provider.version,
    }


def _provider(row: IdentityProviderRow) -> Provider:
    return Provider(
        tenant_id=row.tenant_id,
        id=row.id,
        kind=row.kind,
        display_name=row.display_name,
        config=dict(row.config or {}),
        role_mappings=tuple(
            RoleMapping(m["group"], m["role"], tuple(m.get("permissions", ())))
            for m in row.role_mappings or []
        ),
        allowed_groups=tuple(row.allowed_groups or ()),
        jit_provisioning=row.jit_provisioning,
        state=row.state,
        create_time=row.create_time,
        update_time=row.update_time,
        version=row.version,
    )


def _link(row: ExternalIdentityRow) -> Link:
    return Link(
        tenant_id=row.tenant_id,
        provider_id=row.provider_id,
        subject=row.subject,
        actor_id=row.actor_id,
        username=row.username,
        groups=tuple(row.groups or ()),
        state=row.state,
    )
