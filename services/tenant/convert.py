"""Protobuf messages <-> tenant domain objects. No rules here, only mapping."""

from __future__ import annotations

from datetime import datetime

from hacs.tenant.v1 import tenant_pb2

from services.common.timestamps import timestamp
from services.kernel.tenancy.plans import ACTIVE, SUSPENDED, Limits
from services.tenant.models import Actor, ApiKey, Tenant

PLAN_NAMES = {
    tenant_pb2.PLAN_FREE: "free",
    tenant_pb2.PLAN_STANDARD: "standard",
    tenant_pb2.PLAN_ENTERPRISE: "enterprise",
}
PLAN_ENUMS = {v: k for k, v in PLAN_NAMES.items()}
STATE_ENUMS = {ACTIVE: tenant_pb2.TENANT_STATE_ACTIVE, SUSPENDED: tenant_pb2.TENANT_STATE_SUSPENDED}


def tenant_to_proto(tenant: Tenant) -> tenant_pb2.Tenant:
    limits = tenant.limits
    return tenant_pb2.Tenant(
        name=tenant.name,
        display_name=tenant.display_name,
        plan=PLAN_ENUMS[tenant.plan],
        limits=tenant_pb2.TenantLimits(
            max_users=limits.max_users,
            max_patients=limits.max_patients,
            calls_per_minute=limits.calls_per_minute,
            embedding_tokens_per_month=limits.embedding_tokens_per_month,
            llm_tokens_per_day=limits.llm_tokens_per_day,
        ),
        state=STATE_ENUMS[tenant.state],
        labels=tenant.labels,
        create_time=timestamp(tenant.create_time),
        update_time=timestamp(tenant.update_time),
        etag=tenant.etag,
    )


def tenant_from_proto(tenant_id: str, message: tenant_pb2.Tenant, default_plan: str) -> Tenant:
    """Input fields only; output fields are set by the domain."""
    return Tenant(
        id=tenant_id,
        display_name=message.display_name,
        plan=PLAN_NAMES.get(message.plan, default_plan),
        limit_overrides=Limits(
            max_users=message.limits.max_users,
            max_patients=message.limits.max_patients,
            calls_per_minute=message.limits.calls_per_minute,
            embedding_tokens_per_month=message.limits.embedding_tokens_per_month,
            llm_tokens_per_day=message.limits.llm_tokens_per_day,
        ),
        state=ACTIVE,
        labels=dict(message.labels),
        create_time=datetime.min,
        update_time=datetime.min,
        version=0,
    )


def actor_to_proto(actor: Actor) -> tenant_pb2.Actor:
    return tenant_pb2.Actor(
        name=actor.name,
        display_name=actor.display_name,
        role=actor.role,
        permissions=list(actor.permissions),
        organization=actor.organization,
        department=actor.department,
        is_active=actor.is_active,
        security_level=actor.security_level,
        labels=actor.labels,
        create_time=timestamp(actor.create_time),
        update_time=timestamp(actor.update_time),
        etag=actor.etag,
    )


def actor_from_proto(tenant_id: str, actor_id: str, message: tenant_pb2.Actor) -> Actor:
    return Actor(
        tenant_id=tenant_id,
        id=actor_id,
        display_name=message.display_name,
        role=message.role,
        permissions=tuple(dict.fromkeys(message.permissions)),
        organization=message.organization,
        department=message.department,
        security_level=message.security_level or "medium",
        labels=dict(message.labels),
    )


def api_key_to_proto(key: ApiKey) -> tenant_pb2.ApiKey:
    return tenant_pb2.ApiKey(
        name=key.name,
        display_name=key.display_name,
        secret=key.secret,
        secret_prefix=key.secret_prefix,
        expire_time=timestamp(key.expire_time),
        create_time=timestamp(key.create_time),
        revoke_time=timestamp(key.revoke_time),
        last_use_time=timestamp(key.last_use_time),
    )
