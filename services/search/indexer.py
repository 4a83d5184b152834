"""The record indexer: keeps the vector index in step with the records change log.

It tails each tenant's change log from its committed cursor, loads the
current state of every record the changes touch, renders it to text, embeds
it and upserts it (or deletes it from the index when the record is gone),
then commits the cursor. The index write happens before the cursor moves, and
upserts are keyed by record, so a crash in between replays work instead of
losing it: restart-safe, idempotent, no gaps, no duplicates.

A Patient's document holds its conditions and every record's document holds
its patient's sex and birth date (for age and gender filters), so a change to
a Condition re-renders the patient and a change to a Patient re-renders its
compartment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC

from hacs.records.v1 import record_pb2

from services.common.change_bus import ChangeBus
from services.common.db.engine import Database
from services.common.usage_attribution import metered_as
from services.kernel.embedding.embedder import Embedder
from services.kernel.records import derive
from services.kernel.records.derive import parse_fhir_date
from services.kernel.records.names import parse_record_name
from services.kernel.records.resource_types import BY_COLLECTION, of_record
from services.kernel.records.store import RecordStore, RecordTx
from services.kernel.retrieval.cursors import IndexCursors
from services.kernel.retrieval.expressions import is_in
from services.kernel.retrieval.lexical import LexicalIndex
from services.kernel.retrieval.render import concept_text, render
from services.kernel.retrieval.vector_index import RECORDS, IndexDoc, VectorIndex, record_pk
from services.kernel.tenancy.standing import tenant_ids

log = logging.getLogger(__name__)

CHANGES_PER_ROUND = 1000
EMBED_BATCH = 128


@dataclass(frozen=True)
class BackfillProgress:
    processed: int
    total: int
    seconds: float


ProgressCallback = Callable[[BackfillProgress], Awaitable[None]]


# Memories are searched through MemoryService, which keeps its own index and
# scopes every recall to the agent; indexing them here too would let anyone
# with read:memory read every agent's memories through SearchService.
NOT_INDEXED = frozenset({"memoryBlocks"})


def indexable(record: record_pb2.Record) -> bool:
    return _key(record)[0] not in NOT_INDEXED


class RecordIndexer:
    def __init__(
        self,
        db: Database,
        index: VectorIndex,
        lexical: LexicalIndex,
        embedder: Embedder,
        *,
        poll_seconds: float = 2.0,
        bus: ChangeBus | None = None,
    ) -> None:
        self._db = db
        self._store = RecordStore(db)
        self.cursors = IndexCursors(db, RECORDS)
        self._index = index
        self._lexical = lexical
        self._embedder = embedder
        self._poll = poll_seconds
        self._task: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._bus = bus

    # -- the live loop ---------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="record-indexer")
        if self._bus is not None:
            self._listener = asyncio.create_task(self._listen(self._bus), name="record-indexer-bus")

    async def _listen(self, bus: ChangeBus) -> None:
        """Wake up on change notices instead of waiting for the next poll."""
        subscription = bus.subscribe()
        try:
            while True:
                await subscription.next()
                self._wake.set()
        finally:
            subscription.close()

    async def stop(self) -> None:
        for task in (self._listener, self._task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _run(self) -> None:
        dirty = False
        while True:
            try:
                written = await self.run_once()
                if written:
                    dirty = True
                elif dirty:  # a burst of writes is over: seal it so searches use the index
                    await self._index.flush(RECORDS)
                    dirty = False
            except asyncio.CancelledError:
                raise
            except Exception:  # keep indexing other tenants; the cursor did not move
                log.exception("indexing round failed; retrying")
                await asyncio.sleep(2)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll)
            self._wake.clear()

    async def run_once(self) -> int:
        """One pass over every tenant; returns the number of documents written."""
        written = 0
        for tenant_id in await tenant_ids(self._db):
            written += await self.catch_up(tenant_id)
        return written

    async def catch_up(self, tenant_id: str) -> int:
        """Index a tenant's changes until its cursor reaches the head."""
        written = 0
        while True:
            cursor, _ = await self.cursors.read(tenant_id)
            async with self._store.transaction(tenant_id) as tx:
                head = await tx.head_sequence()
                if cursor >= head:
                    return written
                changes = await tx.changes(
                    after=cursor, up_to=head, limit=CHANGES_PER_ROUND, collections=None
                )
            if not changes:
                return written
            keys = list(dict.fromkeys((c.collection, c.record_id) for c in changes))
            patients = {
                c.patient_id for c in changes if c.patient_id and c.collection == "conditions"
            }
            patients |= {c.previous_patient_id for c in changes if c.previous_patient_id}
            changed_patients = [rid for col, rid in keys if col == "patients"]
            written += await self._reindex(tenant_id, keys, patients, changed_patients)
            await self.cursors.save(tenant_id, changes[-1].sequence)

    async def _reindex(
        self,
        tenant_id: str,
        keys: list[tuple[str, str]],
        extra_patients: set[str],
        changed_patients: list[str],
    ) -> int:
        async with self._store.transaction(tenant_id) as tx:
            wanted = set(keys) | {("patients", p) for p in extra_patients}
            if changed_patients:  # demographics are denormalised into the compartment
                wanted |= {_key(r) for r in await tx.compartment(changed_patients)}
            current = await tx.get_many(sorted(wanted))
            live = [r for r in current.values() if not r.HasField("delete_time") and indexable(r)]
            live_keys = {_key(r) for r in live}
            gone = [record_pk(tenant_id, c, i) for c, i in sorted(wanted - live_keys)]
            docs = await _documents(tx, tenant_id, live)
        await self._write(tenant_id, docs)
        await self._index.delete(RECORDS, tenant_id, gone, wait=False)
        await self._lexical.delete(RECORDS, tenant_id, gone)
        if docs or gone:  # one wait for the whole round, before the cursor moves
            await self._index.until_readable(RECORDS)
        return len(docs) + len(gone)

    async def _write(self, tenant_id: str, docs: list[IndexDoc]) -> None:
        for start in range(0, len(docs), EMBED_BATCH):
            batch = docs[start : start + EMBED_BATCH]
            with metered_as(tenant_id):  # the tenant's tokens; never refused (usage_attribution)
                vectors = await self._embedder.embed([d.text for d in batch], query=False)
            for doc, vector in zip(batch, vectors, strict=True):
                doc.vector = vector
            # The caller waits until readable once per round, not per batch.
            await self._index.upsert(RECORDS, batch, wait=False)
            await self._lexical.upsert(RECORDS, batch)

    # -- rebuilding ------------------------------------------------------------

    async def backfill(
        self,
        tenant_id: str,
        *,
        collections: Sequence[str] | None = None,
        batch_size: int = 256,
        progress: ProgressCallback | None = None,
    ) -> tuple[int, int]:
        """Rebuild a tenant's record index from the records; returns (indexed, sequence).

        The live indexer continues from the head sequence read at the start:
        changes committed during the rebuild are applied by it afterwards.
        """
        started = time.monotonic()
        async with self._store.transaction(tenant_id) as tx:
            head = await tx.head_sequence()
            total = await tx.count_live_records(collections)
        kinds = [BY_COLLECTION[c].name for c in collections] if collections else []
        await self._index.delete_where(RECORDS, tenant_id, is_in("kind", kinds) if kinds else "")
        await self._lexical.delete_all(RECORDS, tenant_id, kinds)
        done = 0
        after: tuple[str, str] | None = None
        while True:
            async with self._store.transaction(tenant_id) as tx:
                page = await tx.scan(after=after, limit=batch_size, collections=collections)
                docs = await _documents(tx, tenant_id, [r for r in page if indexable(r)])
            if not page:
                break
            name = parse_record_name(page[-1].name)
            after = (name.info.collection, name.id)
            await self._write(tenant_id, docs)
            done += len(page)
            if progress is not None:
                await progress(BackfillProgress(done, total, time.monotonic() - started))
        await self._index.flush(RECORDS)
        await self._index.until_readable(RECORDS)
        await self.cursors.save(tenant_id, head, only_forward=False)
        return done, head


async def _documents(
    tx: RecordTx, tenant_id: str, records: list[record_pb2.Record]
) -> list[IndexDoc]:
    """Render records to index documents, with their patients' demographics and conditions."""
    patient_ids = {
        r.patient_compartment.rsplit("/", 1)[1] for r in records if r.patient_compartment
    }
    patients = {
        key[1]: record
        for key, record in (await tx.get_many([("patients", p) for p in patient_ids])).items()
    }
    own_patients = [r for r in records if r.WhichOneof("resource") == "patient"]
    conditions: dict[str, list[str]] = {}
    condition_codes: dict[str, set[tuple[str, str]]] = {}
    if own_patients:
        for condition in await tx.compartment([_key(r)[1] for r in own_patients], ["conditions"]):
            pid = condition.patient_compartment.rsplit("/", 1)[1]
            if condition.condition.clinical_status in ("", "active", "recurrence", "relapse"):
                conditions.setdefault(pid, []).append(concept_text(condition.condition.code))
                condition_codes.setdefault(pid, set()).update(
                    derive.codes(condition, BY_COLLECTION["conditions"])
                )
    docs = []
    for record in records:
        info = of_record(record)
        if info is None:
            continue
        name = parse_record_name(record.name)
        pid = record.patient_compartment.rsplit("/", 1)[1] if record.patient_compartment else ""
        title, text = render(
            record, info, conditions=conditions.get(name.id) if info.field == "patient" else None
        )
        patient = patients.get(pid)
        gender, birth = "", -1
        if patient is not None:
            gender = patient.patient.gender
            born = parse_fhir_date(patient.patient.birth_date)
            birth = int(born.strftime("%Y%m%d")) if born else -1
        # A patient matches the codes of its active conditions too.
        pairs = derive.codes(record, info) | condition_codes.get(name.id, set())
        codes = sorted(
            {f"{system}|{code}" for system, code in pairs} | {f"*|{code}" for _, code in pairs}
        )
        docs.append(
            IndexDoc(
                pk=record_pk(tenant_id, name.info.collection, name.id),
                tenant_id=tenant_id,
                name=record.name,
                kind=info.name,
                text=text,
                vector=None,  # type: ignore[arg-type]  # filled by the embedder
                title=title,
                patient_id=pid,
                clinical_time=int(record.clinical_time.ToDatetime(tzinfo=UTC).timestamp()),
                gender=gender,
                birth_ymd=birth,
                codes=codes,
                labels=dict(record.labels),
                version=record.version,
            )
        )
    return docs


def _key(record: record_pb2.Record) -> tuple[str, str]:
    name = parse_record_name(record.name)
    return name.info.collection, name.id
