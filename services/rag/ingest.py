"""The IngestDocuments stream: config, then per document header -> data* -> end.

Stream-level problems (no config first, a second config, data or an end
without a header, an unknown knowledge base, a missing permission) end the
stream with a status. Document-level problems (bad metadata, unsupported
type, corrupt or empty content, a SHA-256 mismatch, too large) reject that
document with its reason, and the stream goes on with the next one.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import date

from services.common.caller import Caller
from services.common.errors import FieldViolation, Invalid, NotFound
from services.common.validation import Violations
from services.rag.access import require_write
from services.rag.indexing import DocumentIndexer, DocumentMeta, IngestOutcome, IngestProgress
from services.rag.names import (
    DOCUMENT_ID,
    DOCUMENT_ID_RULE,
    DocumentName,
    derived_document_id,
    parse_knowledge_base,
)
from services.rag.parsing import SUPPORTED_MIME_TYPES, split_mime_type
from services.rag.store import KnowledgeStore

TAG = re.compile(r"^[a-z0-9][a-z0-9 _.:/+-]{0,63}\Z")
FHIR_DATE = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?\Z")
PROGRESS_EVERY_BYTES = 1 << 20


@dataclass(frozen=True)
class IngestConfig:
    knowledge_base: str
    force: bool = False
    validate_only: bool = False


@dataclass(frozen=True)
class Header:
    meta: DocumentMeta  # document_id may be empty (derived from the source)
    total_bytes: int = 0
    content: bytes = b""


@dataclass(frozen=True)
class Data:
    content: bytes


@dataclass(frozen=True)
class End:
    sha256: str = ""


Step = IngestConfig | Header | Data | End


@dataclass
class Summary:
    received: int = 0
    ingested: int = 0
    replaced: int = 0
    skipped: int = 0
    rejected: int = 0
    chunks_added: int = 0
    chunks_removed: int = 0

    def count(self, outcome: IngestOutcome) -> None:
        setattr(self, outcome.status, getattr(self, outcome.status) + 1)
        if outcome.status in ("ingested", "replaced"):
            self.chunks_added += outcome.chunk_count
        if outcome.status == "replaced":
            self.chunks_removed += outcome.previous_chunk_count


@dataclass
class _Open:
    meta: DocumentMeta
    problem: str
    parts: list[bytes] = field(default_factory=list)
    size: int = 0


def check_meta(meta: DocumentMeta) -> tuple[DocumentMeta, str]:
    """The metadata with defaults filled in, and what is wrong with it ('' when fine)."""
    problems: list[str] = []
    doc_id = meta.document_id or derived_document_id(meta.source_url, meta.title)
    if not DOCUMENT_ID.match(doc_id):
        problems.append(f"document_id {doc_id!r} is not valid ({DOCUMENT_ID_RULE})")
    if not meta.title.strip():
        problems.append("title is required")
    elif len(meta.title) > 500:
        problems.append("title is longer than 500 characters")
    base, _ = split_mime_type(meta.mime_type)
    if not base:
        problems.append("mime_type is required")
    elif base not in SUPPORTED_MIME_TYPES:
        problems.append(
            f"unsupported mime type {base}; use one of {', '.join(SUPPORTED_MIME_TYPES)}"
        )
    if len(meta.source_url) > 2000:
        problems.append("source_url is longer than 2,000 characters")
    if meta.publication_date and not _is_fhir_date(meta.publication_date):
        problems.append(f"publication_date {meta.publication_date!r} is not 'YYYY[-MM[-DD]]'")
    if meta.evidence_level not in range(5):
        problems.append(f"evidence_level {meta.evidence_level} is not an EvidenceLevel")
    tags = tuple(dict.fromkeys(t.strip().lower() for t in meta.tags))
    problems += [f"tag {t!r} is not 1-64 lower-case characters" for t in tags if not TAG.match(t)]
    if len(tags) > 64:
        problems.append("at most 64 tags")
    labels = Violations()
    labels.labels("labels", meta.labels)
    problems += [f"{v.field}: {v.description}" for v in labels.items]
    return replace(meta, document_id=doc_id, tags=tags), "; ".join(problems)


def _is_fhir_date(text: str) -> bool:
    if not FHIR_DATE.match(text):
        return False
    parts = [int(p) for p in text.split("-")]
    try:
        date(*[*parts, 1, 1][:3])
    except ValueError:
        return False
    return True


class Ingest:
    def __init__(
        self, store: KnowledgeStore, indexer: DocumentIndexer, max_document_bytes: int
    ) -> None:
        self._store = store
        self._indexer = indexer
        self._max_bytes = max_document_bytes

    async def run(
        self, caller: Caller, steps: AsyncIterator[Step]
    ) -> AsyncIterator[IngestProgress | IngestOutcome | Summary]:
        config = await anext(steps, None)
        if not isinstance(config, IngestConfig):
            raise Invalid(FieldViolation("config", "the first message must be a config"))
        name = parse_knowledge_base(config.knowledge_base, "config.knowledge_base")
        require_write(caller, name.tenant_id, str(name))
        async with self._store.transaction(name.tenant_id) as tx:
            kb = await tx.get_kb(name.kb_id)
        if kb is None:
            raise NotFound("KnowledgeBase", str(name))
        summary = Summary()
        current: _Open | None = None
        async for step in steps:
            if isinstance(step, IngestConfig):
                raise Invalid(FieldViolation("config", "only the first message may be a config"))
            if isinstance(step, Header):
                if current is not None:
                    summary.received += 1
                    outcome = self._reject(kb.tenant_id, kb.id, current, "its end never came")
                    summary.count(outcome)
                    yield outcome
                meta, problem = check_meta(step.meta)
                current = _Open(meta, problem)
                yield IngestProgress(meta.document_id, "receiving", 0)
                self._receive(current, step.content)
                continue
            if current is None:
                what = "data" if isinstance(step, Data) else "end"
                raise Invalid(FieldViolation(what, f"{what} message without a header before it"))
            if isinstance(step, Data):
                before = current.size
                self._receive(current, step.content)
                if current.size // PROGRESS_EVERY_BYTES > before // PROGRESS_EVERY_BYTES:
                    yield IngestProgress(current.meta.document_id, "receiving", current.size)
                continue
            summary.received += 1
            content = b"".join(current.parts)
            problem = current.problem or _checksum_problem(content, step.sha256)
            if problem:
                outcome = self._reject(kb.tenant_id, kb.id, current, problem)
                summary.count(outcome)
                yield outcome
            else:
                async for event in self._indexer.ingest(
                    kb,
                    current.meta,
                    content,
                    force=config.force,
                    validate_only=config.validate_only,
                ):
                    if isinstance(event, IngestOutcome):
                        summary.count(event)
                    yield event
            current = None
        if current is not None:
            summary.received += 1
            outcome = self._reject(kb.tenant_id, kb.id, current, "the stream ended before its end")
            summary.count(outcome)
            yield outcome
        if summary.ingested or summary.replaced:
            await self._indexer.seal()
        yield summary

    def _receive(self, current: _Open, content: bytes) -> None:
        current.size += len(content)
        if current.problem:
            return
        if current.size > self._max_bytes:
            current.problem = f"larger than the limit of {self._max_bytes:,} bytes"
            current.parts.clear()
        elif content:
            current.parts.append(content)

    @staticmethod
    def _reject(tenant_id: str, kb_id: str, current: _Open, reason: str) -> IngestOutcome:
        name = str(DocumentName(tenant_id, kb_id, current.meta.document_id))
        return IngestOutcome(current.meta.document_id, name, "rejected", reason)


def _checksum_problem(content: bytes, sha256: str) -> str:
    if sha256 and hashlib.sha256(content).hexdigest() != sha256.lower():
        return "SHA-256 of the received bytes does not match the one in the end message"
    return ""
