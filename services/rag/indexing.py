"""One document, end to end: parse -> chunk -> embed -> index, replacing atomically.

The order makes replacement atomic for retrieval:

1. the new revision's vectors and lexical entries are written under new
   primary keys (chunk ids carry the revision), so the old ones stay untouched;
2. one database transaction swaps the document row, its tags and its chunk
   rows to the new revision — retrieval keeps only hits whose chunk row
   exists, so it sees the old chunks before this commit and the new ones
   after it, never a mix;
3. the old revision's vectors (and lexical entries) are deleted; a failure
   here leaves leftovers that retrieval never returns (they have no chunk row).

A failure before the commit leaves the document as it was.

A first ingest (no stored revision) deletes nothing: a delete by expression
scans the whole collection on Milvus Lite (about 2 s per call at 20,000
chunks on 2 cores, growing with the collection), which made a bulk load
quadratic. The sweep by document after a replacement (every revision but the
new one) still removes whatever an earlier failed cleanup left behind.

The index is derived: `rebuild` writes a tenant's vectors and lexical entries
again from the chunk rows (after a database restore into an empty Milvus, or a
lost index), with the text and context header each chunk was embedded with.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from services.common.db.base import utcnow
from services.common.errors import HacsError
from services.kernel.embedding.embedder import Embedder
from services.kernel.retrieval.expressions import extra_equals
from services.kernel.retrieval.lexical import LexicalIndex
from services.kernel.retrieval.vector_index import KNOWLEDGE, IndexDoc, VectorIndex
from services.rag.chunking import TextChunk, chunk_document, context_header
from services.rag.knowledge_bases import chunking_settings
from services.rag.names import DocumentName, chunk_id
from services.rag.parsing import UnreadableDocument, parse
from services.rag.store import KnowledgeStore
from services.rag.tables import ChunkRow, DocumentRow, KnowledgeBaseRow
from services.rag.tokens import TokenCounters

log = logging.getLogger(__name__)
EMBED_BATCH = 64
DOCUMENTS_PER_ROUND = 100  # documents read, embedded and written together by a rebuild
EVIDENCE_NAMES = {1: "high", 2: "moderate", 3: "low", 4: "very_low"}


@dataclass(frozen=True)
class DocumentMeta:
    """What the caller says about a document (DocumentHeader.document)."""

    document_id: str
    title: str
    mime_type: str
    source_url: str = ""
    publication_date: str = ""
    evidence_level: int = 0
    tags: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class IngestProgress:
    document_id: str
    stage: str  # receiving | parsing | chunking | embedding | indexing
    bytes_received: int = 0
    chunks_done: int = 0
    chunks_total: int = 0


@dataclass(frozen=True)
class IngestOutcome:
    document_id: str
    name: str
    status: str  # ingested | skipped | replaced | rejected
    reason: str = ""
    chunk_count: int = 0
    previous_chunk_count: int = 0
    document: DocumentRow | None = None


class Rejected(Exception):
    """This document cannot go in; the message is the reason the caller sees."""


def publication_epoch(date_text: str) -> int:
    """Seconds since 1970 at the start of a FHIR date 'YYYY[-MM[-DD]]'; 0 when absent."""
    if not date_text:
        return 0
    parts = [int(p) for p in date_text.split("-")]
    year, month, day = [*parts, 1, 1][:3]
    return int(datetime(year, month, day, tzinfo=UTC).timestamp())


def _unchanged(row: DocumentRow, meta: DocumentMeta, content_hash: str) -> bool:
    return (
        row.content_hash == content_hash
        and row.title == meta.title
        and row.mime_type == meta.mime_type
        and row.source_url == meta.source_url
        and row.publication_date == meta.publication_date
        and row.evidence_level == meta.evidence_level
        and list(row.tags) == list(meta.tags)
        and dict(row.labels) == dict(meta.labels)
    )


class DocumentIndexer:
    def __init__(
        self,
        store: KnowledgeStore,
        index: VectorIndex,
        lexical: LexicalIndex,
        embedder: Embedder,
        tokens: TokenCounters,
    ) -> None:
        self._store = store
        self._index = index
        self._lexical = lexical
        self._embedder = embedder
        self._tokens = tokens

    async def ingest(
        self,
        kb: KnowledgeBaseRow,
        meta: DocumentMeta,
        content: bytes,
        *,
        force: bool,
        validate_only: bool,
    ) -> AsyncIterator[IngestProgress | IngestOutcome]:
        """Progress events, then exactly one IngestOutcome (rejections included)."""
        name = str(DocumentName(kb.tenant_id, kb.id, meta.document_id))
        try:
            async for event in self._ingest(kb, name, meta, content, force, validate_only):
                yield event
        except (Rejected, UnreadableDocument) as exc:
            yield IngestOutcome(meta.document_id, name, "rejected", str(exc))

    async def _ingest(
        self,
        kb: KnowledgeBaseRow,
        name: str,
        meta: DocumentMeta,
        content: bytes,
        force: bool,
        validate_only: bool,
    ) -> AsyncIterator[IngestProgress | IngestOutcome]:
        doc_id = meta.document_id
        content_hash = hashlib.sha256(content).hexdigest()
        async with self._store.transaction(kb.tenant_id) as tx:
            previous = await tx.get_document(kb.id, doc_id)
        if previous is not None and not force and _unchanged(previous, meta, content_hash):
            yield IngestOutcome(
                doc_id,
                name,
                "skipped",
                "same content hash and metadata as the stored revision",
                previous.chunk_count,
                previous.chunk_count,
                previous,
            )
            return
        yield IngestProgress(doc_id, "parsing", len(content))
        parsed = await asyncio.to_thread(parse, content, meta.mime_type)
        yield IngestProgress(doc_id, "chunking", len(content))
        tokens = await self._tokens.get(kb.embedding_model)
        settings = chunking_settings(kb.chunking)
        chunks = await asyncio.to_thread(chunk_document, parsed, meta.title, settings, tokens)
        if not chunks:
            raise Rejected("document has no text to index")
        revision = (previous.revision + 1) if previous is not None else 1
        now = utcnow()
        row = DocumentRow(
            tenant_id=kb.tenant_id,
            knowledge_base_id=kb.id,
            id=doc_id,
            title=meta.title,
            source_url=meta.source_url,
            publication_date=meta.publication_date,
            evidence_level=meta.evidence_level,
            tags=list(meta.tags),
            mime_type=meta.mime_type,
            labels=dict(meta.labels),
            content_hash=content_hash,
            size_bytes=len(content),
            page_count=parsed.page_count,
            text_length=len(parsed.text),
            chunk_count=len(chunks),
            revision=revision,
            create_time=previous.create_time if previous is not None else now,
            update_time=now,
        )
        status = "replaced" if previous is not None else "ingested"
        old_count = previous.chunk_count if previous is not None else 0
        if validate_only:
            yield IngestOutcome(doc_id, name, status, "validate_only: nothing written", len(chunks),
                          old_count, row)  # fmt: skip
            return
        vectors = np.zeros((0, self._index.dimension), dtype=np.float32)
        for start in range(0, len(chunks), EMBED_BATCH):
            batch = [c.embed_text for c in chunks[start : start + EMBED_BATCH]]
            embedded = await self._embedder.embed(batch, query=False, model=kb.embedding_model)
            vectors = np.vstack([vectors, embedded])
            yield IngestProgress(doc_id, "embedding", len(content), len(vectors), len(chunks))
        yield IngestProgress(doc_id, "indexing", len(content), 0, len(chunks))
        docs = [self._index_doc(row, name, c, v) for c, v in zip(chunks, vectors, strict=True)]
        pks = [d.pk for d in docs]
        try:
            await self._index.upsert(KNOWLEDGE, docs)
            await self._lexical.upsert(KNOWLEDGE, docs)
            await self._commit(kb, row, previous, chunks)
        except (Rejected, HacsError):
            await self._index.delete(KNOWLEDGE, kb.tenant_id, pks)
            await self._lexical.delete(KNOWLEDGE, kb.tenant_id, pks)
            raise
        yield IngestProgress(doc_id, "indexing", len(content), len(chunks), len(chunks))
        if previous is not None:  # a first ingest has no old revision to remove (see above)
            try:
                stale = f"{extra_equals('document', name)} and version != {revision}"
                await self._index.delete_where(KNOWLEDGE, kb.tenant_id, stale)
                old = [
                    f"{name}/chunks/{chunk_id(previous.revision, i)}"
                    for i in range(previous.chunk_count)
                ]
                await self._lexical.delete(KNOWLEDGE, kb.tenant_id, old)
            except Exception:  # invisible to retrieval (no chunk rows): harmless leftovers
                log.exception("old vectors of %s not removed", name)
        yield IngestOutcome(doc_id, name, status, "", len(chunks), old_count, row)

    async def _commit(
        self,
        kb: KnowledgeBaseRow,
        row: DocumentRow,
        previous: DocumentRow | None,
        chunks: list[TextChunk],
    ) -> None:
        async with self._store.transaction(kb.tenant_id) as tx:
            if await tx.get_kb(kb.id) is None:
                raise Rejected("the knowledge base was deleted during the ingest")
            current = await tx.get_document(kb.id, row.id, for_update=True)
            expected = previous.revision if previous is not None else None
            if (current.revision if current is not None else None) != expected:
                raise Rejected("the document was changed by another ingest at the same time; retry")
            await tx.write_document(
                row,
                [
                    ChunkRow(
                        tenant_id=kb.tenant_id,
                        knowledge_base_id=kb.id,
                        document_id=row.id,
                        id=chunk_id(row.revision, c.index),
                        document_revision=row.revision,
                        chunk_index=c.index,
                        text=c.text,
                        section_path=list(c.section_path),
                        start_offset=c.start,
                        end_offset=c.end,
                        token_count=c.token_count,
                        page_number=c.page_number,
                    )
                    for c in chunks
                ],
            )

    async def rebuild(
        self, tenant_id: str, *, progress: Callable[[int, int], Awaitable[None]] | None = None
    ) -> tuple[int, int]:
        """Index the tenant's knowledge again from its chunk rows; returns (documents, chunks).

        Everything the index holds is in the database but the vectors: each chunk's text,
        section path and offsets, its document's title, tags and dates, its knowledge base's
        model and context-header setting. So the rows are re-embedded (with the knowledge
        base's model) and written under the same keys. The tenant's old entries go first.
        A knowledge base whose `include_context_header` was changed after a document was
        ingested gets that document's vectors with the current setting (the chunk rows do
        not record which one was used). A document ingested while this runs may lose the
        vectors it wrote before the first step: rebuild when no ingest is under way.
        `progress(documents, chunks)` after each round.
        """
        await self._index.delete_where(KNOWLEDGE, tenant_id, "")
        await self._lexical.delete_all(KNOWLEDGE, tenant_id)
        async with self._store.transaction(tenant_id) as tx:
            knowledge_bases = await tx.list_kbs()
        documents = chunks = 0
        for kb in knowledge_bases:
            header = chunking_settings(kb.chunking).include_context_header
            after = ""
            while True:
                async with self._store.transaction(tenant_id) as tx:
                    rows = await tx.list_documents(kb.id, (), after, DOCUMENTS_PER_ROUND)
                    stored = [
                        (row, await tx.list_chunks(kb.id, row.id, -1, row.chunk_count + 1))
                        for row in rows
                    ]
                if not rows:
                    break
                after = rows[-1].id
                pending = [
                    (row, _stored_chunk(chunk, row.title, header))
                    for row, row_chunks in stored
                    for chunk in row_chunks
                ]
                for start in range(0, len(pending), EMBED_BATCH):
                    batch = pending[start : start + EMBED_BATCH]
                    vectors = await self._embedder.embed(
                        [c.embed_text for _, c in batch], query=False, model=kb.embedding_model
                    )
                    docs = [
                        self._index_doc(row, str(DocumentName(tenant_id, kb.id, row.id)), c, v)
                        for (row, c), v in zip(batch, vectors, strict=True)
                    ]
                    await self._index.upsert(KNOWLEDGE, docs, wait=False)
                    await self._lexical.upsert(KNOWLEDGE, docs)
                documents += len(rows)
                chunks += len(pending)
                if progress is not None:
                    await progress(documents, chunks)
        await self._index.flush(KNOWLEDGE)
        await self._index.until_readable(KNOWLEDGE)
        return documents, chunks

    async def seal(self) -> None:
        """After a burst of writes: Milvus searches sealed segments with the index."""
        await self._index.flush(KNOWLEDGE)

    @staticmethod
    def _index_doc(row: DocumentRow, name: str, chunk: TextChunk, vector: np.ndarray) -> IndexDoc:
        pk = f"{name}/chunks/{chunk_id(row.revision, chunk.index)}"
        codes = [f"tag:{t}" for t in row.tags]
        if row.evidence_level in EVIDENCE_NAMES:
            codes.append(f"evidence:{EVIDENCE_NAMES[row.evidence_level]}")
        return IndexDoc(
            pk=pk,
            tenant_id=row.tenant_id,
            name=pk,
            kind="Chunk",
            text=chunk.embed_text,
            vector=vector,
            title=row.title,
            clinical_time=publication_epoch(row.publication_date),
            codes=codes,
            labels=dict(row.labels),
            version=row.revision,
            group=row.knowledge_base_id,
            extra={
                "document": name,
                "section": " > ".join(chunk.section_path),
                "title": row.title,
                "chunk_index": chunk.index,
                "start_offset": chunk.start,
                "end_offset": chunk.end,
                "page": chunk.page_number,
                "evidence_level": EVIDENCE_NAMES.get(row.evidence_level, ""),
                "publication_date": row.publication_date,
            },
        )


def _stored_chunk(row: ChunkRow, title: str, header: bool) -> TextChunk:
    """A chunk as it was made at ingest, from its row: the same text to embed and index."""
    path = tuple(row.section_path)
    return TextChunk(
        index=row.chunk_index,
        text=row.text,
        start=row.start_offset,
        end=row.end_offset,
        section_path=path,
        token_count=row.token_count,
        page_number=row.page_number,
        embed_text=(context_header(title, path) if header else "") + row.text,
    )
