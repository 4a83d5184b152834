"""Storage of records, their versions and the change log (SQLite or PostgreSQL).

Domain code opens `store.transaction(tenant_id)` and calls the few methods it
needs on the `RecordTx`; a write and its change-log entries commit together
or not at all. Every statement filters on `tenant_id`, and PostgreSQL's
row-level security enforces it a second time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from google.protobuf import json_format
from hacs.records.v1 import record_pb2
from sqlalchemy import (
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.db.engine import Database
from services.kernel.records.tables import (
    ChangeRow,
    IdempotentRequestRow,
    RecordCodeRow,
    RecordLabelRow,
    RecordRow,
    RecordVersionRow,
    TenantCounterRow,
)


@dataclass(frozen=True)
class Stored:
    """A record as written: the proto plus the derived columns beside it."""

    record: record_pb2.Record
    collection: str
    id: str
    patient_id: str | None
    clinical_time: datetime
    codes: frozenset[tuple[str, str]]
    owner: str | None = None  # the actor it belongs to, for types with owners


@dataclass(frozen=True)
class OwnedOnly:
    """Rows of these collections only where `owner` owns them: a caller who may act on its
    own records of a type with owners, not on everyone's (kernel/records/access.py)."""

    collections: frozenset[str]
    owner: str

    def clause(self, collection: Any, owner: Any) -> Any:
        return or_(collection.not_in(sorted(self.collections)), owner == self.owner)


@dataclass(frozen=True)
class ChangeEntry:
    collection: str
    record_id: str
    operation: str
    version: int
    commit_time: datetime
    actor: str
    patient_id: str | None
    previous_patient_id: str | None
    labels: dict[str, str]
    changed_paths: list[str]
    sequence: int = 0
    owner: str | None = None  # the record's owner when the change was made


@dataclass(frozen=True)
class RecordQuery:
    collections: Sequence[str]
    patient_id: str | None = None
    codes: Sequence[tuple[str | None, str]] = ()  # (system or None for any, code)
    start_time: datetime | None = None
    end_time: datetime | None = None
    labels: dict[str, str] = field(default_factory=dict)
    show_deleted: bool = False
    order_field: str = "update_time"  # update_time | create_time | clinical_time | name
    descending: bool = True
    # Keyset: continue after this (order value, collection, id).
    after: tuple[Any, str, str] | None = None
    limit: int = 50
    owned_only: OwnedOnly | None = None


def _version_values(record_values: dict[str, Any]) -> dict[str, Any]:
    """The history row of a version, from the values of its current-record row."""
    keep = (
        "tenant_id",
        "collection",
        "id",
        "version",
        "update_time",
        "updated_by",
        "delete_time",
        "body",
    )
    return {key: record_values[key] for key in keep}


def _length_delimited(text: str) -> bytes:
    """`text` as protobuf writes a string field's value (varint length, then bytes).

    Matching this, not the bare text, keeps "…/m-1" from matching "…/m-10".
    """
    data = text.encode()
    size, prefix = len(data), bytearray()
    while True:
        low, size = size & 0x7F, size >> 7
        prefix.append(low | (0x80 if size else 0))
        if not size:
            return bytes(prefix) + data


def _ids_by_collection(keys: Sequence[tuple[str, str]]) -> list[tuple[str, list[str]]]:
    """(collection, ids) groups of at most 1,000 ids.

    `collection = :c AND id IN (...)` is one index condition (`id = ANY(...)`) that
    PostgreSQL plans in ~1 ms; a row-value `(collection, id) IN ((...), ...)` of 500
    pairs becomes a 500-arm BitmapOr planned on every execution (65-340 ms measured).
    """
    by_collection: dict[str, list[str]] = {}
    for collection, record_id in keys:
        by_collection.setdefault(collection, []).append(record_id)
    return [
        (collection, ids[start : start + 1000])
        for collection, ids in by_collection.items()
        for start in range(0, len(ids), 1000)
    ]


def to_body(record: record_pb2.Record) -> dict[str, Any]:
    return json_format.MessageToDict(record, preserving_proto_field_name=True)


def from_body(body: dict[str, Any]) -> record_pb2.Record:
    return json_format.ParseDict(body, record_pb2.Record())


_GET = select(RecordRow.body).where(
    RecordRow.tenant_id == bindparam("tenant"),
    RecordRow.collection == bindparam("collection"),
    RecordRow.id == bindparam("id"),
)
_GET_FOR_UPDATE = _GET.with_for_update()


class RecordStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    @asynccontextmanager
    async def transaction(self, tenant_id: str) -> AsyncIterator[RecordTx]:
        async with self.db.transaction(tenant_id) as session:
            yield RecordTx(session, tenant_id, self.db.is_postgres)

    @asynccontextmanager
    async def read(self, tenant_id: str) -> AsyncIterator[RecordTx]:
        """A read-only transaction (Database.read): its reads never queue behind writers."""
        async with self.db.read(tenant_id) as session:
            yield RecordTx(session, tenant_id, self.db.is_postgres)


class RecordTx:
    def __init__(self, session: AsyncSession, tenant_id: str, is_postgres: bool) -> None:
        self._s = session
        self._tenant = tenant_id
        self._pg = is_postgres

    # -- reads ---------------------------------------------------------------

    async def get(
        self, collection: str, record_id: str, *, for_update: bool = False
    ) -> record_pb2.Record | None:
        # Built once, run on the session's connection: no statement to build and no ORM
        # execution path on the hottest read (a record by its name).
        connection = await self._s.connection()
        body = (
            await connection.execute(
                _GET_FOR_UPDATE if for_update else _GET,
                {"tenant": self._tenant, "collection": collection, "id": record_id},
            )
        ).scalar()
        return from_body(body) if body is not None else None

    async def get_many(
        self, keys: Sequence[tuple[str, str]], *, for_update: bool = False
    ) -> dict[tuple[str, str], record_pb2.Record]:
        """Current versions of the (collection, id) pairs that exist, deleted ones too."""
        found: dict[tuple[str, str], record_pb2.Record] = {}
        for collection, ids in _ids_by_collection(keys):
            stmt = select(RecordRow.collection, RecordRow.id, RecordRow.body).where(
                RecordRow.tenant_id == self._tenant,
                RecordRow.collection == collection,
                RecordRow.id.in_(ids),
            )
            if for_update:
                stmt = stmt.with_for_update()
            for collection_, record_id, body in (await self._s.execute(stmt)).all():
                found[(collection_, record_id)] = from_body(body)
        return found

    async def get_version(
        self, collection: str, record_id: str, version: int
    ) -> record_pb2.Record | None:
        body = await self._s.scalar(
            select(RecordVersionRow.body).where(
                RecordVersionRow.tenant_id == self._tenant,
                RecordVersionRow.collection == collection,
                RecordVersionRow.id == record_id,
                RecordVersionRow.version == version,
            )
        )
        return from_body(body) if body is not None else None

    async def versions_at(
        self, collection: str, record_ids: Sequence[str], at: datetime
    ) -> dict[str, record_pb2.Record]:
        """Each record's version current at `at`: the last one written at or before it.

        Records created after `at` are absent. Point-in-time reads ("what did
        we know then") use this.
        """
        v = RecordVersionRow
        found: dict[str, record_pb2.Record] = {}
        ids = list(record_ids)
        for start in range(0, len(ids), 500):
            latest = (
                select(v.id, func.max(v.version).label("version"))
                .where(
                    v.tenant_id == self._tenant,
                    v.collection == collection,
                    v.id.in_(ids[start : start + 500]),
                    v.update_time <= at,
                )
                .group_by(v.id)
                .subquery()
            )
            stmt = select(v.id, v.body).join(
                latest, and_(v.id == latest.c.id, v.version == latest.c.version)
            )
            stmt = stmt.where(v.tenant_id == self._tenant, v.collection == collection)
            for record_id, body in (await self._s.execute(stmt)).all():
                found[record_id] = from_body(body)
        return found

    async def existing_ids(
        self, keys: Sequence[tuple[str, str]], *, live_only: bool = False
    ) -> set[tuple[str, str]]:
        """Which (collection, id) pairs exist (deleted ones too, unless `live_only`)."""
        found: set[tuple[str, str]] = set()
        for collection, ids in _ids_by_collection(keys):
            stmt = select(RecordRow.collection, RecordRow.id).where(
                RecordRow.tenant_id == self._tenant,
                RecordRow.collection == collection,
                RecordRow.id.in_(ids),
            )
            if live_only:
                stmt = stmt.where(RecordRow.delete_time.is_(None))
            rows = await self._s.execute(stmt)
            found.update((c, i) for c, i in rows.all())
        return found

    async def query(self, query: RecordQuery) -> list[record_pb2.Record]:
        r = RecordRow
        stmt = select(r.body).where(
            r.tenant_id == self._tenant, r.collection.in_(list(query.collections))
        )
        if query.patient_id is not None:
            stmt = stmt.where(r.patient_id == query.patient_id)
        if query.start_time is not None:
            stmt = stmt.where(r.clinical_time >= query.start_time)
        if query.end_time is not None:
            stmt = stmt.where(r.clinical_time < query.end_time)
        if not query.show_deleted:
            stmt = stmt.where(r.delete_time.is_(None))
        if query.owned_only is not None:
            stmt = stmt.where(query.owned_only.clause(r.collection, r.owner))
        if query.codes:
            c = RecordCodeRow
            matches = [
                and_(c.code == code, c.system == system) if system is not None else c.code == code
                for system, code in query.codes
            ]
            stmt = stmt.where(
                exists().where(
                    c.tenant_id == r.tenant_id,
                    c.collection == r.collection,
                    c.id == r.id,
                    or_(*matches),
                )
            )
        for key, value in query.labels.items():
            lab = RecordLabelRow
            condition = and_(
                lab.tenant_id == r.tenant_id,
                lab.collection == r.collection,
                lab.id == r.id,
                lab.key == key,
            )
            if value:
                condition = and_(condition, lab.value == value)
            stmt = stmt.where(exists().where(condition))

        if query.order_field == "name":
            order_cols = [r.collection, r.id]
            key_cols = [r.collection, r.id]
        else:
            primary = getattr(r, query.order_field)
            order_cols = [primary, r.collection, r.id]
            key_cols = [primary, r.collection, r.id]
        if query.after is not None:
            after = query.after[1:] if query.order_field == "name" else query.after
            keyset = tuple_(*key_cols)
            stmt = stmt.where(
                keyset < tuple_(*after) if query.descending else keyset > tuple_(*after)
            )
        stmt = stmt.order_by(*[col.desc() if query.descending else col.asc() for col in order_cols])
        rows = await self._s.scalars(stmt.limit(query.limit))
        return [from_body(body) for body in rows]

    async def compartment(
        self, patient_ids: Sequence[str], collections: Sequence[str] | None = None
    ) -> list[record_pb2.Record]:
        """Live records in these patients' compartments (of these collections)."""
        found: list[record_pb2.Record] = []
        ids = list(patient_ids)
        for start in range(0, len(ids), 500):
            stmt = select(RecordRow.body).where(
                RecordRow.tenant_id == self._tenant,
                RecordRow.patient_id.in_(ids[start : start + 500]),
                RecordRow.delete_time.is_(None),
            )
            if collections:
                stmt = stmt.where(RecordRow.collection.in_(list(collections)))
            found += [from_body(body) for body in await self._s.scalars(stmt)]
        return found

    async def scan(
        self, *, after: tuple[str, str] | None, limit: int, collections: Sequence[str] | None = None
    ) -> list[record_pb2.Record]:
        """Live records in (collection, id) order, for rebuilding derived indexes."""
        stmt = select(RecordRow.body).where(
            RecordRow.tenant_id == self._tenant, RecordRow.delete_time.is_(None)
        )
        if collections:
            stmt = stmt.where(RecordRow.collection.in_(list(collections)))
        if after is not None:
            stmt = stmt.where(tuple_(RecordRow.collection, RecordRow.id) > tuple_(*after))
        stmt = stmt.order_by(RecordRow.collection, RecordRow.id).limit(limit)
        return [from_body(body) for body in await self._s.scalars(stmt)]

    async def count_live_records(self, collections: Sequence[str] | None = None) -> int:
        stmt = (
            select(func.count())
            .select_from(RecordRow)
            .where(RecordRow.tenant_id == self._tenant, RecordRow.delete_time.is_(None))
        )
        if collections:
            stmt = stmt.where(RecordRow.collection.in_(list(collections)))
        return int(await self._s.scalar(stmt) or 0)

    async def live_records_by_collection(self) -> dict[str, int]:
        """Records not deleted, per collection (the `records_stored` usage gauge)."""
        stmt = (
            select(RecordRow.collection, func.count())
            .where(RecordRow.tenant_id == self._tenant, RecordRow.delete_time.is_(None))
            .group_by(RecordRow.collection)
        )
        return {collection: int(n) for collection, n in (await self._s.execute(stmt)).all()}

    async def history(
        self, collection: str, record_id: str, *, before_version: int | None, limit: int
    ) -> list[record_pb2.Record]:
        v = RecordVersionRow
        stmt = select(v.body).where(
            v.tenant_id == self._tenant, v.collection == collection, v.id == record_id
        )
        if before_version is not None:
            stmt = stmt.where(v.version < before_version)
        rows = await self._s.scalars(stmt.order_by(v.version.desc()).limit(limit))
        return [from_body(body) for body in rows]

    # -- writes --------------------------------------------------------------

    async def insert_many(self, items: Sequence[Stored]) -> None:
        """New records (version 1): current row, version row, codes and labels."""
        if not items:
            return
        values = [self._record_values(item) for item in items]
        await self._s.execute(insert(RecordRow), values)
        await self._s.execute(insert(RecordVersionRow), [_version_values(v) for v in values])
        await self._write_index_rows(items)

    async def replace(self, item: Stored, *, expected_version: int) -> bool:
        """Write a new version if the stored one is still `expected_version`."""
        values = self._record_values(item)
        result = await self._s.execute(
            update(RecordRow)
            .where(
                RecordRow.tenant_id == self._tenant,
                RecordRow.collection == item.collection,
                RecordRow.id == item.id,
                RecordRow.version == expected_version,
            )
            .values({k: v for k, v in values.items() if k not in ("tenant_id", "collection", "id")})
        )
        if not result.rowcount:  # type: ignore[attr-defined]
            return False
        await self._s.execute(insert(RecordVersionRow), [_version_values(values)])
        for table in (RecordCodeRow, RecordLabelRow):
            await self._s.execute(
                delete(table).where(
                    table.tenant_id == self._tenant,
                    table.collection == item.collection,
                    table.id == item.id,
                )
            )
        await self._write_index_rows([item])
        return True

    async def _write_index_rows(self, items: Sequence[Stored]) -> None:
        codes = [
            {
                "tenant_id": self._tenant,
                "collection": i.collection,
                "id": i.id,
                "system": s,
                "code": c,
            }
            for i in items
            if i.record.delete_time.seconds == 0
            for s, c in i.codes
        ]
        labels = [
            {
                "tenant_id": self._tenant,
                "collection": i.collection,
                "id": i.id,
                "key": k,
                "value": v,
            }
            for i in items
            if i.record.delete_time.seconds == 0
            for k, v in i.record.labels.items()
        ]
        if codes:
            await self._s.execute(insert(RecordCodeRow), codes)
        if labels:
            await self._s.execute(insert(RecordLabelRow), labels)

    def _record_values(self, item: Stored) -> dict[str, Any]:
        record = item.record
        return {
            "tenant_id": self._tenant,
            "collection": item.collection,
            "id": item.id,
            "version": record.version,
            "patient_id": item.patient_id,
            "clinical_time": item.clinical_time,
            "create_time": record.create_time.ToDatetime(tzinfo=item.clinical_time.tzinfo),
            "update_time": record.update_time.ToDatetime(tzinfo=item.clinical_time.tzinfo),
            "delete_time": record.delete_time.ToDatetime(tzinfo=item.clinical_time.tzinfo)
            if record.HasField("delete_time")
            else None,
            "created_by": record.created_by.name,
            "updated_by": record.updated_by.name,
            "body": to_body(record),
            "owner": item.owner,
        }

    # -- erasure (hard delete) ---------------------------------------------------

    async def version_bodies(
        self, collection: str, *, after: tuple[str, int] | None, limit: int
    ) -> list[tuple[str, int, record_pb2.Record]]:
        """Every stored version of a collection, deleted records too, in (id, version) order.

        Erasure must look through history: a record may have named the data
        subject in an earlier version only.
        """
        v = RecordVersionRow
        stmt = select(v.id, v.version, v.body).where(
            v.tenant_id == self._tenant, v.collection == collection
        )
        if after is not None:
            stmt = stmt.where(tuple_(v.id, v.version) > tuple_(*after))
        rows = await self._s.execute(stmt.order_by(v.id, v.version).limit(limit))
        return [(rid, int(version), from_body(body)) for rid, version, body in rows.all()]

    async def purge(self, collection: str, record_ids: Sequence[str]) -> int:
        """Remove records for good: current row, every version, codes and labels.

        Returns the number of versions removed. The caller appends the PURGE
        change-log entries in the same transaction.
        """
        ids = list(record_ids)
        removed = 0
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            removed += int(
                await self._s.scalar(
                    select(func.count())
                    .select_from(RecordVersionRow)
                    .where(
                        RecordVersionRow.tenant_id == self._tenant,
                        RecordVersionRow.collection == collection,
                        RecordVersionRow.id.in_(chunk),
                    )
                )
                or 0
            )
            for table in (RecordVersionRow, RecordCodeRow, RecordLabelRow, RecordRow):
                await self._s.execute(
                    delete(table).where(
                        table.tenant_id == self._tenant,
                        table.collection == collection,
                        table.id.in_(chunk),
                    )
                )
        return removed

    async def forget_responses_naming(self, names: Sequence[str]) -> int:
        """Drop remembered idempotent responses that hold any of these record names.

        A replayable response carries the records it returned, content and
        all, so an erased record must not survive there either.
        """
        if not names:
            return 0
        r = IdempotentRequestRow
        rows = await self._s.execute(
            select(r.request_id, r.response).where(r.tenant_id == self._tenant)
        )
        needles = [_length_delimited(name) for name in names]
        doomed = [rid for rid, response in rows.all() if any(n in response for n in needles)]
        for start in range(0, len(doomed), 500):
            await self._s.execute(
                delete(r).where(
                    r.tenant_id == self._tenant, r.request_id.in_(doomed[start : start + 500])
                )
            )
        return len(doomed)

    # -- change log ------------------------------------------------------------

    async def append_changes(self, entries: Sequence[ChangeEntry]) -> list[int]:
        """Give the entries the tenant's next sequence numbers and write them.

        Taking the numbers locks the tenant's counter row until commit, so
        changes commit in sequence order: a reader that has seen N never
        finds a change <= N appear later. Call it last in a transaction to
        hold the lock briefly.
        """
        if not entries:
            return []
        count = len(entries)
        last = await self._bump("last_sequence", count)
        first = last - count + 1
        rows = [
            {
                "tenant_id": self._tenant,
                "sequence": first + n,
                "collection": e.collection,
                "record_id": e.record_id,
                "operation": e.operation,
                "version": e.version,
                "commit_time": e.commit_time,
                "actor": e.actor,
                "patient_id": e.patient_id,
                "previous_patient_id": e.previous_patient_id,
                "labels": e.labels,
                "changed_paths": e.changed_paths,
                "owner": e.owner,
            }
            for n, e in enumerate(entries)
        ]
        await self._s.execute(insert(ChangeRow), rows)
        return list(range(first, last + 1))

    async def _bump(self, counter: str, by: int) -> int:
        """Add `by` to one of the tenant's counters (creating the row) and return it."""
        dialect_insert = postgresql.insert if self._pg else sqlite.insert
        column = getattr(TenantCounterRow, counter)
        stmt = (
            dialect_insert(TenantCounterRow)
            .values(
                {"tenant_id": self._tenant, "last_sequence": 0, "live_patients": 0, counter: by}
            )
            .on_conflict_do_update(index_elements=["tenant_id"], set_={counter: column + by})
            .returning(column)
        )
        return int((await self._s.execute(stmt)).scalar_one())

    async def add_live_patients(self, delta: int) -> int:
        """Change the live-patient count; returns the new count (row locked until commit)."""
        return await self._bump("live_patients", delta)

    async def head_sequence(self) -> int:
        value = await self._s.scalar(
            select(TenantCounterRow.last_sequence).where(TenantCounterRow.tenant_id == self._tenant)
        )
        return int(value or 0)

    async def earliest_sequence(self) -> int:
        value = await self._s.scalar(
            select(func.min(ChangeRow.sequence)).where(ChangeRow.tenant_id == self._tenant)
        )
        return int(value or 0)

    async def changes(
        self,
        *,
        after: int,
        up_to: int,
        limit: int,
        collections: Sequence[str] | None,
        owned_only: OwnedOnly | None = None,
    ) -> list[ChangeEntry]:
        c = ChangeRow
        stmt = select(c).where(c.tenant_id == self._tenant, c.sequence > after, c.sequence <= up_to)
        if collections:
            stmt = stmt.where(c.collection.in_(list(collections)))
        if owned_only is not None:
            stmt = stmt.where(owned_only.clause(c.collection, c.owner))
        rows = await self._s.scalars(stmt.order_by(c.sequence).limit(limit))
        return [
            ChangeEntry(
                sequence=row.sequence,
                collection=row.collection,
                record_id=row.record_id,
                operation=row.operation,
                version=row.version,
                commit_time=row.commit_time,
                actor=row.actor,
                patient_id=row.patient_id,
                previous_patient_id=row.previous_patient_id,
                labels=dict(row.labels or {}),
                changed_paths=list(row.changed_paths or []),
                owner=row.owner,
            )
            for row in rows
        ]

    # -- idempotency -------------------------------------------------------------

    async def remembered(
        self, request_id: str, *, not_before: datetime
    ) -> tuple[str, str, bytes] | None:
        """(method, request hash, response) of an earlier call with this request_id, if recent."""
        r = IdempotentRequestRow
        row = (
            await self._s.execute(
                select(r.method, r.request_hash, r.response).where(
                    r.tenant_id == self._tenant,
                    r.request_id == request_id,
                    r.create_time >= not_before,
                )
            )
        ).first()
        return (row[0], row[1], row[2]) if row else None

    async def remember(
        self,
        request_id: str,
        method: str,
        request_hash: str,
        response: bytes,
        when: datetime,
        *,
        expire_before: datetime,
    ) -> None:
        r = IdempotentRequestRow
        # Expired entries, this id's included, give way; the index on
        # (tenant_id, create_time) keeps the sweep cheap.
        await self._s.execute(
            delete(r).where(
                r.tenant_id == self._tenant,
                or_(r.request_id == request_id, r.create_time < expire_before),
            )
        )
        await self._s.execute(
            insert(r).values(
                tenant_id=self._tenant,
                request_id=request_id,
                method=method,
                request_hash=request_hash,
                response=response,
                create_time=when,
            )
        )
