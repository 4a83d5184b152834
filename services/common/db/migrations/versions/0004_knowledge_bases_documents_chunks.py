"""RAG: knowledge bases, their documents, document tags and chunks.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from services.common.db.base import JsonDocument, UtcDateTime
from services.common.db.rls import disable_tenant_isolation, enable_tenant_isolation

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None
# New tables and indexes only: code written before it keeps working (compatibility.py).
kind = "expand"

TENANT_OWNED = (
    "knowledge_bases",
    "knowledge_documents",
    "knowledge_document_tags",
    "knowledge_chunks",
)


def upgrade() -> None:
    op.create_table(
        "knowledge_bases",
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("id", sa.String(63), nullable=False),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("embedding_model", sa.String(200), nullable=False),
        sa.Column("chunking", JsonDocument, nullable=False),
        sa.Column("labels", JsonDocument, nullable=False),
        sa.Column("create_time", UtcDateTime(), nullable=False),
        sa.Column("update_time", UtcDateTime(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f("pk_knowledge_bases")),
    )
    op.create_table(
        "knowledge_documents",
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("knowledge_base_id", sa.String(63), nullable=False),
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("title", sa.String(500), nullable=False),
        sa.Column("source_url", sa.String(2000), nullable=False),
        sa.Column("publication_date", sa.String(10), nullable=False),
        sa.Column("evidence_level", sa.Integer(), nullable=False),
        sa.Column("tags", JsonDocument, nullable=False),
        sa.Column("mime_type", sa.String(100), nullable=False),
        sa.Column("labels", JsonDocument, nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("page_count", sa.Integer(), nullable=False),
        sa.Column("text_length", sa.BigInteger(), nullable=False),
        sa.Column("chunk_count", sa.Integer(), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("create_time", UtcDateTime(), nullable=False),
        sa.Column("update_time", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant_id", "knowledge_base_id", "id", name=op.f("pk_knowledge_documents")
        ),
    )
    op.create_table(
        "knowledge_document_tags",
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("knowledge_base_id", sa.String(63), nullable=False),
        sa.Column("document_id", sa.String(128), nullable=False),
        sa.Column("tag", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant_id",
            "knowledge_base_id",
            "document_id",
            "tag",
            name=op.f("pk_knowledge_document_tags"),
        ),
    )
    op.create_index(
        "ix_knowledge_document_tags_tag",
        "knowledge_document_tags",
        ["tenant_id", "knowledge_base_id", "tag"],
    )
    op.create_table(
        "knowledge_chunks",
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("knowledge_base_id", sa.String(63), nullable=False),
        sa.Column("document_id", sa.String(128), nullable=False),
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("document_revision", sa.BigInteger(), nullable=False),
        sa.Column("chunk_index", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("section_path", JsonDocument, nullable=False),
        sa.Column("start_offset", sa.BigInteger(), nullable=False),
        sa.Column("end_offset", sa.BigInteger(), nullable=False),
        sa.Column("token_count", sa.Integer(), nullable=False),
        sa.Column("page_number", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant_id", "knowledge_base_id", "document_id", "id", name=op.f("pk_knowledge_chunks")
        ),
    )
    op.create_index(
        "ix_knowledge_chunks_order",
        "knowledge_chunks",
        ["tenant_id", "knowledge_base_id", "document_id", "chunk_index"],
    )
    for table in TENANT_OWNED:
        enable_tenant_isolation(table)


def downgrade() -> None:
    for table in TENANT_OWNED:
        disable_tenant_isolation(table)
    op.drop_index("ix_knowledge_chunks_order", table_name="knowledge_chunks")
    op.drop_table("knowledge_chunks")
    op.drop_index("ix_knowledge_document_tags_tag", table_name="knowledge_document_tags")
    op.drop_table("knowledge_document_tags")
    op.drop_table("knowledge_documents")
    op.drop_table("knowledge_bases")
