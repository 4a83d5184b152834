"""Validators for every RagService request (registered on import).

They check shapes only (names, ranges, enums, lengths); existence, tenancy
and permissions are the domain's. For the ingest stream only the framing is
checked here: a bad document is the domain's to reject, with its reason,
without ending the stream.
"""

from __future__ import annotations

from hacs.rag.v1 import knowledge_pb2, patient_context_pb2
from hacs.rag.v1 import rag_service_pb2 as pb
from hacs.records.v1 import evidence_pb2

from services.common import names
from services.common.validation import Violations, validates
from services.kernel.records.names import is_record_name
from services.kernel.retrieval.terms import MAX_QUERY_CHARS
from services.rag.ingest import FHIR_DATE
from services.rag.knowledge_bases import UPDATABLE
from services.rag.names import DOCUMENT_NAME, KB_ID, KB_ID_RULE, KB_NAME

KB_EXAMPLE = "tenants/acme/knowledgeBases/guidelines"
DOC_EXAMPLE = "tenants/acme/knowledgeBases/guidelines/documents/kdigo-2024"
LEVELS = set(evidence_pb2.EvidenceLevel.values())
RERANK_MODES = set(pb.RerankMode.values())
SEXES = ("male", "female", "other", "unknown")


def _parent(v: Violations, parent: str) -> None:
    v.resource_name("parent", parent, names.TENANT, "tenants/{tenant}")


def _knowledge_base(v: Violations, prefix: str, kb: knowledge_pb2.KnowledgeBase) -> None:
    v.max_length(f"{prefix}.display_name", kb.display_name, 200)
    v.max_length(f"{prefix}.description", kb.description, 4000)
    v.labels(f"{prefix}.labels", dict(kb.labels))
    chunking = kb.chunking
    if chunking.max_tokens and not 32 <= chunking.max_tokens <= 2048:
        v.add(f"{prefix}.chunking.max_tokens", "must be 0 (default 256) or 32-2,048")
    if chunking.overlap_tokens < 0:
        v.add(f"{prefix}.chunking.overlap_tokens", "must not be negative")


@validates(pb.CreateKnowledgeBaseRequest)
def _create(r: pb.CreateKnowledgeBaseRequest, v: Violations) -> None:
    _parent(v, r.parent)
    if v.required("knowledge_base_id", r.knowledge_base_id) and not KB_ID.match(
        r.knowledge_base_id
    ):
        v.add("knowledge_base_id", f"{r.knowledge_base_id!r} is not valid ({KB_ID_RULE})")
    _knowledge_base(v, "knowledge_base", r.knowledge_base)
    model = r.knowledge_base.embedding_model
    if model and not model.startswith("models/"):
        v.add("knowledge_base.embedding_model", f"{model!r} is not a model name 'models/{{id}}'")


@validates(pb.GetKnowledgeBaseRequest)
def _get(r: pb.GetKnowledgeBaseRequest, v: Violations) -> None:
    v.resource_name("name", r.name, KB_NAME, KB_EXAMPLE)


@validates(pb.ListKnowledgeBasesRequest)
def _list(r: pb.ListKnowledgeBasesRequest, v: Violations) -> None:
    _parent(v, r.parent)
    v.page(r.page_size)


@validates(pb.UpdateKnowledgeBaseRequest)
def _update(r: pb.UpdateKnowledgeBaseRequest, v: Violations) -> None:
    v.resource_name("knowledge_base.name", r.knowledge_base.name, KB_NAME, KB_EXAMPLE)
    if "embedding_model" in r.update_mask.paths:
        v.add("update_mask", "embedding_model is immutable: create a new knowledge base instead")
    else:
        v.update_mask(r.update_mask, UPDATABLE)
    _knowledge_base(v, "knowledge_base", r.knowledge_base)


@validates(pb.DeleteKnowledgeBaseRequest)
def _delete(r: pb.DeleteKnowledgeBaseRequest, v: Violations) -> None:
    v.resource_name("name", r.name, KB_NAME, KB_EXAMPLE)


@validates(pb.IngestDocumentsRequest)
def _ingest(r: pb.IngestDocumentsRequest, v: Violations) -> None:
    step = r.WhichOneof("payload")
    if step is None:
        v.add("payload", "each message needs a config, header, data or end")
    elif step == "config":
        v.resource_name("config.knowledge_base", r.config.knowledge_base, KB_NAME, KB_EXAMPLE)


@validates(pb.GetDocumentRequest)
def _get_document(r: pb.GetDocumentRequest, v: Violations) -> None:
    v.resource_name("name", r.name, DOCUMENT_NAME, DOC_EXAMPLE)


@validates(pb.ListDocumentsRequest)
def _list_documents(r: pb.ListDocumentsRequest, v: Violations) -> None:
    v.resource_name("parent", r.parent, KB_NAME, KB_EXAMPLE)
    v.page(r.page_size)
    for i, tag in enumerate(r.tags):
        if not tag.strip():
            v.add(f"tags[{i}]", "must not be empty")


@validates(pb.DeleteDocumentRequest)
def _delete_document(r: pb.DeleteDocumentRequest, v: Violations) -> None:
    v.resource_name("name", r.name, DOCUMENT_NAME, DOC_EXAMPLE)


@validates(pb.ListChunksRequest)
def _list_chunks(r: pb.ListChunksRequest, v: Violations) -> None:
    v.resource_name("parent", r.parent, DOCUMENT_NAME, DOC_EXAMPLE)
    v.page(r.page_size)


def _patient_context(v: Violations, c: patient_context_pb2.PatientContext) -> None:
    if c.patient and not (is_record_name(c.patient) and c.patient.split("/")[2] == "patients"):
        v.add("patient_context.patient", f"{c.patient!r} is not like 'tenants/acme/patients/p-1'")
    if c.HasField("age") and not 0 <= c.age <= 150:
        v.add("patient_context.age", "must be between 0 and 150")
    v.one_of("patient_context.sex", c.sex, SEXES, allow_empty=True)
    v.max_length("patient_context.notes", c.notes, 2000)


def _retrieval(
    v: Violations,
    parent: str,
    knowledge_bases: list[str],
    query: str,
    min_relevance: float,
    f: pb.RetrievalFilter,
    rerank: int,
    context: patient_context_pb2.PatientContext,
) -> None:
    tenant = v.parent_tenant(parent)
    for i, kb in enumerate(knowledge_bases):
        v.resource_name(f"knowledge_bases[{i}]", kb, KB_NAME, KB_EXAMPLE)
        v.in_tenant(f"knowledge_bases[{i}]", kb, tenant)
    if not query.strip():
        v.add("query", "is required")
    v.max_length("query", query, MAX_QUERY_CHARS)
    if not 0.0 <= min_relevance <= 1.0:
        v.add("min_relevance", "must be in [0, 1]")
    for i, level in enumerate(f.evidence_levels):
        if level not in LEVELS or level == 0:
            v.add(f"filter.evidence_levels[{i}]", f"{level} is not a graded EvidenceLevel")
    if f.published_after and not FHIR_DATE.match(f.published_after):
        v.add("filter.published_after", f"{f.published_after!r} is not 'YYYY[-MM[-DD]]'")
    for i, doc in enumerate(f.documents):
        v.resource_name(f"filter.documents[{i}]", doc, DOCUMENT_NAME, DOC_EXAMPLE)
        v.in_tenant(f"filter.documents[{i}]", doc, tenant)
    if rerank not in RERANK_MODES:
        v.add("rerank", f"{rerank} is not a RerankMode")
    _patient_context(v, context)


@validates(pb.RetrieveRequest)
def _retrieve(r: pb.RetrieveRequest, v: Violations) -> None:
    _retrieval(
        v, r.parent, list(r.knowledge_bases), r.query, r.min_relevance, r.filter, r.rerank,
        r.patient_context,
    )  # fmt: skip
    if not 0 <= r.top_k <= 100:
        v.add("top_k", "must be between 1 and 100 (0 = 10)")


@validates(pb.AnswerRequest)
def _answer(r: pb.AnswerRequest, v: Violations) -> None:
    _retrieval(
        v, r.parent, list(r.knowledge_bases), r.query, r.min_relevance, r.filter, r.rerank,
        r.patient_context,
    )  # fmt: skip
    if not 0 <= r.top_k <= 50:
        v.add("top_k", "must be between 1 and 50 (0 = 8)")
    if not 0 <= r.max_output_tokens <= 32_768:
        v.add("max_output_tokens", "must be between 1 and 32,768 (0 = 1,024)")
    if r.HasField("temperature") and not 0.0 <= r.temperature <= 2.0:
        v.add("temperature", "must be in [0, 2]")
    for i, provider in enumerate(r.providers):
        if not provider.strip():
            v.add(f"providers[{i}]", "must not be empty")
