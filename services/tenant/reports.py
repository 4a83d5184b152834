"""What a tenant's administrators and auditors may read about it: usage and audit.

Usage comes two ways: `usage` (GetUsage), calls per method and day; and
`export_usage` (ExportUsage), every metric per hour (services/common/hourly_usage.py,
docs/usage.md), for a tenant or, for platform operators, every tenant at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.common.audit import AuditEvent, AuditLog, AuditQuery
from services.common.caller import Caller
from services.common.db.base import utcnow
from services.common.errors import FieldViolation, Forbidden, Invalid, NotFound
from services.common.hourly_usage import (
    HourlyMeter,
    UsageHour,
    UsageQuery,
    decode_key,
    encode_key,
)
from services.common.pagination import decode_page_token, encode_page_token
from services.common.usage import UsageMeter, UsageRecord

DEFAULT_USAGE_WINDOW = timedelta(days=30)
ALL_TENANTS = "tenants/-"
MAX_EXPORT_DAYS = 366
PAGE_KIND = "usage"


@dataclass(frozen=True)
class UsageExport:
    """An ExportUsage request, decoded: `tenant_id` None for every tenant."""

    tenant_id: str | None
    start: datetime
    end: datetime
    metrics: Sequence[str]
    page_size: int
    page_token: str


class TenantReports:
    def __init__(
        self,
        usage: UsageMeter,
        audit: AuditLog,
        hourly: HourlyMeter,
        tenant_ids: Callable[[], Awaitable[list[str]]],
    ) -> None:
        self._usage = usage
        self._audit = audit
        self._hourly = hourly
        self._tenant_ids = tenant_ids

    async def usage(
        self, caller: Caller, tenant_id: str, start: datetime | None, end: datetime | None
    ) -> list[UsageRecord]:
        """Operators read any tenant's usage (billing); a tenant's auditors read their own."""
        if not caller.is_platform_operator:
            _require_own(caller, tenant_id)
            caller.require("audit:tenant", f"tenants/{tenant_id}")
        end = end or utcnow()
        start = start or end - DEFAULT_USAGE_WINDOW
        return await self._usage.read(tenant_id, start, end)

    async def export_usage(
        self, caller: Caller, export: UsageExport
    ) -> tuple[list[UsageHour], str]:
        """One page of hourly usage and the token of the next: as `usage` decides who may
        read a tenant's; every tenant's only for operators."""
        if export.tenant_id is None:
            if not caller.is_platform_operator:
                raise Forbidden(
                    "only platform operators export the usage of every tenant",
                    permission="admin:platform",
                )
            tenants = await self._tenant_ids()
        else:
            if not caller.is_platform_operator:
                _require_own(caller, export.tenant_id)
                caller.require("audit:tenant", f"tenants/{export.tenant_id}")
            elif export.tenant_id not in await self._tenant_ids():
                raise NotFound("Tenant", f"tenants/{export.tenant_id}")
            tenants = [export.tenant_id]
        after = None
        if export.page_token:
            after = decode_key(decode_page_token(PAGE_KIND, export.page_token))
            if after is None:
                raise Invalid(
                    FieldViolation("page_token", "is not a page token returned by this list")
                )
        rows = await self._hourly.read(
            UsageQuery(
                tenants, export.start, export.end, export.metrics, after, export.page_size + 1
            )
        )
        page = rows[: export.page_size]
        more = len(rows) > export.page_size and bool(page)
        return page, encode_page_token(PAGE_KIND, encode_key(page[-1].key)) if more else ""

    async def audit_events(self, caller: Caller, query: AuditQuery) -> tuple[list[AuditEvent], str]:
        """Only the tenant's own auditors: audit trails never leave their tenant."""
        _require_own(caller, query.tenant_id)
        caller.require("audit:tenant", f"tenants/{query.tenant_id}")
        return await self._audit.list(query)


def _require_own(caller: Caller, tenant_id: str) -> None:
    if caller.tenant_id != tenant_id:
        raise Forbidden(
            f"tenants/{tenant_id} is not the caller's tenant", permission="audit:tenant"
        )
