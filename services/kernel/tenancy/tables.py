"""The tenant registry: tenants (plan, limit overrides, state), their actors and API keys.

Written only by the tenant service; read by every process: the tenant's
standing and quotas, the indexer's list of tenants, and whether the actor and
API key a token was issued to still stand (admission, on every call). That
is why they sit in the kernel.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, ForeignKeyConstraint, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from services.common.db.base import Base, JsonDocument, UtcDateTime


class TenantRow(Base):
    """The tenant registry. Not row-level secured: it holds no clinical data and
    platform operators list it; tenant members only ever read their own row."""

    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(200))
    plan: Mapped[str] = mapped_column(String(20))
    # Overrides of the plan's limits; 0 means "the plan's default".
    max_users: Mapped[int] = mapped_column(Integer, default=0)
    max_patients: Mapped[int] = mapped_column(BigInteger, default=0)
    calls_per_minute: Mapped[int] = mapped_column(Integer, default=0)
    # Token quota overrides (migration 0009). A server default only: rows that code
    # written before them inserts, and tests at older schemas, leave them out.
    embedding_tokens_per_month: Mapped[int] = mapped_column(BigInteger, server_default="0")
    llm_tokens_per_day: Mapped[int] = mapped_column(BigInteger, server_default="0")
    state: Mapped[str] = mapped_column(String(20))
    labels: Mapped[dict[str, Any]] = mapped_column(JsonDocument, default=dict)
    create_time: Mapped[datetime] = mapped_column(UtcDateTime)
    update_time: Mapped[datetime] = mapped_column(UtcDateTime)
    version: Mapped[int] = mapped_column(Integer, default=1)


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
