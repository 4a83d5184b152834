"""The audit log: who did what, to which resource, when, with what outcome.

The audit interceptor appends one event per authenticated call (denied ones
included: those matter most). Events are written in their own transaction so
that a failed call is still audited, and a call returns only once its event is
committed. Concurrent calls share that commit (group commit): events that
arrive while a write is running go together in the next one, one transaction
per tenant, so the log costs one transaction per burst rather than per call.

Each tenant's events form a hash chain (services/common/audit_chain.py): a batch reads
the tenant's head and links its events after it; `hacs audit verify` checks the chain
and the signed checkpoints of its head (docs/security.md, "Audit integrity").
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, String, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from services.common.audit_chain import GENESIS, link
from services.common.db.base import Base, JsonDocument, UtcDateTime, utcnow
from services.common.db.engine import Database
from services.common.pagination import decode_page_number, take_page

# Tries to extend a tenant's chain when other processes keep extending it first.
CHAIN_ATTEMPTS = 8


class AuditEventRow(Base):
    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_tenant_time", "tenant_id", "event_time"),
        # One chain per tenant: two writers that read the same head cannot both extend it.
        Index("ux_audit_events_tenant_seq", "tenant_id", "seq", unique=True),
    )

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
    # The hash chain (services/common/audit_chain.py). Empty only on events written by a
    # build from before the chain (migration 0007), e.g. during the upgrade to it.
    seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    prev_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    content_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    chain_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)


_INSERT = insert(Base.metadata.tables["audit_events"])  # the table, not the entity: plain Core


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
    seq: int = 0
    prev_hash: str = ""
    chain_hash: str = ""


@dataclass(frozen=True)
class AuditQuery:
    tenant_id: str
    page_size: int
    page_token: str = ""
    actor: str = ""
    resource: str = ""
    start_time: datetime | None = None


class AuditLog:
    def __init__(self, db: Database, *, max_batch: int = 500) -> None:
        self._db = db
        self._max_batch = max_batch
        self._pending: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

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
        """Returns once the event is committed; raises if writing it failed."""
        row = {
            "tenant_id": tenant_id,
            "event_time": utcnow(),
            "actor": actor,
            "method": method,
            "permission": permission,
            "resource": resource,
            "outcome": outcome,
            "details": details or {},
        }
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((row, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_pending(), name="audit-writer")
        # A cancelled caller does not cancel its event: it is still written.
        await asyncio.shield(done)

    async def _write_pending(self) -> None:
        """Writes what is pending, then what arrived meanwhile, until nothing is left."""
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: len(batch)]
            by_tenant: dict[str, list[tuple[dict[str, Any], asyncio.Future[None]]]] = {}
            for item in batch:
                by_tenant.setdefault(item[0]["tenant_id"], []).append(item)
            for tenant_id, items in by_tenant.items():
                failure: BaseException | None = None
                for attempt in range(CHAIN_ATTEMPTS):
                    try:
                        await self._insert_chained(tenant_id, [row for row, _ in items])
                    except IntegrityError as exc:
                        # Another process extended this tenant's chain from the same head
                        # (the unique sequence refused ours): read the new head, again.
                        failure = exc
                        await asyncio.sleep(0.01 * (attempt + 1))
                        continue
                    except Exception as exc:
                        failure = exc
                    else:
                        failure = None
                    break
                for _, done in items:
                    if done.done():
                        continue
                    if failure is None:
                        done.set_result(None)
                    else:
                        done.set_exception(failure)

    async def _insert_chained(self, tenant_id: str, rows: list[dict[str, Any]]) -> None:
        """Append `rows` to the tenant's chain, in one transaction (a Core executemany)."""
        async with self._db.transaction(tenant_id) as session:
            seq, prev = await chain_head(session, tenant_id)
            chained = []
            for row in rows:
                seq += 1
                fields = link(seq, prev, row)
                prev = fields.chain_hash
                chained.append(
                    {
                        **row,
                        "seq": fields.seq,
                        "prev_hash": fields.prev_hash,
                        "content_hash": fields.content_hash,
                        "chain_hash": fields.chain_hash,
                    }
                )
            await session.execute(_INSERT, chained)

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
        async with self._db.read(query.tenant_id) as session:
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
                seq=r.seq or 0,
                prev_hash=r.prev_hash or "",
                chain_hash=r.chain_hash or "",
            )
            for r in rows
        ], token


async def chain_head(session: AsyncSession, tenant_id: str) -> tuple[int, str]:
    """The tenant's last chained event: (sequence, chain hash); (0, 64 zeros) when none."""
    head = (
        await session.execute(
            select(AuditEventRow.seq, AuditEventRow.chain_hash)
            .where(AuditEventRow.tenant_id == tenant_id, AuditEventRow.seq.is_not(None))
            .order_by(AuditEventRow.seq.desc())
            .limit(1)
        )
    ).first()
    return (int(head[0] or 0), str(head[1])) if head else (0, GENESIS)


def _after_id(token: str) -> int:
    return decode_page_number("audit", token)
