"""The caller of an RPC, as proven by a verified token.

The authentication interceptor builds a `Caller` from the JWT and puts it in
the call's `CallState`; servicers pass it to domain code, which checks
permissions with `caller.require(...)`. The tenant always comes from here,
never from a request field or a header a client could set.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from datetime import datetime

from services.common.errors import Forbidden, Unauthenticated
from services.common.permissions import grants

PLATFORM_TENANT = "platform"


@dataclass(frozen=True)
class Caller:
    tenant_id: str
    actor_id: str
    role: str
    permissions: frozenset[str]
    token_id: str = ""
    # When the token stops being valid; long-lived streams end there (UNAUTHENTICATED).
    expires_at: datetime | None = None
    # The API key the token was issued for: revoking the key ends the token
    # ("" in tokens issued before tokens named their key: they end with their actor).
    key_id: str = ""

    @property
    def actor_name(self) -> str:
        return f"tenants/{self.tenant_id}/actors/{self.actor_id}"

    @property
    def is_platform_operator(self) -> bool:
        return self.tenant_id == PLATFORM_TENANT and self.can("admin:platform")

    def can(self, permission: str) -> bool:
        return grants(self.permissions, permission)

    def require(self, permission: str, resource: str = "") -> None:
        """Raise Forbidden unless the caller holds `permission`; note it for the audit log."""
        state = current_call()
        if state is not None:
            state.permission = permission
            if resource:
                state.resource = resource
        if not self.can(permission):
            raise Forbidden(
                f"actor {self.actor_name!r} lacks permission {permission!r}"
                + (f" on {resource!r}" if resource else ""),
                permission=permission,
            )

    def require_platform_operator(self) -> None:
        """Tenant lifecycle is only for operators of the reserved platform tenant."""
        self.require("admin:platform")
        if self.tenant_id != PLATFORM_TENANT:
            raise Forbidden(
                "only platform operators (actors of the 'platform' tenant) manage tenants",
                permission="admin:platform",
            )


@dataclass
class CallState:
    """What the interceptors learn about one call, shared along the chain."""

    method: str
    caller: Caller | None = None
    permission: str = ""
    resource: str = ""
    details: dict[str, str] = field(default_factory=dict)
    # The tenant a platform service says it works for (usage_attribution.py); "" if none.
    usage_tenant: str = ""


_current_call: contextvars.ContextVar[CallState | None] = contextvars.ContextVar(
    "hacs_current_call", default=None
)


def current_call() -> CallState | None:
    return _current_call.get()


def begin_call(state: CallState) -> contextvars.Token[CallState | None]:
    return _current_call.set(state)


def end_call(token: contextvars.Token[CallState | None]) -> None:
    _current_call.reset(token)


def current_caller() -> Caller:
    """The authenticated caller of the RPC being served (servicers call this)."""
    state = _current_call.get()
    if state is None or state.caller is None:
        raise Unauthenticated("this RPC needs a bearer token")
    return state.caller
