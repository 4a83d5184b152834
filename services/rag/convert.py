"""Domain values <-> hacs.rag.v1 messages (the servicer's only translation layer)."""

from __future__ import annotations

from typing import Any

from google.protobuf.duration_pb2 import Duration
from hacs.rag.v1 import knowledge_pb2, rag_service_pb2

from services.rag.answer import AnswerResult
from services.rag.citations import SentenceCheck
from services.rag.documents import document_etag, document_name
from services.rag.indexing import DocumentMeta, IngestOutcome, IngestProgress
from services.rag.ingest import Summary
from services.rag.knowledge_bases import KnowledgeBaseSpec, KnowledgeBaseView
from services.rag.names import ChunkName, DocumentName
from services.rag.providers.fallback import Attempt
from services.rag.retrieval import RetrievalFilter, Retrieved
from services.rag.tables import ChunkRow, DocumentRow

STAGES = {
    "receiving": rag_service_pb2.INGEST_STAGE_RECEIVING,
    "parsing": rag_service_pb2.INGEST_STAGE_PARSING,
    "chunking": rag_service_pb2.INGEST_STAGE_CHUNKING,
    "embedding": rag_service_pb2.INGEST_STAGE_EMBEDDING,
    "indexing": rag_service_pb2.INGEST_STAGE_INDEXING,
}
STATUSES = {
    "ingested": rag_service_pb2.INGEST_STATUS_INGESTED,
    "skipped": rag_service_pb2.INGEST_STATUS_SKIPPED_UNCHANGED,
    "replaced": rag_service_pb2.INGEST_STATUS_REPLACED,
    "rejected": rag_service_pb2.INGEST_STATUS_REJECTED,
}
RERANK = {
    rag_service_pb2.RERANK_MODE_UNSPECIFIED: "auto",
    rag_service_pb2.RERANK_MODE_AUTO: "auto",
    rag_service_pb2.RERANK_MODE_DISABLED: "disabled",
    rag_service_pb2.RERANK_MODE_REQUIRED: "required",
}


# -- knowledge bases ---------------------------------------------------------------


def chunking_from_proto(config: knowledge_pb2.ChunkingConfig) -> dict[str, Any]:
    """Only the fields that were set, so unset ones keep following the defaults."""
    stored: dict[str, Any] = {}
    if config.max_tokens:
        stored["max_tokens"] = config.max_tokens
    if config.overlap_tokens:
        stored["overlap_tokens"] = config.overlap_tokens
    if config.HasField("respect_headings"):
        stored["respect_headings"] = config.respect_headings
    if config.HasField("include_context_header"):
        stored["include_context_header"] = config.include_context_header
    return stored


def spec_from_proto(kb: knowledge_pb2.KnowledgeBase) -> KnowledgeBaseSpec:
    return KnowledgeBaseSpec(
        display_name=kb.display_name,
        description=kb.description,
        embedding_model=kb.embedding_model,
        chunking=chunking_from_proto(kb.chunking),
        labels=dict(kb.labels),
    )


def knowledge_base_to_proto(view: KnowledgeBaseView) -> knowledge_pb2.KnowledgeBase:
    row = view.row
    message = knowledge_pb2.KnowledgeBase(
        name=view.name,
        display_name=row.display_name,
        description=row.description,
        embedding_model=row.embedding_model,
        labels=row.labels,
        document_count=view.document_count,
        chunk_count=view.chunk_count,
        etag=view.etag,
    )
    for field, value in row.chunking.items():
        setattr(message.chunking, field, value)
    message.create_time.FromDatetime(row.create_time)
    message.update_time.FromDatetime(row.update_time)
    return message


# -- documents and chunks -------------------------------------------------------------


def meta_from_proto(header: rag_service_pb2.DocumentHeader) -> DocumentMeta:
    d = header.document
    return DocumentMeta(
        document_id=header.document_id,
        title=d.title,
        mime_type=d.mime_type,
        source_url=d.source_url,
        publication_date=d.publication_date,
        evidence_level=int(d.evidence_level),
        tags=tuple(d.tags),
        labels=dict(d.labels),
    )


def document_to_proto(row: DocumentRow) -> knowledge_pb2.Document:
    message = knowledge_pb2.Document(
        name=document_name(row),
        title=row.title,
        source_url=row.source_url,
        publication_date=row.publication_date,
        evidence_level=row.evidence_level,  # type: ignore[arg-type]
        tags=row.tags,
        mime_type=row.mime_type,
        labels=row.labels,
        content_hash=row.content_hash,
        size_bytes=row.size_bytes,
        page_count=row.page_count,
        text_length=row.text_length,
        chunk_count=row.chunk_count,
        revision=row.revision,
        etag=document_etag(row),
    )
    message.create_time.FromDatetime(row.create_time)
    message.update_time.FromDatetime(row.update_time)
    return message


def chunk_to_proto(row: ChunkRow) -> knowledge_pb2.Chunk:
    document = DocumentName(row.tenant_id, row.knowledge_base_id, row.document_id)
    return knowledge_pb2.Chunk(
        name=str(ChunkName(document, row.id)),
        document=str(document),
        document_revision=row.document_revision,
        chunk_index=row.chunk_index,
        text=row.text,
        section_path=row.section_path,
        start_offset=row.start_offset,
        end_offset=row.end_offset,
        token_count=row.token_count,
        page_number=row.page_number,
    )


def ingest_event_to_proto(
    event: IngestProgress | IngestOutcome | Summary,
) -> rag_service_pb2.IngestDocumentsResponse:
    if isinstance(event, IngestProgress):
        return rag_service_pb2.IngestDocumentsResponse(
            progress=rag_service_pb2.IngestProgress(
                document_id=event.document_id,
                stage=STAGES[event.stage],
                bytes_received=event.bytes_received,
                chunks_done=event.chunks_done,
                chunks_total=event.chunks_total,
            )
        )
    if isinstance(event, IngestOutcome):
        outcome = rag_service_pb2.IngestOutcome(
            document_id=event.document_id,
            name=event.name,
            status=STATUSES[event.status],
            reason=event.reason,
            chunk_count=event.chunk_count,
            previous_chunk_count=event.previous_chunk_count,
        )
        if event.document is not None:
            outcome.document.CopyFrom(document_to_proto(event.document))
        return rag_service_pb2.IngestDocumentsResponse(outcome=outcome)
    return rag_service_pb2.IngestDocumentsResponse(
        summary=rag_service_pb2.IngestSummary(
            received=event.received,
            ingested=event.ingested,
            replaced=event.replaced,
            skipped=event.skipped,
            rejected=event.rejected,
            chunks_added=event.chunks_added,
            chunks_removed=event.chunks_removed,
        )
    )


# -- retrieval and answers ---------------------------------------------------------------


def filter_from_proto(f: rag_service_pb2.RetrievalFilter) -> RetrievalFilter:
    return RetrievalFilter(
        tags=tuple(t.strip().lower() for t in f.tags),
        evidence_levels=tuple(int(e) for e in f.evidence_levels),
        published_after=f.published_after,
        documents=tuple(f.documents),
    )


def citation(r: Retrieved, index: int, quote: str = "") -> knowledge_pb2.Citation:
    chunk = chunk_to_proto(r.chunk)
    return knowledge_pb2.Citation(
        index=index,
        chunk=chunk.name,
        document=chunk.document,
        title=r.document.title,
        source_url=r.document.source_url,
        section=" > ".join(r.chunk.section_path),
        start_offset=r.chunk.start_offset,
        end_offset=r.chunk.end_offset,
        quote=quote or r.chunk.text,
        publication_date=r.document.publication_date,
        evidence_level=r.document.evidence_level,  # type: ignore[arg-type]
        page_number=r.chunk.page_number,
    )


def result_to_proto(r: Retrieved, index: int) -> rag_service_pb2.RetrievalResult:
    message = rag_service_pb2.RetrievalResult(
        chunk=chunk_to_proto(r.chunk),
        citation=citation(r, index),
        relevance=r.relevance,
        scores=rag_service_pb2.RetrievalScores(
            dense=r.dense, lexical=r.lexical, fused=r.fused, context_boost=r.context_boost
        ),
        matched_context=r.matched_context,
    )
    if r.rerank is not None:
        message.scores.rerank = r.rerank
    return message


def _sentence(s: SentenceCheck) -> rag_service_pb2.AnswerSentence:
    return rag_service_pb2.AnswerSentence(
        text=s.text,
        start_offset=s.start,
        end_offset=s.end,
        citations=s.citations,
        is_claim=s.is_claim,
        supported=s.supported,
        support_score=s.support_score,
        issue=s.issue,
    )


def _attempt(a: Attempt) -> rag_service_pb2.ProviderAttempt:
    return rag_service_pb2.ProviderAttempt(
        provider=a.provider,
        model=a.model,
        outcome=a.outcome,
        error=a.error,
        latency=Duration(seconds=int(a.seconds), nanos=int((a.seconds % 1) * 1e9)),
    )


def answer_to_proto(result: AnswerResult) -> rag_service_pb2.AnswerFinal:
    validation = result.validation
    quotes = {s.best_source: s.quote for s in reversed(validation.sentences) if s.best_source}
    return rag_service_pb2.AnswerFinal(
        text=result.text,
        sentences=[_sentence(s) for s in validation.sentences],
        citations=[
            citation(result.results[i - 1], i, quotes.get(i, "")) for i in sorted(validation.cited)
        ],
        validation=rag_service_pb2.AnswerValidation(
            passed=validation.passed,
            unsupported_sentence_count=validation.unsupported,
            invalid_citations=validation.invalid_citations,
        ),
        provider=result.provider,
        model=result.model,
        extractive=result.extractive,
        fallback_reason=result.fallback_reason,
        prompt_template=result.template.name,
        prompt_template_version=result.template.version,
        attempts=[_attempt(a) for a in result.attempts],
        insufficient_evidence=result.insufficient_evidence,
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
    )
