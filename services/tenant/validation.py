"""Validators for every TenantService request (registered on import)."""

from __future__ import annotations

from datetime import timedelta

from hacs.tenant.v1 import tenant_pb2
from hacs.tenant.v1 import tenant_service_pb2 as pb

from services.common import names
from services.common.hourly_usage import METRICS
from services.common.permissions import ROLES, SECURITY_LEVELS, is_valid_permission
from services.common.validation import Violations, validates
from services.tenant.actors import UPDATABLE_FIELDS as ACTOR_FIELDS
from services.tenant.reports import ALL_TENANTS, MAX_EXPORT_DAYS
from services.tenant.tenants import UPDATABLE_FIELDS as TENANT_FIELDS

MAX_TTL_FIELD = 24 * 3600


def _actor_fields(
    v: Violations, prefix: str, actor: tenant_pb2.Actor, *, role_required: bool
) -> None:
    if role_required or actor.role:
        v.one_of(f"{prefix}.role", actor.role, ROLES)
    v.max_length(f"{prefix}.display_name", actor.display_name, 200)
    v.max_length(f"{prefix}.organization", actor.organization, 200)
    v.max_length(f"{prefix}.department", actor.department, 200)
    v.one_of(f"{prefix}.security_level", actor.security_level, SECURITY_LEVELS, allow_empty=True)
    for i, permission in enumerate(actor.permissions):
        if not is_valid_permission(permission):
            v.add(
                f"{prefix}.permissions[{i}]",
                f"{permission!r} is not 'action:resource' (actions: read, write, delete, admin, "
                "audit; resource: lowercase name or *)",
            )
    v.labels(f"{prefix}.labels", dict(actor.labels))


def _limits(v: Violations, prefix: str, limits: tenant_pb2.TenantLimits) -> None:
    for field in (
        "max_users",
        "max_patients",
        "calls_per_minute",
        "embedding_tokens_per_month",
        "llm_tokens_per_day",
    ):
        if getattr(limits, field) < 0:
            v.add(f"{prefix}.{field}", "must not be negative (0 means the plan's default)")


@validates(pb.CreateTenantRequest)
def _create_tenant(r: pb.CreateTenantRequest, v: Violations) -> None:
    v.identifier("tenant_id", r.tenant_id)
    if v.required("tenant.display_name", r.tenant.display_name):
        v.max_length("tenant.display_name", r.tenant.display_name, 200)
    if r.tenant.plan not in (0, *tenant_pb2.Plan.values()):
        v.add("tenant.plan", "unknown plan")
    _limits(v, "tenant.limits", r.tenant.limits)
    v.labels("tenant.labels", dict(r.tenant.labels))
    v.required("admin.display_name", r.admin.display_name)
    _actor_fields(v, "admin", r.admin, role_required=False)


@validates(pb.GetTenantRequest)
def _get_tenant(r: pb.GetTenantRequest, v: Violations) -> None:
    v.resource_name("name", r.name, names.TENANT, "tenants/{tenant}")


@validates(pb.ListTenantsRequest)
def _list_tenants(r: pb.ListTenantsRequest, v: Violations) -> None:
    v.page(r.page_size)


@validates(pb.UpdateTenantRequest)
def _update_tenant(r: pb.UpdateTenantRequest, v: Violations) -> None:
    v.resource_name("tenant.name", r.tenant.name, names.TENANT, "tenants/{tenant}")
    v.update_mask(r.update_mask, TENANT_FIELDS)
    paths = set(r.update_mask.paths)
    if "display_name" in paths and v.required("tenant.display_name", r.tenant.display_name):
        v.max_length("tenant.display_name", r.tenant.display_name, 200)
    if "plan" in paths and r.tenant.plan not in tenant_pb2.Plan.values()[1:]:
        v.add("tenant.plan", "choose PLAN_FREE, PLAN_STANDARD or PLAN_ENTERPRISE")
    _limits(v, "tenant.limits", r.tenant.limits)
    v.labels("tenant.labels", dict(r.tenant.labels))


@validates(pb.DeleteTenantRequest)
def _delete_tenant(r: pb.DeleteTenantRequest, v: Violations) -> None:
    v.resource_name("name", r.name, names.TENANT, "tenants/{tenant}")


@validates(pb.CreateActorRequest)
def _create_actor(r: pb.CreateActorRequest, v: Violations) -> None:
    v.resource_name("parent", r.parent, names.TENANT, "tenants/{tenant}")
    v.identifier("actor_id", r.actor_id)
    v.required("actor.display_name", r.actor.display_name)
    _actor_fields(v, "actor", r.actor, role_required=True)


@validates(pb.GetActorRequest)
def _get_actor(r: pb.GetActorRequest, v: Violations) -> None:
    v.resource_name("name", r.name, names.ACTOR, "tenants/{tenant}/actors/{actor}")


@validates(pb.ListActorsRequest)
def _list_actors(r: pb.ListActorsRequest, v: Violations) -> None:
    v.resource_name("parent", r.parent, names.TENANT, "tenants/{tenant}")
    v.page(r.page_size)


@validates(pb.UpdateActorRequest)
def _update_actor(r: pb.UpdateActorRequest, v: Violations) -> None:
    v.resource_name("actor.name", r.actor.name, names.ACTOR, "tenants/{tenant}/actors/{actor}")
    v.update_mask(r.update_mask, ACTOR_FIELDS)
    paths = set(r.update_mask.paths)
    if "display_name" in paths:
        v.required("actor.display_name", r.actor.display_name)
    _actor_fields(v, "actor", r.actor, role_required="role" in paths)


@validates(pb.DeleteActorRequest)
def _delete_actor(r: pb.DeleteActorRequest, v: Violations) -> None:
    v.resource_name("name", r.name, names.ACTOR, "tenants/{tenant}/actors/{actor}")


@validates(pb.CreateApiKeyRequest)
def _create_api_key(r: pb.CreateApiKeyRequest, v: Violations) -> None:
    v.resource_name("parent", r.parent, names.ACTOR, "tenants/{tenant}/actors/{actor}")
    v.max_length("api_key.display_name", r.api_key.display_name, 200)
    if r.api_key.HasField("expire_time") and r.api_key.expire_time.seconds <= 0:
        v.add("api_key.expire_time", "must be a time after 1970")


@validates(pb.ListApiKeysRequest)
def _list_api_keys(r: pb.ListApiKeysRequest, v: Violations) -> None:
    v.resource_name("parent", r.parent, names.ACTOR, "tenants/{tenant}/actors/{actor}")
    v.page(r.page_size)


@validates(pb.RevokeApiKeyRequest)
def _revoke_api_key(r: pb.RevokeApiKeyRequest, v: Violations) -> None:
    v.resource_name(
        "name", r.name, names.API_KEY, "tenants/{tenant}/actors/{actor}/apiKeys/{api_key}"
    )


@validates(pb.IssueTokenRequest)
def _issue_token(r: pb.IssueTokenRequest, v: Violations) -> None:
    v.required("api_key", r.api_key)
    v.max_length("api_key", r.api_key, 200)
    if r.ttl_seconds < 0 or r.ttl_seconds > MAX_TTL_FIELD:
        v.add("ttl_seconds", f"must be between 0 (server default) and {MAX_TTL_FIELD}")
    for i, scope in enumerate(r.scopes):
        if not is_valid_permission(scope):
            v.add(f"scopes[{i}]", f"{scope!r} is not 'action:resource'")


@validates(pb.GetJwksRequest)
def _get_jwks(r: pb.GetJwksRequest, v: Violations) -> None:
    """Nothing to check; registered so every request type has a validator."""


@validates(pb.GetUsageRequest)
def _get_usage(r: pb.GetUsageRequest, v: Violations) -> None:
    v.resource_name("name", r.name, names.TENANT, "tenants/{tenant}")
    both = r.HasField("start_time") and r.HasField("end_time")
    if both and r.end_time.ToDatetime() <= r.start_time.ToDatetime():
        v.add("end_time", "must be after start_time")


@validates(pb.ExportUsageRequest)
def _export_usage(r: pb.ExportUsageRequest, v: Violations) -> None:
    named = r.parent == ALL_TENANTS or names.TENANT.match(r.parent)
    if v.required("parent", r.parent) and not named:
        v.add(
            "parent",
            f"{r.parent!r} is neither a tenant ('tenants/{{tenant}}') nor every tenant "
            f"({ALL_TENANTS!r})",
        )
    for field in ("start_time", "end_time"):
        if not r.HasField(field):
            v.add(field, "is required (a UTC time; rows are per hour)")
    if r.HasField("start_time") and r.HasField("end_time"):
        span = r.end_time.ToDatetime() - r.start_time.ToDatetime()
        if span <= timedelta(0):
            v.add("end_time", "must be after start_time")
        elif span > timedelta(days=MAX_EXPORT_DAYS):
            v.add(
                "end_time",
                f"is more than {MAX_EXPORT_DAYS} days after start_time; export in parts",
            )
    for i, metric in enumerate(r.metrics):
        if metric not in METRICS:
            v.add(f"metrics[{i}]", f"{metric!r} is not one of: {', '.join(METRICS)}")
        elif metric in r.metrics[:i]:
            v.add(f"metrics[{i}]", f"{metric!r} is listed twice")
    v.page(r.page_size)


@validates(pb.ListAuditEventsRequest)
def _list_audit_events(r: pb.ListAuditEventsRequest, v: Violations) -> None:
    v.resource_name("parent", r.parent, names.TENANT, "tenants/{tenant}")
    v.page(r.page_size)
    if r.actor:
        v.resource_name("actor", r.actor, names.ACTOR, "tenants/{tenant}/actors/{actor}")
