"""The identity tables: providers a tenant registered, and the people linked through them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from services.common.db.base import Base, JsonDocument, UtcDateTime


class IdentityProviderRow(Base):
    __tablename__ = "identity_providers"

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(10))  # oidc, ldap, saml
    display_name: Mapped[str] = mapped_column(String(200))
    # The kind's settings (the proto message's fields; secrets only by reference).
    config: Mapped[dict[str, Any]] = mapped_column(JsonDocument, default=dict)
    role_mappings: Mapped[list[dict[str, Any]]] = mapped_column(JsonDocument, default=list)
    allowed_groups: Mapped[list[str]] = mapped_column(JsonDocument, default=list)
    jit_provisioning: Mapped[bool] = mapped_column(Boolean, default=False)
    state: Mapped[str] = mapped_column(String(20))  # active, disabled
    create_time: Mapped[datetime] = mapped_column(UtcDateTime)
    update_time: Mapped[datetime] = mapped_column(UtcDateTime)
    version: Mapped[int] = mapped_column(Integer, default=1)


class ExternalIdentityRow(Base):
    """A person as a provider knows them, linked to the HACS actor they sign in as."""

    __tablename__ = "external_identities"
    __table_args__ = (Index("ix_external_identities_actor", "tenant_id", "actor_id"),)

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    provider_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    # The provider's stable id: OIDC `sub`, SAML NameID, LDAP entry DN.
    subject: Mapped[str] = mapped_column(String(400), primary_key=True)
    actor_id: Mapped[str] = mapped_column(String(40))
    username: Mapped[str] = mapped_column(String(200), default="")
    groups: Mapped[list[str]] = mapped_column(JsonDocument, default=list)
    state: Mapped[str] = mapped_column(String(20))  # active, deprovisioned
    create_time: Mapped[datetime] = mapped_column(UtcDateTime)
    last_sign_in_time: Mapped[datetime] = mapped_column(UtcDateTime)


class SignInNonceRow(Base):
    """One-use values of browser sign-in: an OIDC login's state (with its nonce and PKCE
    verifier), a SAML request's id, a SAML assertion's id once consumed (replay)."""

    __tablename__ = "sign_in_nonces"

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20), primary_key=True)
    value: Mapped[str] = mapped_column(String(200), primary_key=True)
    provider_id: Mapped[str] = mapped_column(String(40))
    data: Mapped[dict[str, Any]] = mapped_column(JsonDocument, default=dict)
    expire_time: Mapped[datetime] = mapped_column(UtcDateTime)
