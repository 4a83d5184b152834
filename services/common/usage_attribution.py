"""Whose usage is this? The tenant that embedding and LLM tokens are counted for.

Work that consumes tokens runs deep below the servicers (the embedding
micro-batcher, the RAG answerer), so the tenant is found from context, in this
order:

1. `metered_as(tenant_id)`: background work done for a tenant (the record
   indexer, a knowledge rebuild) says so explicitly;
2. a call by an actor of the platform tenant (the services' own actor, in the
   mesh) carrying the `x-hacs-usage-tenant` header: a service embedding on a
   tenant's behalf through the embedding pods. Only platform actors are
   believed; anyone else's header is ignored;
3. the caller of the RPC being served: its own tenant;
4. none of these (a process's own work outside any call, e.g. `hacs index
   backfill` of knowledge before it says whose): the platform tenant,
   `UNATTRIBUTED` (docs/usage.md).

Plan quotas are only enforced in case 3 (`own_call`): background work for a
tenant is never refused halfway (records already accepted must reach the
index), and on-behalf calls were checked by the process that made them.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from services.common.caller import PLATFORM_TENANT, current_call
from services.common.validation import ID_PATTERN

USAGE_TENANT_HEADER = "x-hacs-usage-tenant"
UNATTRIBUTED = PLATFORM_TENANT

_metered_as: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "hacs_metered_as", default=None
)


@dataclass(frozen=True)
class Attribution:
    tenant_id: str
    # The tenant's own call: its plan quotas apply here.
    own_call: bool = False


@contextmanager
def metered_as(tenant_id: str) -> Iterator[None]:
    """Count what is used inside for `tenant_id` (background work on its behalf)."""
    token = _metered_as.set(tenant_id)
    try:
        yield
    finally:
        _metered_as.reset(token)


def usage_tenant_header(value: str) -> str:
    """The header's tenant id if it is one ("" otherwise): set on the call by the metrics
    interceptor, believed only for platform callers (see `attribution`)."""
    return value if ID_PATTERN.match(value) else ""


def attribution() -> Attribution:
    explicit = _metered_as.get()
    if explicit:
        return Attribution(explicit)
    state = current_call()
    caller = state.caller if state is not None else None
    if caller is None:
        return Attribution(UNATTRIBUTED)
    if caller.tenant_id == PLATFORM_TENANT and state is not None and state.usage_tenant:
        return Attribution(state.usage_tenant)
    return Attribution(caller.tenant_id, own_call=True)


def outgoing_metadata() -> tuple[tuple[str, str], ...]:
    """The header a service sends when it calls another on a tenant's behalf."""
    tenant_id = attribution().tenant_id
    if tenant_id == UNATTRIBUTED:
        return ()
    return ((USAGE_TENANT_HEADER, tenant_id),)
