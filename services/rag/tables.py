"""Tables of the RAG service: knowledge bases, their documents, tags and chunks.

All rows are tenant-owned (row-level security on PostgreSQL). There are no
foreign keys: the store deletes children explicitly in the same transaction,
which works the same on SQLite and PostgreSQL.

* `knowledge_bases`          one row per knowledge base; `version` drives its etag
* `knowledge_documents`      the current revision of each document (metadata + hash)
* `knowledge_document_tags`  one row per tag of a document (the `tags` filter of lists)
* `knowledge_chunks`         the chunks of each document's current revision

The chunk rows are the source of truth for what retrieval may return: a
document's old chunks are deleted and its new ones inserted in one
transaction, and retrieval keeps only index hits whose chunk row exists, so
callers see the old revision or the new one, never a mix.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from services.common.db.base import Base, JsonDocument, UtcDateTime


class KnowledgeBaseRow(Base):
    __tablename__ = "knowledge_bases"

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text)
    embedding_model: Mapped[str] = mapped_column(String(200))
    # ChunkingConfig as a dict of the fields that were set ({} = all defaults).
    chunking: Mapped[dict[str, Any]] = mapped_column(JsonDocument)
    labels: Mapped[dict[str, str]] = mapped_column(JsonDocument)
    create_time: Mapped[datetime] = mapped_column(UtcDateTime)
    update_time: Mapped[datetime] = mapped_column(UtcDateTime)
    version: Mapped[int] = mapped_column(BigInteger)


class DocumentRow(Base):
    __tablename__ = "knowledge_documents"

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    knowledge_base_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    title: Mapped[str] = mapped_column(String(500))
    source_url: Mapped[str] = mapped_column(String(2000))
    publication_date: Mapped[str] = mapped_column(String(10))
    evidence_level: Mapped[int] = mapped_column(Integer)  # hacs.records.v1.EvidenceLevel
    tags: Mapped[list[str]] = mapped_column(JsonDocument)
    mime_type: Mapped[str] = mapped_column(String(100))
    labels: Mapped[dict[str, str]] = mapped_column(JsonDocument)
    content_hash: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    page_count: Mapped[int] = mapped_column(Integer)
    text_length: Mapped[int] = mapped_column(BigInteger)
    chunk_count: Mapped[int] = mapped_column(Integer)
    # +1 on every replacement; chunk ids carry it, the etag is derived from it.
    revision: Mapped[int] = mapped_column(BigInteger)
    create_time: Mapped[datetime] = mapped_column(UtcDateTime)
    update_time: Mapped[datetime] = mapped_column(UtcDateTime)


class DocumentTagRow(Base):
    __tablename__ = "knowledge_document_tags"
    __table_args__ = (
        Index("ix_knowledge_document_tags_tag", "tenant_id", "knowledge_base_id", "tag"),
    )

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    knowledge_base_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    document_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    tag: Mapped[str] = mapped_column(String(64), primary_key=True)


class ChunkRow(Base):
    __tablename__ = "knowledge_chunks"
    __table_args__ = (
        # ListChunks: a document's chunks in order.
        Index(
            "ix_knowledge_chunks_order",
            "tenant_id",
            "knowledge_base_id",
            "document_id",
            "chunk_index",
        ),
    )

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    knowledge_base_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    document_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # "r{revision}-{index}"
    document_revision: Mapped[int] = mapped_column(BigInteger)
    chunk_index: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    section_path: Mapped[list[str]] = mapped_column(JsonDocument)
    start_offset: Mapped[int] = mapped_column(BigInteger)
    end_offset: Mapped[int] = mapped_column(BigInteger)
    token_count: Mapped[int] = mapped_column(Integer)
    page_number: Mapped[int] = mapped_column(Integer)
