"""What a write asks for, and what it did: the values RecordWriter takes and returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from hacs.records.v1 import record_pb2

from services.kernel.records.resource_types import ResourceTypeInfo

Reviser = Callable[[record_pb2.Record], record_pb2.Record | None]


@dataclass(frozen=True)
class NewRecord:
    """One record to create: the requested id (may be empty) and the content."""

    record_id: str
    record: record_pb2.Record


@dataclass(frozen=True)
class Revision:
    """A change to one existing record, computed from its current version in the transaction.

    `revise` gets a copy of the current version and returns the new content
    (None: nothing to do). `expected_version` (0 = any) guards against
    changes made since the caller planned this one. `delete` soft-deletes
    the revised record.
    """

    name: str
    revise: Reviser
    paths: tuple[str, ...]
    expected_version: int = 0
    delete: bool = False


@dataclass
class Written:
    """What `RecordWriter.write` did: records created, revised (by name) and skipped.

    `replayed`: a retry of an earlier call (same request id); `created` holds
    what that call created, and nothing was written now.
    """

    created: list[record_pb2.Record] = field(default_factory=list)
    revised: dict[str, record_pb2.Record] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    replayed: bool = False


@dataclass(frozen=True)
class Upsert:
    """One FHIR-style write: create or replace `record` under its id, or delete (record None)."""

    info: ResourceTypeInfo
    record_id: str
    record: record_pb2.Record | None


@dataclass(frozen=True)
class UpsertOutcome:
    name: str
    status: str  # CREATED | UPDATED | DELETED | MISSING
    version: int


@dataclass(frozen=True)
class PurgeOutcome:
    """What an erasure removed: the records (by name) and how many versions they had."""

    names: list[str]
    versions: int
