"""ListMemories: a scope's memories in pages, in one of four orders.

"create_time" and "event_time" are columns of the records table (a memory's
clinical time is its event time, else its creation), so those pages are read
in order with a keyset and filtered as they come; the scan stops as soon as
a page is full. "importance_score" and "last_accessed" live in the record
body and importance decays with time, so those orders read the whole scope,
sort it, and continue after the last (value, name) returned. The page token
also pins the time importance was evaluated at: every page of one listing
ranks by the same clock, so decay between calls cannot skip or repeat a
memory.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from hacs.records.v1 import record_pb2

from services.common.caller import Caller
from services.common.db.base import utcnow
from services.common.errors import FieldViolation, Invalid
from services.common.pagination import decode_page_token, encode_page_token
from services.kernel.records.access import require_own_parent
from services.kernel.records.store import RecordQuery, RecordStore
from services.memory import importance
from services.memory.blocks import COLLECTION, memory_id
from services.memory.scope import Scope, matches

ORDERS = {
    "create_time": ("create_time", True),
    "event_time": ("clinical_time", False),
    "importance_score": ("importance", True),
    "last_accessed": ("last_accessed", True),
}
SCAN_BATCH = 500
_COLUMN_ORDERS = ("create_time", "clinical_time")


@dataclass(frozen=True)
class Order:
    field: str  # create_time | clinical_time | importance | last_accessed
    descending: bool


def parse_order(text: str) -> Order:
    words = text.split()
    if not words:
        return Order("create_time", True)
    if (
        words[0] not in ORDERS
        or len(words) > 2
        or (len(words) == 2 and words[1] not in ("asc", "desc"))
    ):
        raise Invalid(
            FieldViolation(
                "order_by",
                f"{text!r}: use one of {', '.join(ORDERS)}, optionally followed by asc or desc",
            )
        )
    column, descending = ORDERS[words[0]]
    if len(words) == 2:
        descending = words[1] == "desc"
    return Order(column, descending)


class Lister:
    def __init__(self, store: RecordStore) -> None:
        self._store = store

    async def page(
        self,
        caller: Caller,
        scope: Scope,
        order_by: str,
        page_size: int,
        page_token: str,
        *,
        show_deleted: bool,
    ) -> tuple[list[record_pb2.Record], str]:
        require_own_parent(caller, scope.tenant_id, "read:memory")
        caller.require("read:memory", f"tenants/{scope.tenant_id}")
        order = parse_order(order_by)
        fingerprint = _digest(scope, order, show_deleted)
        after = _decode(page_token, fingerprint) if page_token else None
        now = utcnow()
        if after is not None and len(after) == 3 and order.field not in _COLUMN_ORDERS:
            now = _pinned_clock(after[2])  # the clock of the first page

        def wanted(record: record_pb2.Record) -> bool:
            if show_deleted and record.HasField("delete_time"):
                record = _undeleted(record)
            return matches(record, scope, query_time=now)

        if order.field in _COLUMN_ORDERS:
            return await self._by_column(
                scope, order, wanted, page_size, after, fingerprint, show_deleted
            )
        records = await scan(self._store, scope, wanted, show_deleted=show_deleted)
        keyed = sorted(
            ((_value(r, order, now), r.name, r) for r in records),
            key=lambda item: (item[0], item[1]),
            reverse=order.descending,
        )
        if after is not None:
            key = (float(str(after[0])), str(after[1]))
            keyed = [
                item
                for item in keyed
                if ((item[0], item[1]) < key if order.descending else (item[0], item[1]) > key)
            ]
        page = keyed[:page_size]
        token = ""
        if len(keyed) > page_size and page:
            token = _encode([page[-1][0], page[-1][1], now.isoformat()], fingerprint)
        return [item[2] for item in page], token

    async def _by_column(
        self,
        scope: Scope,
        order: Order,
        wanted: Callable[[record_pb2.Record], bool],
        page_size: int,
        after: list[object] | None,
        fingerprint: str,
        show_deleted: bool,
    ) -> tuple[list[record_pb2.Record], str]:
        keyset = (
            (datetime.fromisoformat(str(after[0])), COLLECTION, str(after[1]))
            if after is not None
            else None
        )
        page: list[record_pb2.Record] = []
        while True:
            query = RecordQuery(
                collections=[COLLECTION],
                patient_id=scope.patients[0] if len(scope.patients) == 1 else None,
                start_time=scope.start_time,
                end_time=scope.end_time,
                labels=dict(scope.labels),
                show_deleted=show_deleted or scope.include_superseded,
                order_field=order.field,
                descending=order.descending,
                after=keyset,
                limit=SCAN_BATCH,
            )
            async with self._store.transaction(scope.tenant_id) as tx:
                batch = await tx.query(query)
            for record in batch:
                keyset = (_column(record, order.field), COLLECTION, memory_id(record.name))
                if not wanted(record):
                    continue
                page.append(record)
                if len(page) == page_size + 1:
                    last = page[page_size - 1]
                    token = _encode(
                        [_column(last, order.field).isoformat(), memory_id(last.name)], fingerprint
                    )
                    return page[:page_size], token
            if len(batch) < SCAN_BATCH:
                return page, ""


async def scan(
    store: RecordStore,
    scope: Scope,
    wanted: Callable[[record_pb2.Record], bool],
    *,
    show_deleted: bool = False,
) -> list[record_pb2.Record]:
    """Every memory of the scope that `wanted` accepts, in name order."""
    found: list[record_pb2.Record] = []
    keyset: tuple[object, str, str] | None = None
    while True:
        query = RecordQuery(
            collections=[COLLECTION],
            patient_id=scope.patients[0] if len(scope.patients) == 1 else None,
            start_time=scope.start_time,
            end_time=scope.end_time,
            labels=dict(scope.labels),
            show_deleted=show_deleted or scope.include_superseded,
            order_field="name",
            descending=False,
            after=keyset,
            limit=SCAN_BATCH,
        )
        async with store.transaction(scope.tenant_id) as tx:
            batch = await tx.query(query)
        found += [r for r in batch if wanted(r)]
        if len(batch) < SCAN_BATCH:
            return found
        keyset = (None, COLLECTION, memory_id(batch[-1].name))


async def scan_scope(store: RecordStore, scope: Scope, now: datetime) -> list[record_pb2.Record]:
    """The scope's memories as recall would see them now."""
    return await scan(store, scope, lambda r: matches(r, scope, query_time=now))


def _undeleted(record: record_pb2.Record) -> record_pb2.Record:
    copy = record_pb2.Record()
    copy.CopyFrom(record)
    copy.ClearField("delete_time")
    return copy


def _column(record: record_pb2.Record, field: str) -> datetime:
    return getattr(record, field).ToDatetime(tzinfo=UTC)  # type: ignore[no-any-return]


def _value(record: record_pb2.Record, order: Order, now: datetime) -> float:
    if order.field == "importance":
        return round(importance.effective(record, now), 9)
    block = record.memory_block
    return (
        block.last_accessed.ToDatetime(tzinfo=UTC).timestamp()
        if block.HasField("last_accessed")
        else 0.0
    )


def _digest(scope: Scope, order: Order, show_deleted: bool) -> str:
    data = repr((sorted(vars(scope).items(), key=lambda kv: kv[0]), order, show_deleted))
    return hashlib.sha256(data.encode()).hexdigest()[:16]


def _encode(key: list[object], fingerprint: str) -> str:
    return encode_page_token("memories", json.dumps({"f": fingerprint, "k": key}))


def _pinned_clock(value: object) -> datetime:
    try:
        pinned = datetime.fromisoformat(str(value))
    except ValueError as exc:
        raise Invalid(
            FieldViolation("page_token", "is not a page token returned by this list")
        ) from exc
    return pinned if pinned.tzinfo else pinned.replace(tzinfo=UTC)


def _decode(token: str, fingerprint: str) -> list[object]:
    try:
        payload = json.loads(decode_page_token("memories", token))
        key = list(payload["k"])
        same = payload["f"] == fingerprint
    except (ValueError, KeyError, TypeError) as exc:
        raise Invalid(
            FieldViolation("page_token", "is not a page token returned by this list")
        ) from exc
    if not same:
        raise Invalid(
            FieldViolation(
                "page_token", "the filters changed since this token was made; start over"
            )
        )
    return key
