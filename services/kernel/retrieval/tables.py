"""How far the indexer has read each tenant's change log."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from services.common.db.base import Base, UtcDateTime


class IndexCursorRow(Base):
    """The last change-log sequence whose effect is in the index, per tenant and index.

    Written only after the index accepted the documents, so a crash replays
    (idempotent upserts) rather than skips.
    """

    __tablename__ = "index_cursors"

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    index_name: Mapped[str] = mapped_column(String(100), primary_key=True)
    last_sequence: Mapped[int] = mapped_column(BigInteger)
    update_time: Mapped[datetime] = mapped_column(UtcDateTime)
