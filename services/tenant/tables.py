"""Tables of the tenant service: actors and API keys (the tenants table: kernel.tenancy)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column

from services.common.db.base import Base, JsonDocument, UtcDateTime
from services.kernel.tenancy.tables import TenantRow  # noqa: F401  (actors reference tenants)


class ActorRow(Base):
    __tablename__ = "actors"
    __table_args__ = (ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),)

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(40))
    permissions: Mapped[list[str]] = mapped_column(JsonDocument, default=list)
    organization: Mapped[str] = mapped_column(String(200), default="")
    department: Mapped[str] = mapped_column(String(200), default="")
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    security_level: Mapped[str] = mapped_column(String(20), default="medium")
    labels: Mapped[dict[str, Any]] = mapped_column(JsonDocument, default=dict)
    create_time: Mapped[datetime] = mapped_column(UtcDateTime)
    update_time: Mapped[datetime] = mapped_column(UtcDateTime)
    version: Mapped[int] = mapped_column(Integer, default=1)


class ApiKeyRow(Base):
    __tablename__ = "api_keys"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "actor_id"], ["actors.tenant_id", "actors.id"], ondelete="CASCADE"
        ),
        Index("ix_api_keys_tenant_actor", "tenant_id", "actor_id"),
    )

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    actor_id: Mapped[str] = mapped_column(String(40))
    display_name: Mapped[str] = mapped_column(String(200), default="")
    # SHA-256 of the whole key: keys carry 256 random bits, so a slow hash adds nothing.
    secret_hash: Mapped[str] = mapped_column(String(64))
    secret_prefix: Mapped[str] = mapped_column(String(40))
    expire_time: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    create_time: Mapped[datetime] = mapped_column(UtcDateTime)
    revoke_time: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    last_use_time: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
