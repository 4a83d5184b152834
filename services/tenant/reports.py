"""What a tenant's administrators and auditors may read about it: usage and audit."""

from __future__ import annotations

from datetime import datetime, timedelta

from services.common.audit import AuditEvent, AuditLog, AuditQuery
from services.common.caller import Caller
from services.common.db.base import utcnow
from services.common.errors import Forbidden
from services.common.usage import UsageMeter, UsageRecord

DEFAULT_USAGE_WINDOW = timedelta(days=30)


class TenantReports:
    def __init__(self, usage: UsageMeter, audit: AuditLog) -> None:
        self._usage = usage
        self._audit = audit

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
