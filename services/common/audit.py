"""The audit log: who did what, to which resource, when, with what outcome.

The audit interceptor appends one event per authenticated call (denied ones
included: those matter most). Events are written in their own transaction so
that a failed call is still audited.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, String, insert, select
from sqlalchemy.orm import Mapped, mapped_column

from services.common.db.base import Base, JsonDocument, UtcDateTime, utcnow
from services.common.db.engine import Database
from services.common.errors import FieldViolation, Invalid
from services.common.pagination import decode_page_token, take_page


class AuditEventRow(Base):
    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_tenant_time", "tenant_id", "event_time"),)

    # SQLite autoincrements only an INTEGER PRIMARY KEY.
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    tenant_id: Mapped[str] = mapped_column(String(40))
    event_time: Mapped[datetime] = mapped_column(UtcDateTime)
    actor: Mapped[str] = mapped_column(String(200))
    method: Mapped[str] = mapped_column(String(200))
    permission: Mapped[str] = mapped_column(String(80), default="")
    resource: Mapped[str] = mapped_column(String(400), default="")
    outcome: Mapped[str] = mapped_column(String(40))
    details: Mapped[dict[str, Any]] = mapped_column(JsonDocument, default=dict)


@dataclass(frozen=True)
class AuditEvent:
    id: int
    tenant_id: str
    event_time: datetime
    actor: str
    method: str
    permission: str
    resource: str
    outcome: str
    details: dict[str, Any]


@dataclass(frozen=True)
class AuditQuery:
    tenant_id: str
    page_size: int
    page_token: str = ""
    actor: str = ""
    resource: str = ""
    start_time: datetime | None = None


class AuditLog:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def append(
        self,
        *,
        tenant_id: str,
        actor: str,
        method: str,
        permission: str,
        resource: str,
        outcome: str,
        details: dict[str, Any] | None = None,
    ) -> None:
        # A Core insert: one statement, no ORM unit of work, on every call's path.
        async with self._db.transaction(tenant_id) as session:
            await session.execute(
                insert(AuditEventRow).values(
                    tenant_id=tenant_id,
                    event_time=utcnow(),
                    actor=actor,
                    method=method,
                    permission=permission,
                    resource=resource,
                    outcome=outcome,
                    details=details or {},
                )
            )

    async def list(self, query: AuditQuery) -> tuple[list[AuditEvent], str]:
        """Newest first; the page token is the id to continue below."""
        stmt = select(AuditEventRow).where(AuditEventRow.tenant_id == query.tenant_id)
        if query.page_token:
            stmt = stmt.where(AuditEventRow.id < _after_id(query.page_token))
        if query.actor:
            stmt = stmt.where(AuditEventRow.actor == query.actor)
        if query.resource:
            stmt = stmt.where(AuditEventRow.resource == query.resource)
        if query.start_time:
            stmt = stmt.where(AuditEventRow.event_time >= query.start_time)
        stmt = stmt.order_by(AuditEventRow.id.desc()).limit(query.page_size + 1)
        async with self._db.transaction(query.tenant_id) as session:
            rows = list((await session.scalars(stmt)).all())
        rows, token = take_page(rows, query.page_size, "audit", lambda r: str(r.id))
        return [
            AuditEvent(
                id=r.id,
                tenant_id=r.tenant_id,
                event_time=r.event_time,
                actor=r.actor,
                method=r.method,
                permission=r.permission,
                resource=r.resource,
                outcome=r.outcome,
                details=dict(r.details or {}),
            )
            for r in rows
        ], token


def _after_id(token: str) -> int:
    after = decode_page_token("audit", token)
    if not after.isdigit():
        raise Invalid(FieldViolation("page_token", "is not a page token returned by this list"))
    return int(after)
