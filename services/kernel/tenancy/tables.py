"""The tenant registry table: one row per tenant, its plan, limit overrides and state.

Written only by the tenant service; read by every process (standing, quotas,
the indexer's list of tenants), which is why it sits in the kernel.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Integer, String
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
    state: Mapped[str] = mapped_column(String(20))
    labels: Mapped[dict[str, Any]] = mapped_column(JsonDocument, default=dict)
    create_time: Mapped[datetime] = mapped_column(UtcDateTime)
    update_time: Mapped[datetime] = mapped_column(UtcDateTime)
    version: Mapped[int] = mapped_column(Integer, default=1)
