"""Plan quotas on metered usage: embedding tokens per month, LLM tokens per day.

The limits come with the tenant's standing (its plan, or its own limits; the
admission cache holds them). What the tenant used in the period is the
database's total, read once per tenant and period and re-read after every flush
of the hourly meter (in the background, off the request path), plus what this
process counted and has not written yet.

A call is refused with RESOURCE_EXHAUSTED, a QuotaFailure naming the quota and
a RetryInfo saying when the period starts again, once the tenant's usage has
reached its quota. The call that crosses the quota completes, and with several
replicas each learns the others' usage one flush late: a tenant can go over by
what it uses in that time (seconds), not more. Quotas only apply to a tenant's
own calls (usage_attribution.py): background work done for it is counted, never
refused. The platform tenant has no quotas.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from services.common.caller import PLATFORM_TENANT
from services.common.db.base import utcnow
from services.common.errors import QuotaExceeded, QuotaViolation
from services.common.hourly_usage import (
    EMBEDDING_TOKENS,
    LLM_INPUT_TOKENS,
    LLM_OUTPUT_TOKENS,
    HourlyMeter,
)
from services.common.runtime.admission import TenantStanding

log = logging.getLogger(__name__)

DAY = "day"
MONTH = "month"


@dataclass(frozen=True)
class Quota:
    name: str  # the limit's field, e.g. "embedding_tokens_per_month"
    what: str  # in words, for the refusal
    metrics: tuple[str, ...]
    period: str  # DAY or MONTH, UTC
    limit: Callable[[TenantStanding], int]


EMBEDDING_TOKENS_PER_MONTH = Quota(
    "embedding_tokens_per_month",
    "embedding tokens per month",
    (EMBEDDING_TOKENS,),
    MONTH,
    lambda s: s.embedding_tokens_per_month,
)
LLM_TOKENS_PER_DAY = Quota(
    "llm_tokens_per_day",
    "LLM tokens (input and output) per day",
    (LLM_INPUT_TOKENS, LLM_OUTPUT_TOKENS),
    DAY,
    lambda s: s.llm_tokens_per_day,
)


def period_of(period: str, moment: datetime) -> tuple[datetime, datetime]:
    """The UTC day or calendar month `moment` falls in: [start, end)."""
    moment = moment.astimezone(UTC)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == DAY:
        return day, day + timedelta(days=1)
    start = day.replace(day=1)
    end = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return start, end


class UsageQuotas:
    def __init__(
        self,
        meter: HourlyMeter,
        standing: Callable[[str], Awaitable[TenantStanding | None]],
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._meter = meter
        self._standing = standing
        self._clock = clock
        # (tenant, quota name, period start) -> the database's total when last read
        self._stored: dict[tuple[str, str, datetime], int] = {}
        self._quotas: dict[str, Quota] = {}
        meter.after_flush(self.refresh)

    async def check(self, tenant_id: str, quota: Quota) -> None:
        """Raise QuotaExceeded (with the time the period resets) when the tenant is at or
        over `quota`."""
        if tenant_id == PLATFORM_TENANT:
            return
        standing = await self._standing(tenant_id)
        limit = quota.limit(standing) if standing is not None else 0
        if limit <= 0:
            return
        now = self._clock()
        start, end = period_of(quota.period, now)
        key = (tenant_id, quota.name, start)
        if key not in self._stored:
            self._quotas[quota.name] = quota
            self._stored[key] = await self._meter.stored_total(tenant_id, quota.metrics, start)
        used = self._stored[key] + self._meter.pending(tenant_id, quota.metrics, start)
        if used >= limit:
            raise QuotaExceeded(
                f"tenant {tenant_id!r} used {used:,} of its {limit:,} {quota.what}; "
                f"the quota resets at {end.isoformat()}",
                [QuotaViolation(f"tenants/{tenant_id}", f"{quota.name}: {limit}")],
                retry_after_seconds=(end - now).total_seconds(),
            )

    async def refresh(self) -> Callable[[], None]:
        """Re-read the totals in use after a flush wrote this process's counts (the meter
        applies them as those counts leave its pending ones); past periods are dropped."""
        now = self._clock()
        fresh: dict[tuple[str, str, datetime], int] = {}
        for key in list(self._stored):
            tenant_id, name, start = key
            quota = self._quotas[name]
            if period_of(quota.period, now)[0] != start:
                continue
            try:
                fresh[key] = await self._meter.stored_total(tenant_id, quota.metrics, start)
            except Exception:  # forgotten: the next check reads it again
                log.exception("re-reading the %s usage of %s failed", name, tenant_id)

        def apply() -> None:
            # Totals first read while this ran are dropped too: read before the flush
            # committed, they would miss what it wrote.
            self._stored = fresh

        return apply
