"""Tables of the record service.

Records are keyed by (tenant_id, collection, id): the collection is the
resource-name segment of the type ("patients"), so ordering by it orders by name.

* `records`        the current version of each record, with the typed columns List filters use
* `record_versions` every version ever written (history, GetRecord(version=n))
* `record_codes`   one row per primary code of the current version (the `codes` filter)
* `record_labels`  one row per label of the current version (the `labels` filter)
* `change_log`     the per-tenant outbox: one row per write, sequence strictly increasing
* `tenant_counters` per-tenant counters: the last sequence, live patients
* `idempotent_requests` results of calls carrying a request_id, replayed on retry

A record's body is the whole Record as proto JSON (JSONB on PostgreSQL); the
typed columns beside it are derived from it on every write, for the filters.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from services.common.db.base import Base, JsonDocument, UtcDateTime


class RecordRow(Base):
    __tablename__ = "records"
    __table_args__ = (
        # Default order of List (update_time desc), per type and across types.
        Index("ix_records_type_updated", "tenant_id", "collection", "update_time", "id"),
        Index("ix_records_updated", "tenant_id", "update_time", "collection", "id"),
        # A patient's records by type and clinical time (compartment reads, charts).
        Index("ix_records_patient", "tenant_id", "patient_id", "collection", "clinical_time"),
        # Date-range filters by type.
        Index("ix_records_type_clinical", "tenant_id", "collection", "clinical_time", "id"),
        # An owner's records of a type with owners (an agent's memories).
        Index("ix_records_owner", "tenant_id", "collection", "owner"),
    )

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    collection: Mapped[str] = mapped_column(String(40), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)
    patient_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    clinical_time: Mapped[datetime] = mapped_column(UtcDateTime)
    create_time: Mapped[datetime] = mapped_column(UtcDateTime)
    update_time: Mapped[datetime] = mapped_column(UtcDateTime)
    delete_time: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    created_by: Mapped[str] = mapped_column(String(200))
    updated_by: Mapped[str] = mapped_column(String(200))
    body: Mapped[dict[str, Any]] = mapped_column(JsonDocument)
    # The actor the record belongs to, for types with owners (access.owner_of); else None.
    owner: Mapped[str | None] = mapped_column(String(200), nullable=True)


class RecordVersionRow(Base):
    __tablename__ = "record_versions"

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    collection: Mapped[str] = mapped_column(String(40), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    update_time: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_by: Mapped[str] = mapped_column(String(200))
    delete_time: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    # The complete Record of this version (envelope included), as in `records.body`.
    body: Mapped[dict[str, Any]] = mapped_column(JsonDocument)


class RecordCodeRow(Base):
    __tablename__ = "record_codes"
    __table_args__ = (Index("ix_record_codes_code", "tenant_id", "code", "system"),)

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    collection: Mapped[str] = mapped_column(String(40), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    system: Mapped[str] = mapped_column(String(200), primary_key=True)
    code: Mapped[str] = mapped_column(String(100), primary_key=True)


class RecordLabelRow(Base):
    __tablename__ = "record_labels"
    __table_args__ = (Index("ix_record_labels_key_value", "tenant_id", "key", "value"),)

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    collection: Mapped[str] = mapped_column(String(40), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(63), primary_key=True)
    value: Mapped[str] = mapped_column(String(63))


class ChangeRow(Base):
    __tablename__ = "change_log"
    __table_args__ = (Index("ix_change_log_record", "tenant_id", "collection", "record_id"),)

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    sequence: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    collection: Mapped[str] = mapped_column(String(40))
    record_id: Mapped[str] = mapped_column(String(64))
    operation: Mapped[str] = mapped_column(String(10))
    version: Mapped[int] = mapped_column(BigInteger)
    commit_time: Mapped[datetime] = mapped_column(UtcDateTime)
    actor: Mapped[str] = mapped_column(String(200))
    patient_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    previous_patient_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    labels: Mapped[dict[str, Any]] = mapped_column(JsonDocument)
    changed_paths: Mapped[list[str]] = mapped_column(JsonDocument)
    # The record's owner when the change was made (types with owners only).
    owner: Mapped[str | None] = mapped_column(String(200), nullable=True)


class TenantCounterRow(Base):
    """Per-tenant counters, updated in the writing transaction (so they are exact)."""

    __tablename__ = "tenant_counters"

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    # The last change-log sequence handed out.
    last_sequence: Mapped[int] = mapped_column(BigInteger, default=0)
    # Live (not deleted) Patient records, checked against the plan's max_patients.
    live_patients: Mapped[int] = mapped_column(BigInteger, default=0)


class IdempotentRequestRow(Base):
    __tablename__ = "idempotent_requests"
    __table_args__ = (Index("ix_idempotent_requests_time", "tenant_id", "create_time"),)

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    method: Mapped[str] = mapped_column(String(100))
    # Digest of the request, so a reused id with a different request is refused.
    request_hash: Mapped[str] = mapped_column(String(64))
    response: Mapped[bytes] = mapped_column(LargeBinary)
    create_time: Mapped[datetime] = mapped_column(UtcDateTime)
