"""Reading records: one (a version), a filtered list in pages, a record's history."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from hacs.records.v1 import record_pb2

from services.common.caller import Caller
from services.common.errors import FieldViolation, Invalid, NotFound
from services.common.pagination import decode_page_number, decode_page_token, encode_page_token
from services.kernel.records.access import (
    owned_only,
    readable_types,
    require_access,
    require_own_parent,
    require_read,
)
from services.kernel.records.names import parse_patient_name, parse_record_name
from services.kernel.records.resource_types import BY_ENUM
from services.kernel.records.store import RecordQuery, RecordStore

ORDER_FIELDS = ("update_time", "create_time", "clinical_time", "name")


@dataclass(frozen=True)
class ListFilter:
    """ListRecords' filters, as the domain sees them."""

    tenant_id: str
    resource_types: tuple[int, ...] = ()
    patient: str = ""
    codes: tuple[str, ...] = ()
    start_time: datetime | None = None
    end_time: datetime | None = None
    labels: dict[str, str] = field(default_factory=dict)
    order_by: str = ""
    show_deleted: bool = False

    def digest(self) -> str:
        """Binds a page token to the filters it was made for."""
        data = repr(
            (
                self.resource_types,
                self.patient,
                self.codes,
                self.start_time,
                self.end_time,
                sorted(self.labels.items()),
                self.order_by,
                self.show_deleted,
            )
        )
        return hashlib.sha256(data.encode()).hexdigest()[:16]


def parse_order_by(text: str) -> tuple[str, bool]:
    """'clinical_time desc' -> ('clinical_time', True); default 'update_time desc'."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        return "update_time", True
    if len(parts) > 1:
        raise Invalid(
            FieldViolation("order_by", "order by one field; ties are always broken by name")
        )
    words = parts[0].split()
    if (
        words[0] not in ORDER_FIELDS
        or len(words) > 2
        or (len(words) == 2 and words[1] not in ("asc", "desc"))
    ):
        raise Invalid(
            FieldViolation(
                "order_by", f"{parts[0]!r}: use one of {', '.join(ORDER_FIELDS)}, optionally 'desc'"
            )
        )
    return words[0], len(words) == 2 and words[1] == "desc"


def parse_code_token(token: str) -> tuple[str | None, str]:
    """FHIR token search syntax: 'system|code', '|code' (no system) or 'code' (any system)."""
    if "|" not in token:
        return None, token
    system, code = token.split("|", 1)
    return system, code


class RecordReader:
    def __init__(self, store: RecordStore) -> None:
        self._store = store

    async def get(self, caller: Caller, name_text: str, version: int) -> record_pb2.Record:
        name = parse_record_name(name_text)
        require_read(caller, name)
        async with self._store.read(name.tenant_id) as tx:
            record = current = await tx.get(name.info.collection, name.id)
            if version:
                record = await tx.get_version(name.info.collection, name.id, version)
        if record is None:
            what = f"{name} (version {version})" if version else str(name)
            raise NotFound(name.info.name, what)
        require_access(caller, current or record, str(name))  # whose it is now decides
        return record

    async def list_records(
        self, caller: Caller, filters: ListFilter, page_size: int, page_token: str
    ) -> tuple[list[record_pb2.Record], str]:
        require_own_parent(caller, filters.tenant_id, "read:*")
        wanted = [BY_ENUM[t] for t in filters.resource_types]
        types = readable_types(caller, wanted)
        if not types:
            return [], ""
        order_field, descending = parse_order_by(filters.order_by)
        query = RecordQuery(
            collections=[t.collection for t in types],
            patient_id=self._patient_id(filters) if filters.patient else None,
            codes=[parse_code_token(c) for c in filters.codes],
            start_time=filters.start_time,
            end_time=filters.end_time,
            labels=dict(filters.labels),
            show_deleted=filters.show_deleted,
            order_field=order_field,
            descending=descending,
            limit=page_size + 1,
            owned_only=owned_only(caller),
        )
        if page_token:
            query = replace(query, after=_decode_keyset(page_token, filters.digest(), order_field))
        async with self._store.read(filters.tenant_id) as tx:
            records = await tx.query(query)
        page = records[:page_size]
        token = ""
        if len(records) > page_size and page:
            token = _encode_keyset(page[-1], order_field, filters.digest())
        return page, token

    async def history(
        self, caller: Caller, name_text: str, page_size: int, page_token: str
    ) -> tuple[list[record_pb2.Record], str]:
        name = parse_record_name(name_text)
        require_read(caller, name)
        before = None
        if page_token:
            before = decode_page_number("history", page_token)
        async with self._store.read(name.tenant_id) as tx:
            current = await tx.get(name.info.collection, name.id)
            if current is None:
                raise NotFound(name.info.name, str(name))
            require_access(caller, current, str(name))  # whose it is now decides its past
            versions = await tx.history(
                name.info.collection, name.id, before_version=before, limit=page_size + 1
            )
        page = versions[:page_size]
        more = len(versions) > page_size and page
        return page, encode_page_token("history", str(page[-1].version)) if more else ""

    @staticmethod
    def _patient_id(filters: ListFilter) -> str:
        tenant, patient = parse_patient_name(filters.patient, "patient")
        if tenant != filters.tenant_id:
            raise Invalid(FieldViolation("patient", "must be a patient of the tenant in `parent`"))
        return patient


def _order_value(record: record_pb2.Record, order_field: str) -> Any:
    if order_field == "name":
        return None
    return getattr(record, order_field).ToDatetime(tzinfo=UTC).isoformat()


def _encode_keyset(record: record_pb2.Record, order_field: str, digest: str) -> str:
    name = parse_record_name(record.name)
    payload = {"f": digest, "k": [_order_value(record, order_field), name.info.collection, name.id]}
    return encode_page_token("records", json.dumps(payload, separators=(",", ":")))


def _decode_keyset(token: str, digest: str, order_field: str) -> tuple[Any, str, str]:
    try:
        payload = json.loads(decode_page_token("records", token))
        value, collection, record_id = payload["k"]
        if payload["f"] != digest:
            raise Invalid(
                FieldViolation(
                    "page_token",
                    "the filters changed since this token was made; start over without it",
                )
            )
        if order_field != "name":
            value = datetime.fromisoformat(value)
    except (ValueError, KeyError, TypeError) as exc:
        raise Invalid(
            FieldViolation("page_token", "is not a page token returned by this list")
        ) from exc
    return value, str(collection), str(record_id)
