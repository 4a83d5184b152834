"""Usage metering: calls and errors per tenant, method and UTC day.

Counting happens in memory on the request path and is flushed to the
database every few seconds (and at shutdown) as upserts, so metering costs a
dictionary increment per call rather than a write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import BigInteger, Date, String, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, mapped_column

from services.common.db.base import Base, utcnow
from services.common.db.engine import Database

log = logging.getLogger(__name__)


class UsageCounterRow(Base):
    __tablename__ = "usage_counters"

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    method: Mapped[str] = mapped_column(String(200), primary_key=True)
    calls: Mapped[int] = mapped_column(BigInteger, default=0)
    errors: Mapped[int] = mapped_column(BigInteger, default=0)


@dataclass(frozen=True)
class UsageRecord:
    day: date
    method: str
    calls: int
    errors: int


class UsageMeter:
    def __init__(self, db: Database, flush_interval_seconds: float = 5.0) -> None:
        self._db = db
        self._interval = flush_interval_seconds
        self._calls: Counter[tuple[str, date, str]] = Counter()
        self._errors: Counter[tuple[str, date, str]] = Counter()
        self._task: asyncio.Task[None] | None = None

    def record(self, tenant_id: str, method: str, ok: bool) -> None:
        key = (tenant_id, utcnow().date(), method)
        self._calls[key] += 1
        if not ok:
            self._errors[key] += 1

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="usage-meter-flush")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.flush()
            except Exception:  # a flush failure must not stop metering; counts are kept
                log.exception("usage flush failed; will retry")

    async def flush(self) -> None:
        calls, errors = self._calls, self._errors
        self._calls, self._errors = Counter(), Counter()
        pending: dict[str, list[tuple[date, str]]] = {}
        for tenant_id, day, method in calls:
            pending.setdefault(tenant_id, []).append((day, method))
        for tenant_id in list(pending):
            try:
                await self._write(
                    tenant_id,
                    [
                        (
                            day,
                            method,
                            calls[(tenant_id, day, method)],
                            errors[(tenant_id, day, method)],
                        )
                        for day, method in pending[tenant_id]
                    ],
                )
            except Exception:
                # Put back what was not written, so the next flush carries it.
                for other, keys in pending.items():
                    for day, method in keys:
                        self._calls[(other, day, method)] += calls[(other, day, method)]
                        self._errors[(other, day, method)] += errors[(other, day, method)]
                raise
            del pending[tenant_id]

    async def _write(self, tenant_id: str, rows: list[tuple[date, str, int, int]]) -> None:
        insert = postgresql.insert if self._db.is_postgres else sqlite.insert
        async with self._db.transaction(tenant_id) as session:
            for day, method, n, e in rows:
                stmt = (
                    insert(UsageCounterRow)
                    .values(tenant_id=tenant_id, day=day, method=method, calls=n, errors=e)
                    .on_conflict_do_update(
                        index_elements=["tenant_id", "day", "method"],
                        set_={
                            "calls": UsageCounterRow.calls + n,
                            "errors": UsageCounterRow.errors + e,
                        },
                    )
                )
                await session.execute(stmt)

    async def read(self, tenant_id: str, start: datetime, end: datetime) -> list[UsageRecord]:
        await self.flush()
        stmt = (
            select(UsageCounterRow)
            .where(
                UsageCounterRow.tenant_id == tenant_id,
                UsageCounterRow.day >= start.date(),
                UsageCounterRow.day <= end.date(),
            )
            .order_by(UsageCounterRow.day, UsageCounterRow.method)
        )
        async with self._db.transaction(tenant_id) as session:
            rows = (await session.scalars(stmt)).all()
        return [UsageRecord(r.day, r.method, r.calls, r.errors) for r in rows]
