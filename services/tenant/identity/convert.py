"""IdentityProvider messages <-> the domain's Provider."""

from __future__ import annotations

from google.protobuf.json_format import MessageToDict, ParseDict
from hacs.tenant.v1 import identity_pb2 as pb

from services.common.timestamps import timestamp
from services.tenant.identity.providers import ACTIVE, Provider, RoleMapping

STATES = {ACTIVE: pb.IdentityProvider.STATE_ACTIVE, "disabled": pb.IdentityProvider.STATE_DISABLED}


def provider_from_proto(tenant_id: str, provider_id: str, message: pb.IdentityProvider) -> Provider:
    kind = message.WhichOneof("config") or ""
    config = MessageToDict(getattr(message, kind), preserving_proto_field_name=True) if kind else {}
    return Provider(
        tenant_id=tenant_id,
        id=provider_id,
        kind=kind,
        display_name=message.display_name,
        config=config,
        role_mappings=tuple(
            RoleMapping(m.group, m.role, tuple(m.permissions)) for m in message.role_mappings
        ),
        allowed_groups=tuple(message.allowed_groups),
        jit_provisioning=message.jit_provisioning,
    )


def provider_to_proto(provider: Provider) -> pb.IdentityProvider:
    message = pb.IdentityProvider(
        name=provider.name,
        display_name=provider.display_name,
        role_mappings=[
            pb.RoleMapping(group=m.group, role=m.role, permissions=list(m.permissions))
            for m in provider.role_mappings
        ],
        allowed_groups=list(provider.allowed_groups),
        jit_provisioning=provider.jit_provisioning,
        state=STATES.get(provider.state, pb.IdentityProvider.STATE_UNSPECIFIED),
        etag=provider.etag,
        create_time=timestamp(provider.create_time),
        update_time=timestamp(provider.update_time),
    )
    if provider.kind in ("oidc", "ldap", "saml"):
        ParseDict(provider.config, getattr(message, provider.kind), ignore_unknown_fields=True)
    return message
