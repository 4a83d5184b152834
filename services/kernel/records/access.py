"""Who may read or write which records: `read:<type>` / `write:<type>`.

The tenant of a record name must be the caller's. Reads of a named record in
another tenant answer NOT_FOUND (its existence is not disclosed); parents and
writes in another tenant answer PERMISSION_DENIED.
"""

from __future__ import annotations

from services.common.caller import Caller
from services.common.errors import Forbidden, NotFound
from services.kernel.records.names import RecordName
from services.kernel.records.resource_types import RESOURCE_TYPES, ResourceTypeInfo


def require_own_parent(caller: Caller, tenant_id: str, permission: str) -> None:
    if tenant_id != caller.tenant_id:
        raise Forbidden(f"tenants/{tenant_id} is not the caller's tenant", permission=permission)


def require_read(caller: Caller, name: RecordName) -> None:
    if name.tenant_id != caller.tenant_id:
        raise NotFound(name.info.name, str(name))
    caller.require(f"read:{name.info.permission}", str(name))


def require_write(caller: Caller, info: ResourceTypeInfo, tenant_id: str, resource: str) -> None:
    require_own_parent(caller, tenant_id, f"write:{info.permission}")
    caller.require(f"write:{info.permission}", resource)


def readable_types(caller: Caller, wanted: list[ResourceTypeInfo]) -> list[ResourceTypeInfo]:
    """The types to list: those asked for (each must be readable) or all readable ones."""
    if wanted:
        for info in wanted:
            caller.require(f"read:{info.permission}")
        return wanted
    return [info for info in RESOURCE_TYPES if caller.can(f"read:{info.permission}")]
