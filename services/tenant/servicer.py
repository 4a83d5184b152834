"""gRPC glue for hacs.tenant.v1.TenantService: decode, call the domain, encode."""

from __future__ import annotations

from datetime import UTC

from hacs.tenant.v1 import tenant_service_pb2 as pb
from hacs.tenant.v1 import tenant_service_pb2_grpc as pb_grpc

from services.common import names
from services.common.audit import AuditQuery
from services.common.caller import current_caller
from services.common.pagination import page_size
from services.common.runtime.context import ServicerContext
from services.common.signing_keys import SigningKeys
from services.common.timestamps import day_start, from_timestamp, timestamp
from services.kernel.tenancy.plans import DEFAULT_PLAN
from services.tenant import validation  # noqa: F401  (registers the request validators)
from services.tenant.actors import ActorDirectory
from services.tenant.api_keys import ApiKeys
from services.tenant.convert import (
    actor_from_proto,
    actor_to_proto,
    api_key_to_proto,
    tenant_from_proto,
    tenant_to_proto,
)
from services.tenant.identity import validation as identity_validation  # noqa: F401
from services.tenant.identity.admin import IdentityProviders
from services.tenant.identity.rpcs import IdentityRpcs
from services.tenant.identity.service import Identity
from services.tenant.reports import ALL_TENANTS, TenantReports, UsageExport
from services.tenant.tenants import FIRST_ADMIN_ID, TenantAdmin
from services.tenant.token_issuer import TokenIssuer


class TenantServicer(IdentityRpcs, pb_grpc.TenantServiceServicer):
    def __init__(
        self,
        tenants: TenantAdmin,
        actors: ActorDirectory,
        api_keys: ApiKeys,
        issuer: TokenIssuer,
        keys: SigningKeys,
        reports: TenantReports,
        providers: IdentityProviders,
        identity: Identity,
    ) -> None:
        self._providers = providers
        self._identity = identity
        self._tenants = tenants
        self._actors = actors
        self._api_keys = api_keys
        self._issuer = issuer
        self._keys = keys
        self._reports = reports

    # -- tenants -------------------------------------------------------------

    async def CreateTenant(
        self, request: pb.CreateTenantRequest, context: ServicerContext
    ) -> pb.CreateTenantResponse:
        tenant = tenant_from_proto(request.tenant_id, request.tenant, DEFAULT_PLAN)
        admin = actor_from_proto(request.tenant_id, FIRST_ADMIN_ID, request.admin)
        tenant, admin, key = await self._tenants.create(current_caller(), tenant, admin)
        return pb.CreateTenantResponse(
            tenant=tenant_to_proto(tenant),
            admin=actor_to_proto(admin),
            admin_api_key=api_key_to_proto(key),
        )

    async def GetTenant(
        self, request: pb.GetTenantRequest, context: ServicerContext
    ) -> pb.GetTenantResponse:
        tenant_id = names.tenant_of(request.name, "name")
        tenant = await self._tenants.get(current_caller(), tenant_id)
        return pb.GetTenantResponse(tenant=tenant_to_proto(tenant))

    async def ListTenants(
        self, request: pb.ListTenantsRequest, context: ServicerContext
    ) -> pb.ListTenantsResponse:
        tenants, token = await self._tenants.list(
            current_caller(), page_size(request.page_size), request.page_token, request.show_deleted
        )
        return pb.ListTenantsResponse(
            tenants=[tenant_to_proto(t) for t in tenants], next_page_token=token
        )

    async def UpdateTenant(
        self, request: pb.UpdateTenantRequest, context: ServicerContext
    ) -> pb.UpdateTenantResponse:
        tenant_id = names.tenant_of(request.tenant.name, "tenant.name")
        changes = tenant_from_proto(tenant_id, request.tenant, DEFAULT_PLAN)
        tenant = await self._tenants.update(
            current_caller(), changes, list(request.update_mask.paths), request.tenant.etag
        )
        return pb.UpdateTenantResponse(tenant=tenant_to_proto(tenant))

    async def DeleteTenant(
        self, request: pb.DeleteTenantRequest, context: ServicerContext
    ) -> pb.DeleteTenantResponse:
        tenant_id = names.tenant_of(request.name, "name")
        tenant = await self._tenants.delete(current_caller(), tenant_id, request.etag)
        return pb.DeleteTenantResponse(tenant=tenant_to_proto(tenant))

    # -- actors --------------------------------------------------------------

    async def CreateActor(
        self, request: pb.CreateActorRequest, context: ServicerContext
    ) -> pb.CreateActorResponse:
        tenant_id = names.tenant_of(request.parent, "parent")
        actor = actor_from_proto(tenant_id, request.actor_id, request.actor)
        created = await self._actors.create(current_caller(), actor)
        return pb.CreateActorResponse(actor=actor_to_proto(created))

    async def GetActor(
        self, request: pb.GetActorRequest, context: ServicerContext
    ) -> pb.GetActorResponse:
        parts = names.parse(names.ACTOR, request.name)
        actor = await self._actors.get(current_caller(), parts["tenant"], parts["actor"])
        return pb.GetActorResponse(actor=actor_to_proto(actor))

    async def ListActors(
        self, request: pb.ListActorsRequest, context: ServicerContext
    ) -> pb.ListActorsResponse:
        tenant_id = names.tenant_of(request.parent, "parent")
        actors, token = await self._actors.list(
            current_caller(),
            tenant_id,
            page_size(request.page_size),
            request.page_token,
            request.show_deleted,
        )
        return pb.ListActorsResponse(
            actors=[actor_to_proto(a) for a in actors], next_page_token=token
        )

    async def UpdateActor(
        self, request: pb.UpdateActorRequest, context: ServicerContext
    ) -> pb.UpdateActorResponse:
        parts = names.parse(names.ACTOR, request.actor.name, "actor.name")
        changes = actor_from_proto(parts["tenant"], parts["actor"], request.actor)
        actor = await self._actors.update(
            current_caller(), changes, list(request.update_mask.paths), request.actor.etag
        )
        return pb.UpdateActorResponse(actor=actor_to_proto(actor))

    async def DeleteActor(
        self, request: pb.DeleteActorRequest, context: ServicerContext
    ) -> pb.DeleteActorResponse:
        parts = names.parse(names.ACTOR, request.name)
        actor = await self._actors.delete(
            current_caller(), parts["tenant"], parts["actor"], request.etag
        )
        return pb.DeleteActorResponse(actor=actor_to_proto(actor))

    # -- API keys and tokens -------------------------------------------------

    async def CreateApiKey(
        self, request: pb.CreateApiKeyRequest, context: ServicerContext
    ) -> pb.CreateApiKeyResponse:
        parts = names.parse(names.ACTOR, request.parent, "parent")
        expire_time = from_timestamp(request.api_key, "expire_time")
        key = await self._api_keys.create(
            current_caller(),
            parts["tenant"],
            parts["actor"],
            request.api_key.display_name,
            expire_time,
        )
        return pb.CreateApiKeyResponse(api_key=api_key_to_proto(key))

    async def ListApiKeys(
        self, request: pb.ListApiKeysRequest, context: ServicerContext
    ) -> pb.ListApiKeysResponse:
        parts = names.parse(names.ACTOR, request.parent, "parent")
        keys, token = await self._api_keys.list(
            current_caller(),
            parts["tenant"],
            parts["actor"],
            page_size(request.page_size),
            request.page_token,
        )
        return pb.ListApiKeysResponse(
            api_keys=[api_key_to_proto(k) for k in keys], next_page_token=token
        )

    async def RevokeApiKey(
        self, request: pb.RevokeApiKeyRequest, context: ServicerContext
    ) -> pb.RevokeApiKeyResponse:
        parts = names.parse(names.API_KEY, request.name)
        key = await self._api_keys.revoke(
            current_caller(), parts["tenant"], parts["actor"], parts["api_key"]
        )
        return pb.RevokeApiKeyResponse(api_key=api_key_to_proto(key))

    async def IssueToken(
        self, request: pb.IssueTokenRequest, context: ServicerContext
    ) -> pb.IssueTokenResponse:
        issued = await self._issuer.issue(
            request.api_key, request.ttl_seconds, list(request.scopes)
        )
        return pb.IssueTokenResponse(
            access_token=issued.token,
            token_type="Bearer",
            expire_time=timestamp(issued.expire_time),
            actor=issued.actor_name,
            permissions=list(issued.permissions),
        )

    async def GetJwks(
        self, request: pb.GetJwksRequest, context: ServicerContext
    ) -> pb.GetJwksResponse:
        return pb.GetJwksResponse(
            jwks_json=self._keys.jwks_json(), key_ids=[k.kid for k in self._keys.keys]
        )

    # -- usage and audit -------------------------------------------------------

    async def GetUsage(
        self, request: pb.GetUsageRequest, context: ServicerContext
    ) -> pb.GetUsageResponse:
        tenant_id = names.tenant_of(request.name, "name")
        records = await self._reports.usage(
            current_caller(),
            tenant_id,
            from_timestamp(request, "start_time"),
            from_timestamp(request, "end_time"),
        )
        return pb.GetUsageResponse(
            name=request.name,
            records=[
                pb.UsageRecord(
                    day=timestamp(day_start(r.day)), method=r.method, calls=r.calls, errors=r.errors
                )
                for r in records
            ],
            total_calls=sum(r.calls for r in records),
        )

    async def ExportUsage(
        self, request: pb.ExportUsageRequest, context: ServicerContext
    ) -> pb.ExportUsageResponse:
        everyone = request.parent == ALL_TENANTS
        rows, token = await self._reports.export_usage(
            current_caller(),
            UsageExport(
                tenant_id=None if everyone else names.tenant_of(request.parent),
                start=request.start_time.ToDatetime(tzinfo=UTC),
                end=request.end_time.ToDatetime(tzinfo=UTC),
                metrics=list(request.metrics),
                page_size=page_size(request.page_size, default=1_000, maximum=10_000),
                page_token=request.page_token,
            ),
        )
        return pb.ExportUsageResponse(
            rows=[
                pb.HourlyUsage(
                    tenant=f"tenants/{r.tenant_id}",
                    hour=timestamp(r.hour),
                    metric=r.metric,
                    dimension=r.dimension,
                    value=r.value,
                )
                for r in rows
            ],
            next_page_token=token,
        )

    async def ListAuditEvents(
        self, request: pb.ListAuditEventsRequest, context: ServicerContext
    ) -> pb.ListAuditEventsResponse:
        tenant_id = names.tenant_of(request.parent, "parent")
        query = AuditQuery(
            tenant_id=tenant_id,
            page_size=page_size(request.page_size),
            page_token=request.page_token,
            actor=request.actor,
            resource=request.resource,
            start_time=from_timestamp(request, "start_time"),
        )
        events, token = await self._reports.audit_events(current_caller(), query)
        out = pb.ListAuditEventsResponse(next_page_token=token)
        for e in events:
            event = out.audit_events.add(
                name=f"tenants/{tenant_id}/auditEvents/{e.id}",
                event_time=timestamp(e.event_time),
                actor=e.actor,
                method=e.method,
                permission=e.permission,
                resource=e.resource,
                outcome=e.outcome,
                sequence=e.seq,
                previous_hash=e.prev_hash,
                chain_hash=e.chain_hash,
            )
            event.details.update(e.details)
        return out
