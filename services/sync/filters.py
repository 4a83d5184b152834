"""Which changes a watch delivers: its filter, narrowed to what the actor may read.

Compiled once per stream into sets, so the live tail can test every change
against every stream cheaply. Permission is part of the filter: a change to
a record of type T reaches a stream only if its actor holds `read:<T>`, and a
change to a record of a type with owners (an agent's memory) only if the
actor may act on it (the owner, or whoever sees every owner's).
"""

from __future__ import annotations

from dataclasses import dataclass

from services.common.caller import Caller
from services.kernel.records.access import owned_only, require_own_parent
from services.kernel.records.names import parse_patient_name, parse_record_name
from services.kernel.records.resource_types import BY_ENUM, RESOURCE_TYPES
from services.sync.change_log import LogEvent


@dataclass(frozen=True)
class WatchFilter:
    """What a Watch asks for (all empty: every change the caller may read)."""

    resource_types: tuple[int, ...] = ()  # ResourceType enums
    names: tuple[str, ...] = ()
    patients: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ChangeFilter:
    collections: frozenset[str]
    names: frozenset[str]
    patients: frozenset[str]
    labels: tuple[tuple[str, str], ...]
    # Collections whose changes reach the stream only when `actor` owns the record.
    own_only: frozenset[str] = frozenset()
    actor: str = ""

    def matches(self, event: LogEvent) -> bool:
        if event.collection not in self.collections:
            return False
        if event.collection in self.own_only and event.owner != self.actor:
            return False
        if self.names and event.name not in self.names:
            return False
        if self.patients and not any(p in self.patients for p in event.patients):
            return False
        for key, value in self.labels:
            if key not in event.labels or (value and event.labels[key] != value):
                return False
        return True


def compile_filter(caller: Caller, tenant_id: str, request: WatchFilter) -> ChangeFilter:
    """The stream's filter; PERMISSION_DENIED for a type asked for by type or name but unreadable.

    The request was validated already (names and patients lie in `tenant_id`).
    """
    require_own_parent(caller, tenant_id, "read:*")
    wanted = [BY_ENUM[t] for t in request.resource_types]
    named = [parse_record_name(name, f"filter.names[{i}]") for i, name in enumerate(request.names)]
    for info in [*wanted, *(name.info for name in named)]:
        caller.require(f"read:{info.permission}", f"tenants/{tenant_id}")
    readable = {t.collection for t in RESOURCE_TYPES if caller.can(f"read:{t.permission}")}
    collections = {t.collection for t in wanted} if wanted else readable
    for i, patient in enumerate(request.patients):
        parse_patient_name(patient, f"filter.patients[{i}]")
    restricted = owned_only(caller)
    return ChangeFilter(
        collections=frozenset(collections & readable),
        names=frozenset(request.names),
        patients=frozenset(request.patients),
        labels=tuple(sorted(request.labels)),
        own_only=restricted.collections if restricted else frozenset(),
        actor=caller.actor_name,
    )
