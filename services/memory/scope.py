"""Which memories an operation may see and is asked about.

`MemoryFilter` becomes a `Scope` once the caller's rights are applied (the
memory type's owner rule, kernel/records/access.py): an actor with role
"agent" works on its own memories only (unless it holds admin:memory);
other actors with the memory permissions may name any agent of their tenant.
The same scope is applied twice: as a Milvus expression (so the index
returns only eligible candidates) and record by record on what the database
returns (the authority: the index may lag a write).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from hacs.memory.v1 import recall_pb2
from hacs.records.v1 import record_pb2

from services.common import names
from services.common.caller import Caller
from services.common.errors import FieldViolation, Forbidden, Invalid
from services.kernel.records.access import sees_every_owner
from services.kernel.retrieval.expressions import contains_all, contains_any, is_in
from services.memory import importance
from services.memory.blocks import INFO, TYPE_NAMES, is_expired, memory_time, patient_id


@dataclass(frozen=True)
class Scope:
    tenant_id: str
    agents: tuple[str, ...]  # actor names; empty = every agent (erasure, admin work)
    patients: tuple[str, ...] = ()  # patient ids
    types: tuple[int, ...] = ()
    tags_any: tuple[str, ...] = ()
    tags_all: tuple[str, ...] = ()
    start_time: datetime | None = None
    end_time: datetime | None = None
    min_importance: float = 0.0
    labels: dict[str, str] = field(default_factory=dict)
    include_expired: bool = False
    include_superseded: bool = False


def require_read(caller: Caller, tenant_id: str) -> None:
    """The tenant must be the caller's, and the caller must read memories."""
    if tenant_id != caller.tenant_id:
        raise Forbidden(f"tenants/{tenant_id} is not the caller's tenant", permission="read:memory")
    caller.require("read:memory", f"tenants/{tenant_id}")


def resolve_agents(
    caller: Caller, tenant_id: str, requested: list[str], field_name: str
) -> tuple[str, ...]:
    if not requested:
        return (caller.actor_name,)
    for i, agent in enumerate(requested):
        parts = names.parse(names.ACTOR, agent, f"{field_name}[{i}]")
        if parts["tenant"] != tenant_id:
            raise Forbidden(
                f"{agent} is not an actor of tenants/{tenant_id}", permission="read:memory"
            )
    if not sees_every_owner(caller, INFO) and any(a != caller.actor_name for a in requested):
        raise Forbidden(
            f"actor {caller.actor_name!r} is an agent: it works on its own memories only "
            "(naming other agents needs admin:memory)",
            permission="admin:memory",
        )
    return tuple(dict.fromkeys(requested))


def from_filter(
    caller: Caller, tenant_id: str, message: recall_pb2.MemoryFilter, field_name: str = "filter"
) -> Scope:
    patients: list[str] = []
    for i, patient in enumerate(message.patients):
        parts = patient.split("/")
        if len(parts) != 4 or parts[:1] != ["tenants"] or parts[2] != "patients":
            raise Invalid(FieldViolation(f"{field_name}.patients[{i}]", "is not a patient name"))
        if parts[1] != tenant_id:
            raise Forbidden(
                f"{patient} is not a patient of tenants/{tenant_id}", permission="read:memory"
            )
        patients.append(parts[3])
    return Scope(
        tenant_id=tenant_id,
        agents=resolve_agents(caller, tenant_id, list(message.agents), f"{field_name}.agents"),
        patients=tuple(patients),
        types=tuple(message.memory_types),
        tags_any=tuple(t.strip().lower() for t in message.tags),
        tags_all=tuple(t.strip().lower() for t in message.all_tags),
        start_time=message.start_time.ToDatetime(tzinfo=UTC)
        if message.HasField("start_time")
        else None,
        end_time=message.end_time.ToDatetime(tzinfo=UTC) if message.HasField("end_time") else None,
        min_importance=message.min_importance,
        labels=dict(message.labels),
        include_expired=message.include_expired,
        include_superseded=message.include_superseded,
    )


def matches(
    record: record_pb2.Record, scope: Scope, *, query_time: datetime, as_of: datetime | None = None
) -> bool:
    """Whether a memory (in the version that counts) is in scope."""
    block = record.memory_block
    if record.WhichOneof("resource") != "memory_block":
        return False
    if record.HasField("delete_time") and not (scope.include_superseded and block.superseded_by):
        return False
    if as_of is not None and record.create_time.ToDatetime(tzinfo=UTC) > as_of:
        return False
    if scope.agents and block.agent not in scope.agents:
        return False
    if scope.patients and patient_id(block) not in scope.patients:
        return False
    if scope.types and block.memory_type not in scope.types:
        return False
    tags = set(block.tags)
    if scope.tags_any and not tags & set(scope.tags_any):
        return False
    if scope.tags_all and not set(scope.tags_all) <= tags:
        return False
    when = memory_time(record)
    if scope.start_time is not None and when < scope.start_time:
        return False
    if scope.end_time is not None and when >= scope.end_time:
        return False
    for key, value in scope.labels.items():
        if key not in record.labels or (value and record.labels[key] != value):
            return False
    if not scope.include_expired and is_expired(record, query_time):
        return False
    return not (
        scope.min_importance and importance.effective(record, query_time) < scope.min_importance
    )


def index_expression(scope: Scope) -> str:
    """The scope as a Milvus filter on the memory index's fields.

    The vector index adds the tenant; the memory index adds which revisions
    count (the live ones, or those valid at `as_of`).

    Only scalar fields where it can: Milvus Lite evaluates JSON and array
    filters row by row. Expiry is left to `matches` (the records decide).
    """
    parts: list[str] = []
    if scope.agents:
        parts.append(is_in("grp", scope.agents))
    if scope.patients:
        parts.append(is_in("patient_id", scope.patients))
    if scope.types:
        parts.append(is_in("kind", [TYPE_NAMES[t] for t in scope.types]))
    if scope.tags_any:
        parts.append(contains_any("codes", [f"tag:{t}" for t in scope.tags_any]))
    if scope.tags_all:
        parts.append(contains_all("codes", [f"tag:{t}" for t in scope.tags_all]))
    if scope.start_time is not None:
        parts.append(f"clinical_time >= {int(scope.start_time.timestamp())}")
    if scope.end_time is not None:
        parts.append(f"clinical_time < {int(scope.end_time.timestamp())}")
    return " and ".join(parts)
