"""Tenants, actors and API keys as the tenant domain sees them (plans: kernel.tenancy)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

from services.common.etags import etag_for
from services.kernel.tenancy.plans import ACTIVE, PLANS, Limits


@dataclass(frozen=True)
class Tenant:
    id: str
    display_name: str
    plan: str
    limit_overrides: Limits
    state: str
    labels: dict[str, str]
    create_time: datetime
    update_time: datetime
    version: int

    @property
    def name(self) -> str:
        return f"tenants/{self.id}"

    @property
    def etag(self) -> str:
        return etag_for(self.name, self.version)

    @property
    def limits(self) -> Limits:
        return self.limit_overrides.over(PLANS[self.plan])

    @property
    def active(self) -> bool:
        return self.state == ACTIVE


@dataclass(frozen=True)
class Actor:
    tenant_id: str
    id: str
    display_name: str
    role: str
    permissions: tuple[str, ...]
    organization: str = ""
    department: str = ""
    is_active: bool = True
    security_level: str = "medium"
    labels: dict[str, str] = field(default_factory=dict)
    create_time: datetime | None = None
    update_time: datetime | None = None
    version: int = 1

    @property
    def name(self) -> str:
        return f"tenants/{self.tenant_id}/actors/{self.id}"

    @property
    def etag(self) -> str:
        return etag_for(self.name, self.version)

    def with_changes(self, **changes: object) -> Actor:
        return replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ApiKey:
    tenant_id: str
    id: str
    actor_id: str
    display_name: str
    secret_prefix: str
    create_time: datetime
    expire_time: datetime | None = None
    revoke_time: datetime | None = None
    last_use_time: datetime | None = None
    # Only set on the value returned by creation; never stored.
    secret: str = ""

    @property
    def name(self) -> str:
        return f"tenants/{self.tenant_id}/actors/{self.actor_id}/apiKeys/{self.id}"
