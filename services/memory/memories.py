"""Storing, reading and editing memories: Remember, GetMemory, UpdateMemory.

A memory is a MemoryBlock record written through the records store (so it
is versioned, audited and in the change log). Remember also reinforces the
memories a new one cites (`related_memories`) in the same transaction, and
every write is followed by an index catch-up so the caller can recall what
it just stored.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from google.protobuf.field_mask_pb2 import FieldMask
from hacs.records.v1 import memory_block_pb2, record_pb2

from services.common import names
from services.common.caller import Caller
from services.common.db.base import utcnow
from services.common.errors import FieldViolation, Forbidden, Invalid, NotFound
from services.common.etags import check_etag
from services.kernel.records.access import may_access, require_own_parent, sees_every_owner
from services.kernel.records.envelope import ENVELOPE_MUTABLE
from services.kernel.records.names import RecordName, new_record_id, parse_record_name
from services.kernel.records.store import RecordStore
from services.kernel.records.write_plans import NewRecord, Revision
from services.kernel.records.writes import RecordWriter
from services.memory import importance
from services.memory.blocks import (
    COLLECTION,
    INFO,
    MAX_RELATED,
    MAX_TAGS,
    OUTPUT_ONLY,
    normalise_tags,
    prepare,
    vector_id,
)
from services.memory.memory_index import MemoryIndex

log = logging.getLogger(__name__)

MAX_BATCH = 500
MUTABLE_BLOCK_FIELDS = tuple(
    f.name for f in memory_block_pb2.MemoryBlock.DESCRIPTOR.fields if f.name not in OUTPUT_ONLY
)


def parse_memory_name(name: str, field: str = "name") -> RecordName:
    parsed = parse_record_name(name, field)
    if parsed.info is not INFO:
        raise Invalid(
            FieldViolation(
                field, f"{name!r} is not a memory (tenants/{{tenant}}/memoryBlocks/{{id}})"
            )
        )
    return parsed


class Memories:
    def __init__(self, store: RecordStore, writer: RecordWriter, index: MemoryIndex) -> None:
        self._store = store
        self._writer = writer
        self._index = index

    async def settle(self, tenant_id: str) -> None:
        """Bring the index up to the writes just made; a failure only delays it."""
        try:
            await self._index.catch_up(tenant_id)
        except Exception:  # the write is committed; the next read catches up
            log.warning("memory index behind for tenant %s", tenant_id, exc_info=True)

    async def remember(
        self,
        caller: Caller,
        tenant_id: str,
        memories: Sequence[record_pb2.Record],
        *,
        agent: str,
        patient: str,
        request_id: str = "",
        request_hash: str = "",
    ) -> list[record_pb2.Record]:
        require_own_parent(caller, tenant_id, "write:memory")
        caller.require("write:memory", f"tenants/{tenant_id}")
        owner = agent or caller.actor_name
        now = utcnow()
        creates: list[NewRecord] = []
        cited: dict[str, None] = {}
        for i, memory in enumerate(memories):
            record_id = self._requested_id(tenant_id, memory.name, f"memories[{i}].name")
            ready = prepare(memory, agent=owner, patient=patient, now=now)
            self._check_owner(caller, tenant_id, ready.memory_block.agent, f"memories[{i}]")
            record_id = record_id or new_record_id(INFO)
            ready.memory_block.vector_id = vector_id(tenant_id, record_id)
            ready.ClearField("name")
            creates.append(NewRecord(record_id, ready))
            cited.update(dict.fromkeys(ready.memory_block.related_memories))
        revisions = [
            Revision(
                name=name,
                revise=lambda record: (
                    importance.record_citation(record, now) if may_access(caller, record) else None
                ),
                paths=("memory_block.importance_score",),
            )
            for name in cited
        ]
        written = await self._writer.write(
            caller,
            tenant_id,
            creates=creates,
            revisions=revisions,
            strict=False,
            prefix="memories[{i}]",
            revised_field="memory",
            request_id=request_id,
            request_hash=request_hash,
            method="Remember",
            now=now,
        )
        await self.settle(tenant_id)
        return written.created

    @staticmethod
    def _requested_id(tenant_id: str, name: str, field: str) -> str:
        if not name:
            return ""
        parsed = parse_memory_name(name, field)
        if parsed.tenant_id != tenant_id:
            raise Forbidden(f"{name} is not in tenants/{tenant_id}", permission="write:memory")
        return parsed.id

    @staticmethod
    def _check_owner(caller: Caller, tenant_id: str, agent: str, field: str) -> None:
        parts = names.parse(names.ACTOR, agent, f"{field}.memory_block.agent")
        if parts["tenant"] != tenant_id:
            raise Forbidden(
                f"{agent} is not an actor of tenants/{tenant_id}", permission="write:memory"
            )
        if agent != caller.actor_name and not sees_every_owner(caller, INFO):
            raise Forbidden(
                f"actor {caller.actor_name!r} is an agent: it stores memories as itself only",
                permission="admin:memory",
            )

    async def get(self, caller: Caller, name_text: str) -> record_pb2.Record:
        name = parse_memory_name(name_text)
        if name.tenant_id != caller.tenant_id:
            raise NotFound("MemoryBlock", str(name))
        caller.require("read:memory", str(name))
        async with self._store.transaction(name.tenant_id) as tx:
            record = await tx.get(COLLECTION, name.id)
        if record is None or not may_access(caller, record):
            raise NotFound("MemoryBlock", str(name))
        return record

    async def update(
        self, caller: Caller, changes: record_pb2.Record, mask: FieldMask
    ) -> record_pb2.Record:
        name = parse_memory_name(changes.name, "memory.name")
        require_own_parent(caller, name.tenant_id, "write:memory")
        caller.require("write:memory", str(name))
        paths = update_paths(mask)
        now = utcnow()
        if "memory_block.agent" in paths:
            self._check_owner(caller, name.tenant_id, changes.memory_block.agent, "memory")

        def revise(current: record_pb2.Record) -> record_pb2.Record:
            if not may_access(caller, current):
                raise NotFound("MemoryBlock", str(name))
            check_etag(str(name), current.version, changes.etag)
            updated = record_pb2.Record()
            updated.CopyFrom(current)
            if "memory_block.importance_score" not in paths:
                updated.memory_block.importance_score = round(importance.effective(current, now), 6)
            FieldMask(paths=paths).MergeMessage(
                changes, updated, replace_message_field=True, replace_repeated_field=True
            )
            block = updated.memory_block
            tags = normalise_tags(list(block.tags))
            del block.tags[:]
            block.tags.extend(tags)
            check_block(block, "memory.memory_block")
            return updated

        written = await self._writer.write(
            caller,
            name.tenant_id,
            revisions=[Revision(str(name), revise, tuple(paths))],
            strict=True,
            revised_field="memory",
            now=now,
        )
        await self.settle(name.tenant_id)
        return written.revised[str(name)]


def update_paths(mask: FieldMask) -> list[str]:
    """The mask's paths, checked: envelope fields and MemoryBlock fields a client owns."""
    if not mask.paths:
        raise Invalid(
            FieldViolation("update_mask", "name the fields to change, e.g. memory_block.content")
        )
    paths: list[str] = []
    bad: list[FieldViolation] = []
    for path in mask.paths:
        top, _, rest = path.partition(".")
        if path == "memory_block":
            paths.extend(f"memory_block.{f}" for f in MUTABLE_BLOCK_FIELDS)
        elif top == "memory_block" and rest.split(".")[0] in MUTABLE_BLOCK_FIELDS:
            paths.append(path)
        elif top == "memory_block" and rest.split(".")[0] in OUTPUT_ONLY:
            bad.append(FieldViolation("update_mask", f"{path!r} is output only"))
        elif top in ENVELOPE_MUTABLE and not rest:
            paths.append(path)
        else:
            bad.append(
                FieldViolation("update_mask", f"{path!r} is not a field a memory update sets")
            )
    if bad:
        raise Invalid(bad)
    return paths


def check_block(block: memory_block_pb2.MemoryBlock, path: str) -> None:
    """The MemoryBlock rules the record checks do not cover (sizes and counts)."""
    problems: list[FieldViolation] = []
    if len(block.content) > 10_000:
        problems.append(FieldViolation(f"{path}.content", "is longer than 10,000 characters"))
    if len(block.summary) > 500:
        problems.append(FieldViolation(f"{path}.summary", "is longer than 500 characters"))
    if len(block.tags) > MAX_TAGS:
        problems.append(FieldViolation(f"{path}.tags", f"at most {MAX_TAGS} tags"))
    problems += [
        FieldViolation(f"{path}.tags[{i}]", "is longer than 50 characters")
        for i, tag in enumerate(block.tags)
        if len(tag) > 50
    ]
    if len(block.related_memories) > MAX_RELATED:
        problems.append(FieldViolation(f"{path}.related_memories", f"at most {MAX_RELATED}"))
    if block.HasField("ttl_seconds") and block.ttl_seconds <= 0:
        problems.append(FieldViolation(f"{path}.ttl_seconds", "must be positive"))
    if problems:
        raise Invalid(problems)
