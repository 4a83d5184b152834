"""Forgetting one memory, and erasing everything remembered about a patient.

Forget is a soft delete: the record keeps its history (as every record
does), the memory leaves recall, and its vector row is closed (kept only for
recall `as_of` an earlier instant, like the record history). The reason is
written to the audit log.

ErasePatientMemories is the right to erasure: every memory that names the
patient — in its current version or any earlier one, through `patient` or
context_metadata["patient_id"], owned by any agent — is purged from the
database (records, every version, filter rows, replayable responses, with a
PURGE entry in the change log) and every vector row of it is deleted from
Milvus: the memory index and the search service's record index. Needs
admin:memory; the reason and the count are audited.
"""

from __future__ import annotations

from dataclasses import dataclass

from hacs.records.v1 import record_pb2

from services.common.caller import Caller, current_call
from services.common.db.base import utcnow
from services.common.errors import Forbidden, NotFound
from services.common.etags import check_etag
from services.kernel.records.access import may_access, require_own_parent
from services.kernel.records.names import parse_patient_name, record_name
from services.kernel.records.store import RecordStore
from services.kernel.records.write_plans import Revision
from services.kernel.records.writes import RecordWriter
from services.memory.blocks import COLLECTION, INFO, patient_id
from services.memory.memories import Memories, parse_memory_name
from services.memory.memory_index import MemoryIndex

SCAN_BATCH = 1000


@dataclass(frozen=True)
class Erasure:
    names: list[str]
    versions: int
    vectors: int
    dry_run: bool


def _audit(**details: str) -> None:
    state = current_call()
    if state is not None:
        state.details.update({k: v for k, v in details.items() if v})


class Forgetter:
    def __init__(
        self,
        store: RecordStore,
        writer: RecordWriter,
        index: MemoryIndex,
        memories: Memories,
    ) -> None:
        self._store = store
        self._writer = writer
        self._index = index
        self._memories = memories

    async def forget(
        self, caller: Caller, name_text: str, reason: str, etag: str
    ) -> record_pb2.Record:
        name = parse_memory_name(name_text)
        require_own_parent(caller, name.tenant_id, "write:memory")
        caller.require("write:memory", str(name))
        _audit(reason=reason)

        def revise(current: record_pb2.Record) -> record_pb2.Record:
            if not may_access(caller, current):
                raise NotFound("MemoryBlock", str(name))
            check_etag(str(name), current.version, etag)
            return current

        written = await self._writer.write(
            caller,
            name.tenant_id,
            revisions=[Revision(str(name), revise, (), delete=True)],
            strict=True,
            revised_field="memory",
            now=utcnow(),
        )
        await self._memories.settle(name.tenant_id)
        return written.revised[str(name)]

    async def erase_patient(
        self, caller: Caller, tenant_id: str, patient: str, reason: str, *, dry_run: bool
    ) -> Erasure:
        require_own_parent(caller, tenant_id, "admin:memory")
        caller.require("admin:memory", patient)
        patient_tenant, pid = parse_patient_name(patient, "patient")
        if patient_tenant != tenant_id:
            raise Forbidden(
                f"{patient} is not a patient of tenants/{tenant_id}", permission="admin:memory"
            )
        _audit(reason=reason, dry_run="true" if dry_run else "")
        # Bring the index up to date first, so every row to erase is known.
        await self._index.catch_up(tenant_id)
        ids, versions = await self._about(tenant_id, patient, pid)
        names = [record_name(tenant_id, INFO, i) for i in ids]
        if dry_run:
            vectors = await self._index.count_rows(tenant_id, names)
            return Erasure(names, versions, vectors, True)
        outcome = await self._writer.purge(caller, names, reason)
        vectors = await self._index.erase(tenant_id, outcome.names)
        vectors += await self._index.erase_from_record_index(tenant_id, outcome.names)
        await self._memories.settle(tenant_id)
        _audit(erased=str(len(outcome.names)))
        return Erasure(outcome.names, outcome.versions, vectors, False)

    async def _about(self, tenant_id: str, patient: str, pid: str) -> tuple[list[str], int]:
        """Ids of memories that named the patient in any version, and their version count."""
        versions: dict[str, int] = {}
        about: set[str] = set()
        after: tuple[str, int] | None = None
        while True:
            async with self._store.transaction(tenant_id) as tx:
                batch = await tx.version_bodies(COLLECTION, after=after, limit=SCAN_BATCH)
            for record_id, _, record in batch:
                versions[record_id] = versions.get(record_id, 0) + 1
                block = record.memory_block
                if block.patient == patient or patient_id(block) == pid:
                    about.add(record_id)
            if len(batch) < SCAN_BATCH:
                break
            after = (batch[-1][0], batch[-1][1])
        ordered = sorted(about)
        return ordered, sum(versions[i] for i in ordered)
