"""Planning an edit against the record the server holds: apply, merge, drop or reject.

Pure: given the record's versions from the edit's base to the current one and
the edit's patches, decide per patch (see hacs/sync/v1/patch.proto):

* the field did not change since the base version: apply it;
* it changed, but to exactly the value sent: nothing to do (a retried push);
* it changed to something else: by its policy, last-writer-wins (compare
  times, then (actor, client_id) in byte order; the loser is dropped and
  reported) or reject-and-report (the whole edit is refused).

The server side of a comparison is the version that last changed the field:
its author's client time and client id when sync wrote it (`stamps.py`), else
its write time and no client id. An incoming edit's time is its client time,
clamped to when the server received it, so no client can win by a clock set
in the future. Every replica and every client sees the one decision the
server made, which is what makes them converge.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format, struct_pb2
from hacs.records.v1 import record_pb2
from hacs.sync.v1 import patch_pb2

from services.sync import policies
from services.sync.field_paths import (
    RESOURCE_FIELDS,
    FieldPath,
    PathError,
    from_json,
    get_value,
    resolve,
    set_value,
    to_json,
)
from services.sync.stamps import Stamp

SET = patch_pb2.PATCH_OP_SET
REMOVE = patch_pb2.PATCH_OP_REMOVE


@dataclass(frozen=True)
class Author:
    actor: str
    client_id: str
    # Client time clamped to the server's receive time.
    time: datetime


@dataclass(frozen=True)
class Patch:
    path: FieldPath
    value: Any  # JSON value; None removes the field

    @classmethod
    def from_proto(cls, patch: patch_pb2.FieldPatch, path: FieldPath) -> Patch:
        value = json_format.MessageToDict(patch.value) if patch.op == SET else None
        return cls(path, value)


@dataclass
class UpdatePlan:
    applied: list[Patch] = field(default_factory=list)
    satisfied: list[Patch] = field(default_factory=list)
    dropped: list[patch_pb2.FieldConflict] = field(default_factory=list)
    conflicts: list[patch_pb2.FieldConflict] = field(default_factory=list)
    merged: bool = False
    # The record with the applied patches (when any apply).
    record: record_pb2.Record | None = None

    @property
    def rejected(self) -> bool:
        return bool(self.conflicts)

    @property
    def mask(self) -> list[str]:
        return list(dict.fromkeys(p.path.mask for p in self.applied))


def to_value(value: Any) -> struct_pb2.Value:
    return json_format.ParseDict(value, struct_pb2.Value())


def plan_update(
    versions: list[record_pb2.Record],
    patches: list[Patch],
    author: Author,
    stamps: Mapping[int, Stamp] | None = None,
    own: frozenset[int] = frozenset(),
) -> UpdatePlan:
    """Plan `patches` made on versions[0] (the base) against versions[-1] (current).

    `versions` holds consecutive versions, base first; `stamps` the client
    times of those sync wrote; `own` the versions the same batch of changes
    wrote already (not concurrent with it). Raises PathError for a path of
    another resource type or a value that does not fit its field.
    """
    current = versions[-1]
    resource = current.WhichOneof("resource") or ""
    for patch in patches:
        top = patch.path.top
        if top != resource and top in RESOURCE_FIELDS:
            raise PathError(f"{patch.path.text!r} is not a field of this {resource} record")
    history = _History(versions, stamps or {}, own)
    plan = UpdatePlan(merged=any(v.version not in own for v in versions[1:]))
    for patch in patches:
        guarded = [patch.path, *(resolve(p) for p in policies.guarded_below(patch.path.text))]
        changed = {p.text: i for p in guarded if (i := history.last_change(p)) is not None}
        if not changed:
            plan.applied.append(patch)
        elif history.current(patch.path) == patch.value:
            plan.satisfied.append(patch)
        elif reject := [p for p in guarded if p.text in changed and _rejects(p)]:
            plan.conflicts += [
                history.conflict(p, changed[p.text], patch, policies.REJECT) for p in reject
            ]
        else:
            index = changed[patch.path.text]
            last = history.write_at(index)
            if (author.time, author.actor, author.client_id) > last:
                plan.applied.append(patch)
            else:
                plan.dropped.append(history.conflict(patch.path, index, patch, policies.LWW))
    if plan.conflicts:
        plan.applied, plan.dropped = [], []
        return plan
    if plan.applied:
        document = to_json(current)
        for patch in plan.applied:
            set_value(document, patch.path, patch.value)
        try:
            plan.record = from_json(document)
        except json_format.ParseError as exc:
            paths = ", ".join(p.path.text for p in plan.applied)
            raise PathError(f"a value does not fit its field ({paths}): {exc}") from exc
    return plan


def _rejects(path: FieldPath) -> bool:
    return policies.policy_for(path.text) == policies.REJECT


class _History:
    """A record's versions since an edit's base, as JSON, with who wrote each and when."""

    def __init__(
        self, versions: list[record_pb2.Record], stamps: Mapping[int, Stamp], own: frozenset[int]
    ) -> None:
        self._versions = versions
        self._documents = [to_json(v) for v in versions]
        self._stamps = stamps
        self._own = own

    def current(self, path: FieldPath) -> Any:
        return get_value(self._documents[-1], path)

    def last_change(self, path: FieldPath) -> int | None:
        """The newest version, after the base and not our own, that changed `path`."""
        for index in range(len(self._versions) - 1, 0, -1):
            if self._versions[index].version in self._own:
                continue
            if get_value(self._documents[index], path) != get_value(
                self._documents[index - 1], path
            ):
                return index
        return None

    def write_at(self, index: int) -> tuple[datetime, str, str]:
        """(time, actor, client id) of a version, for last-writer-wins."""
        version = self._versions[index]
        stamp = self._stamps.get(version.version)
        if stamp is not None:
            return (stamp.time, version.updated_by.name, stamp.client_id)
        return (version.update_time.ToDatetime(tzinfo=UTC), version.updated_by.name, "")

    def conflict(
        self, path: FieldPath, index: int, patch: Patch, policy: int
    ) -> patch_pb2.FieldConflict:
        version = self._versions[index]
        who = version.updated_by.display_name or version.updated_by.name or "another writer"
        if policy == policies.REJECT:
            reason = (
                f"{path.text} changed concurrently by {who} (version {version.version}); "
                "this field is never merged silently: review the server value and resend"
            )
        else:
            reason = (
                f"older than the server value written by {who} in version {version.version} "
                "(last writer wins)"
            )
        if patch.path.text == path.text:
            client_value = patch.value
        else:  # a dose inside a whole-resource patch: what the patch would make of it
            client_value = get_value(_patched(self._documents[-1], patch), path)
        return patch_pb2.FieldConflict(
            path=path.text,
            policy=policy,  # type: ignore[arg-type]
            server_value=to_value(self.current(path)),
            client_value=to_value(client_value),
            server_version=version.version,
            server_actor=version.updated_by,
            reason=reason,
        )


def _patched(document: dict[str, Any], patch: Patch) -> dict[str, Any]:
    patched = copy.deepcopy(document)
    set_value(patched, patch.path, patch.value)
    return patched
