"""Knowledge bases: create, read, list, update (field mask + etag), delete.

A knowledge base fixes the embedding model of its chunks (immutable: the
vectors of one base must be comparable) and the chunking of documents
ingested afterwards. Counts are computed when read, so they never drift.
Deleting one removes its rows in one transaction first (retrieval stops
seeing it at that commit), then its vectors.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from services.common.caller import Caller
from services.common.db.base import utcnow
from services.common.errors import (
    AlreadyExists,
    Conflict,
    FieldViolation,
    Invalid,
    NotFound,
)
from services.common.etags import check_etag, etag_for
from services.common.pagination import decode_page_token, take_page
from services.kernel.embedding.registry import ModelRegistry
from services.kernel.retrieval.expressions import equals
from services.kernel.retrieval.lexical import LexicalIndex
from services.kernel.retrieval.vector_index import KNOWLEDGE, VectorIndex
from services.rag.access import READ, WRITE, require_parent, require_read, require_write
from services.rag.chunking import ChunkingSettings
from services.rag.names import KnowledgeBaseName, chunk_name
from services.rag.store import KnowledgeStore
from services.rag.tables import KnowledgeBaseRow

log = logging.getLogger(__name__)
KIND = "KnowledgeBase"
UPDATABLE = ("display_name", "description", "chunking", "labels")


@dataclass
class KnowledgeBaseView:
    row: KnowledgeBaseRow
    document_count: int = 0
    chunk_count: int = 0

    @property
    def name(self) -> str:
        return str(KnowledgeBaseName(self.row.tenant_id, self.row.id))

    @property
    def etag(self) -> str:
        return etag_for(self.name, self.row.version)


@dataclass
class KnowledgeBaseSpec:
    display_name: str = ""
    description: str = ""
    embedding_model: str = ""
    chunking: dict[str, Any] = field(default_factory=dict)  # the ChunkingConfig fields set
    labels: dict[str, str] = field(default_factory=dict)


def chunking_settings(stored: dict[str, Any]) -> ChunkingSettings:
    defaults = ChunkingSettings()
    return ChunkingSettings(
        max_tokens=int(stored.get("max_tokens") or defaults.max_tokens),
        overlap_tokens=int(stored.get("overlap_tokens") or defaults.overlap_tokens),
        respect_headings=bool(stored.get("respect_headings", defaults.respect_headings)),
        include_context_header=bool(
            stored.get("include_context_header", defaults.include_context_header)
        ),
    )


def check_chunking(stored: dict[str, Any], prefix: str) -> None:
    """The effective overlap must be below the effective size (defaults included)."""
    settings = chunking_settings(stored)
    if settings.overlap_tokens >= settings.max_tokens:
        raise Invalid(
            FieldViolation(
                f"{prefix}.overlap_tokens",
                f"must be less than max_tokens ({settings.overlap_tokens} >= "
                f"{settings.max_tokens}, defaults included)",
            )
        )


class KnowledgeBases:
    def __init__(
        self,
        store: KnowledgeStore,
        index: VectorIndex,
        lexical: LexicalIndex,
        models: ModelRegistry,
    ) -> None:
        self._store = store
        self._index = index
        self._lexical = lexical
        self._models = models

    async def create(
        self, caller: Caller, name: KnowledgeBaseName, spec: KnowledgeBaseSpec
    ) -> KnowledgeBaseView:
        require_parent(caller, name.tenant_id, WRITE)
        check_chunking(spec.chunking, "knowledge_base.chunking")
        model = self._model(spec.embedding_model)
        now = utcnow()
        row = KnowledgeBaseRow(
            tenant_id=name.tenant_id,
            id=name.kb_id,
            display_name=spec.display_name,
            description=spec.description,
            embedding_model=model,
            chunking=spec.chunking,
            labels=spec.labels,
            create_time=now,
            update_time=now,
            version=1,
        )
        async with self._store.transaction(name.tenant_id) as tx:
            if await tx.get_kb(name.kb_id) is not None:
                raise AlreadyExists(KIND, str(name))
            tx.add_kb(row)
        # Vectors a failed delete of an earlier base with this id may have left behind.
        await self._index.delete_where(KNOWLEDGE, name.tenant_id, equals("grp", name.kb_id))
        return KnowledgeBaseView(row)

    async def get(self, caller: Caller, name: KnowledgeBaseName) -> KnowledgeBaseView:
        require_read(caller, name.tenant_id, KIND, str(name))
        async with self._store.transaction(name.tenant_id) as tx:
            row = await tx.get_kb(name.kb_id)
            if row is None:
                raise NotFound(KIND, str(name))
            counts = await tx.counts([row.id])
        return KnowledgeBaseView(row, *counts[row.id])

    async def list_page(
        self, caller: Caller, tenant_id: str, page_size: int, page_token: str
    ) -> tuple[list[KnowledgeBaseView], str]:
        require_parent(caller, tenant_id, READ)
        after = decode_page_token("knowledgeBases", page_token) if page_token else ""
        async with self._store.transaction(tenant_id) as tx:
            rows = await tx.list_kbs(after, page_size + 1)
            page, token = take_page(rows, page_size, "knowledgeBases", lambda r: r.id)
            counts = await tx.counts([r.id for r in page])
        return [KnowledgeBaseView(r, *counts[r.id]) for r in page], token

    async def update(
        self,
        caller: Caller,
        name: KnowledgeBaseName,
        etag: str,
        spec: KnowledgeBaseSpec,
        paths: list[str],
    ) -> KnowledgeBaseView:
        require_write(caller, name.tenant_id, str(name))
        if "chunking" in paths:
            check_chunking(spec.chunking, "knowledge_base.chunking")
        async with self._store.transaction(name.tenant_id) as tx:
            row = await tx.get_kb(name.kb_id, for_update=True)
            if row is None:
                raise NotFound(KIND, str(name))
            check_etag(str(name), row.version, etag)
            for path in paths:
                setattr(row, path, getattr(spec, path))
            row.update_time = utcnow()
            row.version += 1
            counts = await tx.counts([row.id])
        return KnowledgeBaseView(row, *counts[row.id])

    async def delete(
        self, caller: Caller, name: KnowledgeBaseName, etag: str, force: bool
    ) -> KnowledgeBaseView:
        require_write(caller, name.tenant_id, str(name))
        async with self._store.transaction(name.tenant_id) as tx:
            row = await tx.get_kb(name.kb_id, for_update=True)
            if row is None:
                raise NotFound(KIND, str(name))
            check_etag(str(name), row.version, etag)
            counts = await tx.counts([row.id])
            if counts[row.id][0] and not force:
                raise Conflict(
                    f"{name} still has {counts[row.id][0]} documents; set force to delete them too",
                    subject=str(name),
                )
            keys = await tx.chunk_keys(row.id)
            await tx.delete_kb(row.id)
        try:
            await self._index.delete_where(KNOWLEDGE, name.tenant_id, equals("grp", row.id))
            pks = [chunk_name(name.tenant_id, key) for key in keys]
            await self._lexical.delete(KNOWLEDGE, name.tenant_id, pks)
        except Exception:  # rows are gone, so retrieval no longer returns these vectors
            log.exception("vectors of deleted %s not removed; they are purged on re-create", name)
        return KnowledgeBaseView(row, *counts[row.id])

    async def readable(
        self, caller: Caller, tenant_id: str, names: list[KnowledgeBaseName]
    ) -> list[KnowledgeBaseRow]:
        """The bases to search: those named (each must exist) or all of the tenant's."""
        require_parent(caller, tenant_id, READ)
        async with self._store.transaction(tenant_id) as tx:
            if not names:
                return await tx.list_kbs()
            rows = []
            for name in dict.fromkeys(names):
                row = await tx.get_kb(name.kb_id) if name.tenant_id == tenant_id else None
                if row is None:
                    raise NotFound(KIND, str(name))
                rows.append(row)
        return rows

    def _model(self, requested: str) -> str:
        """The model name to store: the default when empty; must embed at the index's size."""
        try:
            entry = self._models.get(requested)
        except NotFound as exc:
            raise Invalid(
                FieldViolation("knowledge_base.embedding_model", f"{requested!r} is not registered")
            ) from exc
        if entry.config.kind != "embedding":
            raise Invalid(
                FieldViolation(
                    "knowledge_base.embedding_model", f"{requested} is not an embedding model"
                )
            )
        if entry.config.dimension != self._index.dimension:
            raise Invalid(
                FieldViolation(
                    "knowledge_base.embedding_model",
                    f"{entry.config.name} makes {entry.config.dimension}-dimensional vectors; "
                    f"the knowledge index of this deployment holds {self._index.dimension}",
                )
            )
        return entry.config.name
