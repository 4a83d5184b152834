"""The identity RPCs of TenantService: provider administration, exchange, password sign-in."""

from __future__ import annotations

from hacs.tenant.v1 import identity_pb2 as ipb

from services.common import names
from services.common.caller import current_caller
from services.common.pagination import page_size
from services.common.runtime.context import ServicerContext
from services.common.timestamps import timestamp
from services.tenant.identity.admin import IdentityProviders
from services.tenant.identity.convert import provider_from_proto, provider_to_proto
from services.tenant.identity.service import Identity
from services.tenant.identity.sign_in import SignedIn

JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"


class IdentityRpcs:
    """Mixed into TenantServicer, which sets the two attributes."""

    _providers: IdentityProviders
    _identity: Identity

    async def CreateIdentityProvider(
        self, request: ipb.CreateIdentityProviderRequest, context: ServicerContext
    ) -> ipb.CreateIdentityProviderResponse:
        tenant_id = names.tenant_of(request.parent, "parent")
        provider = provider_from_proto(
            tenant_id, request.identity_provider_id, request.identity_provider
        )
        created = await self._providers.create(current_caller(), provider)
        return ipb.CreateIdentityProviderResponse(identity_provider=provider_to_proto(created))

    async def GetIdentityProvider(
        self, request: ipb.GetIdentityProviderRequest, context: ServicerContext
    ) -> ipb.GetIdentityProviderResponse:
        parts = names.parse(names.IDENTITY_PROVIDER, request.name)
        provider = await self._providers.get(
            current_caller(), parts["tenant"], parts["identity_provider"]
        )
        return ipb.GetIdentityProviderResponse(identity_provider=provider_to_proto(provider))

    async def ListIdentityProviders(
        self, request: ipb.ListIdentityProvidersRequest, context: ServicerContext
    ) -> ipb.ListIdentityProvidersResponse:
        tenant_id = names.tenant_of(request.parent, "parent")
        found, token = await self._providers.list_page(
            current_caller(), tenant_id, page_size(request.page_size), request.page_token
        )
        return ipb.ListIdentityProvidersResponse(
            identity_providers=[provider_to_proto(p) for p in found], next_page_token=token
        )

    async def UpdateIdentityProvider(
        self, request: ipb.UpdateIdentityProviderRequest, context: ServicerContext
    ) -> ipb.UpdateIdentityProviderResponse:
        parts = names.parse(
            names.IDENTITY_PROVIDER, request.identity_provider.name, "identity_provider.name"
        )
        changes = provider_from_proto(
            parts["tenant"], parts["identity_provider"], request.identity_provider
        )
        updated = await self._providers.update(
            current_caller(),
            changes,
            list(request.update_mask.paths),
            request.identity_provider.etag,
        )
        return ipb.UpdateIdentityProviderResponse(identity_provider=provider_to_proto(updated))

    async def DeleteIdentityProvider(
        self, request: ipb.DeleteIdentityProviderRequest, context: ServicerContext
    ) -> ipb.DeleteIdentityProviderResponse:
        parts = names.parse(names.IDENTITY_PROVIDER, request.name)
        disabled = await self._providers.disable(
            current_caller(), parts["tenant"], parts["identity_provider"], request.etag
        )
        return ipb.DeleteIdentityProviderResponse(identity_provider=provider_to_proto(disabled))

    async def ExchangeToken(
        self, request: ipb.ExchangeTokenRequest, context: ServicerContext
    ) -> ipb.ExchangeTokenResponse:
        parts = names.parse(names.IDENTITY_PROVIDER, request.identity_provider, "identity_provider")
        signed = await self._identity.exchange(
            parts["tenant"],
            parts["identity_provider"],
            request.subject_token,
            request.subject_token_type,
            request.ttl_seconds,
            list(request.scopes),
        )
        return ipb.ExchangeTokenResponse(sign_in=_sign_in(signed))

    async def SignInWithPassword(
        self, request: ipb.SignInWithPasswordRequest, context: ServicerContext
    ) -> ipb.SignInWithPasswordResponse:
        parts = names.parse(names.IDENTITY_PROVIDER, request.identity_provider, "identity_provider")
        signed = await self._identity.password(
            parts["tenant"],
            parts["identity_provider"],
            request.username,
            request.password,
            request.ttl_seconds,
            list(request.scopes),
        )
        return ipb.SignInWithPasswordResponse(sign_in=_sign_in(signed))


def _sign_in(signed: SignedIn) -> ipb.SignIn:
    return ipb.SignIn(
        access_token=signed.token.token,
        token_type="Bearer",
        issued_token_type=JWT_TYPE,
        expire_time=timestamp(signed.token.expire_time),
        actor=signed.token.actor_name,
        permissions=list(signed.token.permissions),
        provisioned=signed.provisioned,
    )
