"""Who may read or write which records: the one access policy per record type.

Every type: `read:<type>` / `write:<type>` / `delete:<type>`, and the tenant of a record name
must be the caller's. Reads of a named record in another tenant answer
NOT_FOUND (its existence is not disclosed); parents and writes in another
tenant answer PERMISSION_DENIED.

Some types add an owner (`may_access`): a MemoryBlock belongs to its agent,
and an actor with the role "agent" works on its own memories only, unless it
holds admin:memory. Whatever reads or writes records of such a type applies
this rule here rather than a copy of it.
"""

from __future__ import annotations

from hacs.records.v1 import record_pb2

from services.common.caller import Caller
from services.common.errors import Forbidden, NotFound
from services.kernel.records.names import RecordName
from services.kernel.records.resource_types import RESOURCE_TYPES, ResourceTypeInfo, of_record
from services.kernel.records.store import OwnedOnly


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


def require_delete(caller: Caller, info: ResourceTypeInfo, tenant_id: str, resource: str) -> None:
    """Deleting a record (a soft delete: history is kept) takes `delete:<type>`, which
    administrators hold (admin:*) and no other role by default; `write:<type>` is not enough."""
    require_own_parent(caller, tenant_id, f"delete:{info.permission}")
    caller.require(f"delete:{info.permission}", resource)


def readable_types(caller: Caller, wanted: list[ResourceTypeInfo]) -> list[ResourceTypeInfo]:
    """The types to list: those asked for (each must be readable) or all readable ones."""
    if wanted:
        for info in wanted:
            caller.require(f"read:{info.permission}")
        return wanted
    return [info for info in RESOURCE_TYPES if caller.can(f"read:{info.permission}")]


# -- owners: what a type adds to its permissions ---------------------------------


# Types whose records belong to an actor, and the field naming it.
OWNER_FIELDS = {"memory_block": "agent"}


def sees_every_owner(caller: Caller, info: ResourceTypeInfo) -> bool:
    """Whether the caller may act on every record of the type, not only on its own."""
    if info.field in OWNER_FIELDS:
        return caller.role != "agent" or caller.can("admin:memory")
    return True


def owner_of(record: record_pb2.Record) -> str:
    """The actor a record belongs to ("" for types without an owner)."""
    field = record.WhichOneof("resource") or ""
    owner_field = OWNER_FIELDS.get(field)
    return str(getattr(getattr(record, field), owner_field)) if owner_field else ""


def may_access(caller: Caller, record: record_pb2.Record) -> bool:
    """The type's owner rule for this record (its permissions are checked apart)."""
    info = of_record(record)
    return info is None or sees_every_owner(caller, info) or owner_of(record) == caller.actor_name


def owned_only(caller: Caller) -> OwnedOnly | None:
    """The caller's restriction on lists and change streams: its own records of every type
    with owners whose records it may not all act on (None: no restriction)."""
    collections = frozenset(
        info.collection
        for info in RESOURCE_TYPES
        if info.field in OWNER_FIELDS and not sees_every_owner(caller, info)
    )
    return OwnedOnly(collections, caller.actor_name) if collections else None


def require_access(caller: Caller, record: record_pb2.Record, name: str) -> None:
    """NOT_FOUND for a record the caller may not act on (its existence is not disclosed)."""
    if not may_access(caller, record):
        info = of_record(record)
        raise NotFound(info.name if info else "Record", name)


def require_owner(caller: Caller, record: record_pb2.Record, prefix: str) -> None:
    """A record written for another owner needs the right to act on everyone's."""
    info = of_record(record)
    owner = owner_of(record)
    if info is None or not owner or owner == caller.actor_name:
        return
    if not sees_every_owner(caller, info):
        field = f"{prefix}.{info.field}.{OWNER_FIELDS[info.field]}"
        raise Forbidden(
            f"actor {caller.actor_name!r} is an agent: it writes its own {info.name} records "
            f"only ({field} names {owner!r}; another owner needs admin:{info.permission})",
            permission=f"admin:{info.permission}",
        )
