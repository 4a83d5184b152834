"""Who may read and write knowledge: `read:knowledge` / `write:knowledge`, own tenant only.

A name in another tenant answers NOT_FOUND on reads (its existence is not
disclosed) and PERMISSION_DENIED on parents and writes, as for records.
"""

from __future__ import annotations

from services.common.caller import Caller
from services.common.errors import Forbidden, NotFound

READ = "read:knowledge"
WRITE = "write:knowledge"


def require_read(caller: Caller, tenant_id: str, resource_type: str, name: str) -> None:
    if tenant_id != caller.tenant_id:
        raise NotFound(resource_type, name)
    caller.require(READ, name)


def require_write(caller: Caller, tenant_id: str, name: str) -> None:
    if tenant_id != caller.tenant_id:
        raise Forbidden(f"{name} is not in the caller's tenant", permission=WRITE)
    caller.require(WRITE, name)


def require_parent(caller: Caller, tenant_id: str, permission: str, parent: str = "") -> None:
    """For list and create calls: a parent in another tenant is PERMISSION_DENIED."""
    parent = parent or f"tenants/{tenant_id}"
    if tenant_id != caller.tenant_id:
        raise Forbidden(f"{parent} is not in the caller's tenant", permission=permission)
    caller.require(permission, parent)
