"""Validators for every MemoryService request (registered on import).

They check the request's shape: names, sizes, ranges, the memory blocks'
own rules. Tenancy, ownership and the content rules shared with every
record are checked by the domain with the same field paths.
"""

from __future__ import annotations

from hacs.memory.v1 import consolidation_pb2 as cpb
from hacs.memory.v1 import memory_service_pb2 as pb
from hacs.memory.v1 import recall_pb2
from hacs.records.v1 import memory_block_pb2, record_pb2

from services.common import names
from services.common.validation import Violations, validates
from services.kernel.records.names import is_record_name
from services.kernel.retrieval.terms import MAX_QUERY_CHARS
from services.memory.blocks import MAX_CONTENT, MAX_RELATED, MAX_SUMMARY, MAX_TAG_LENGTH, MAX_TAGS
from services.memory.memories import MAX_BATCH

MEMORY_EXAMPLE = "tenants/{tenant}/memoryBlocks/{memory_block}"
PATIENT_EXAMPLE = "tenants/{tenant}/patients/{patient}"
MAX_TOP_K = 100
TYPES = set(memory_block_pb2.MemoryType.values()) - {0}
LINKAGES = ("average", "complete", "single")


def _parent(v: Violations, value: str, field: str = "parent") -> None:
    v.resource_name(field, value, names.TENANT, "tenants/{tenant}")


def _memory_name(v: Violations, field: str, value: str, *, required: bool = True) -> None:
    if not value:
        if required:
            v.add(field, "is required")
        return
    parts = value.split("/")
    if not is_record_name(value) or parts[2] != "memoryBlocks":
        v.add(field, f"{value!r} is not a memory name like {MEMORY_EXAMPLE!r}")


def _patient(v: Violations, field: str, value: str) -> None:
    parts = value.split("/")
    if not is_record_name(value) or parts[2] != "patients":
        v.add(field, f"{value!r} is not a patient name like {PATIENT_EXAMPLE!r}")


def _actor(v: Violations, field: str, value: str) -> None:
    if not names.ACTOR.match(value):
        v.add(field, f"{value!r} is not an actor name like 'tenants/{{tenant}}/actors/{{actor}}'")


def _unit(v: Violations, field: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        v.add(field, f"{value} is outside [0, 1]")


def _filter(v: Violations, f: recall_pb2.MemoryFilter, path: str) -> None:
    for i, kind in enumerate(f.memory_types):
        if kind not in TYPES:
            v.add(f"{path}.memory_types[{i}]", f"{kind} is not a memory type")
    for i, agent in enumerate(f.agents):
        _actor(v, f"{path}.agents[{i}]", agent)
    for i, patient in enumerate(f.patients):
        _patient(v, f"{path}.patients[{i}]", patient)
    both = f.HasField("start_time") and f.HasField("end_time")
    if both and f.end_time.ToDatetime() <= f.start_time.ToDatetime():
        v.add(f"{path}.end_time", "must be after start_time")
    _unit(v, f"{path}.min_importance", f.min_importance)
    v.labels(f"{path}.labels", dict(f.labels))


MAX_TTL_SECONDS = 100 * 365 * 24 * 3600  # a working memory kept longer is not working memory


def _block(v: Violations, record_path: str, record: record_pb2.Record, tenant: str) -> None:
    if record.WhichOneof("resource") != "memory_block":
        v.add(f"{record_path}.memory_block", "set memory_block (a memory is a MemoryBlock record)")
        return
    path = f"{record_path}.memory_block"
    block = record.memory_block
    if block.memory_type not in TYPES:
        v.add(
            f"{path}.memory_type",
            "is required (episodic, procedural, executive, semantic, working)",
        )
    if not block.content.strip():
        v.add(f"{path}.content", "is required")
    v.max_length(f"{path}.content", block.content, MAX_CONTENT)
    v.max_length(f"{path}.summary", block.summary, MAX_SUMMARY)
    if block.HasField("importance_score"):
        _unit(v, f"{path}.importance_score", block.importance_score)
    if block.HasField("confidence_score"):
        _unit(v, f"{path}.confidence_score", block.confidence_score)
    if len(block.tags) > MAX_TAGS:
        v.add(f"{path}.tags", f"at most {MAX_TAGS} tags")
    for i, tag in enumerate(block.tags):
        if not tag.strip() or len(tag) > MAX_TAG_LENGTH:
            v.add(f"{path}.tags[{i}]", f"tags are 1-{MAX_TAG_LENGTH} characters")
    if len(block.related_memories) > MAX_RELATED:
        v.add(f"{path}.related_memories", f"at most {MAX_RELATED}")
    for i, related in enumerate(block.related_memories):
        _memory_name(v, f"{path}.related_memories[{i}]", related)
        v.in_tenant(f"{path}.related_memories[{i}]", related, tenant)
    if block.agent:
        _actor(v, f"{path}.agent", block.agent)
    if block.patient:
        _patient(v, f"{path}.patient", block.patient)
    if block.HasField("ttl_seconds") and not 0 < block.ttl_seconds <= MAX_TTL_SECONDS:
        v.add(
            f"{path}.ttl_seconds", f"must be positive and at most {MAX_TTL_SECONDS:,} (100 years)"
        )


@validates(pb.RememberRequest)
def _remember(r: pb.RememberRequest, v: Violations) -> None:
    tenant = v.parent_tenant(r.parent)
    if not 1 <= len(r.memories) <= MAX_BATCH:
        v.add("memories", f"send between 1 and {MAX_BATCH} memories (got {len(r.memories)})")
    for i, memory in enumerate(r.memories):
        _memory_name(v, f"memories[{i}].name", memory.name, required=False)
        _block(v, f"memories[{i}]", memory, tenant)
    if r.agent:
        _actor(v, "agent", r.agent)
    if r.patient:
        _patient(v, "patient", r.patient)
    v.max_length("request_id", r.request_id, 64)


@validates(pb.RecallRequest)
def _recall(r: pb.RecallRequest, v: Violations) -> None:
    _parent(v, r.parent)
    if v.required("query", r.query.strip()):
        v.max_length("query", r.query, MAX_QUERY_CHARS)
    _filter(v, r.filter, "filter")
    if not 0 <= r.top_k <= MAX_TOP_K:
        v.add("top_k", f"must be between 1 and {MAX_TOP_K} (0 = the default, 10)")
    w = r.weights
    for field in ("semantic", "lexical", "recency", "importance"):
        if w.HasField(field) and getattr(w, field) < 0:
            v.add(f"weights.{field}", "must not be negative")
    if all(w.HasField(f) for f in ("semantic", "lexical", "recency", "importance")) and not (
        w.semantic + w.lexical + w.recency + w.importance
    ):
        v.add("weights", "at least one weight must be positive")
    for i, item in enumerate(r.half_lives):
        if item.memory_type not in TYPES:
            v.add(f"half_lives[{i}].memory_type", "is required")
        if item.half_life.seconds <= 0 and item.half_life.nanos <= 0:
            v.add(f"half_lives[{i}].half_life", "must be positive")
    if not 0.0 <= r.min_score <= 1.0:
        v.add("min_score", "must be in [0, 1]")


@validates(pb.GetMemoryRequest)
def _get(r: pb.GetMemoryRequest, v: Violations) -> None:
    _memory_name(v, "name", r.name)


@validates(pb.ListMemoriesRequest)
def _list(r: pb.ListMemoriesRequest, v: Violations) -> None:
    _parent(v, r.parent)
    _filter(v, r.filter, "filter")
    v.page(r.page_size)


@validates(pb.UpdateMemoryRequest)
def _update(r: pb.UpdateMemoryRequest, v: Violations) -> None:
    _memory_name(v, "memory.name", r.memory.name)
    if not r.update_mask.paths:
        v.add("update_mask", "name the fields to change, e.g. memory_block.content")
    if r.memory.WhichOneof("resource") not in (None, "memory_block"):
        v.add("memory.memory_block", "a memory is a MemoryBlock record")
    block = r.memory.memory_block
    paths = set(r.update_mask.paths)
    if {"memory_block", "memory_block.content"} & paths:
        if not block.content.strip():
            v.add("memory.memory_block.content", "must not be empty")
        v.max_length("memory.memory_block.content", block.content, MAX_CONTENT)
    if {"memory_block", "memory_block.importance_score"} & paths:
        _unit(v, "memory.memory_block.importance_score", block.importance_score)
    if {"memory_block", "memory_block.confidence_score"} & paths:
        _unit(v, "memory.memory_block.confidence_score", block.confidence_score)
    tenant = r.memory.name.split("/")[1] if r.memory.name.startswith("tenants/") else ""
    if {"memory_block", "memory_block.related_memories"} & paths:
        for i, related in enumerate(block.related_memories):
            where = f"memory.memory_block.related_memories[{i}]"
            _memory_name(v, where, related)
            v.in_tenant(where, related, tenant)
    ttl_changed = {"memory_block", "memory_block.ttl_seconds"} & paths
    if (
        ttl_changed
        and block.HasField("ttl_seconds")
        and not 0 < block.ttl_seconds <= MAX_TTL_SECONDS
    ):
        v.add("memory.memory_block.ttl_seconds", "must be positive and at most 100 years")


@validates(pb.ForgetRequest)
def _forget(r: pb.ForgetRequest, v: Violations) -> None:
    _memory_name(v, "name", r.name)
    if v.required("reason", r.reason.strip()):
        v.max_length("reason", r.reason, 1000)


@validates(pb.ErasePatientMemoriesRequest)
def _erase(r: pb.ErasePatientMemoriesRequest, v: Violations) -> None:
    _parent(v, r.parent)
    if v.required("patient", r.patient):
        _patient(v, "patient", r.patient)
    if v.required("reason", r.reason.strip()):
        v.max_length("reason", r.reason, 1000)


@validates(pb.RecordMemoryFeedbackRequest)
def _feedback(r: pb.RecordMemoryFeedbackRequest, v: Violations) -> None:
    _memory_name(v, "name", r.name)
    known = r.feedback in pb.MemoryFeedback.values() and r.feedback != 0
    if not known and not r.HasField("importance_score"):
        v.add("feedback", "USEFUL, NOT_USEFUL, INCORRECT or CITED (or set importance_score)")
    if r.HasField("importance_score"):
        _unit(v, "importance_score", r.importance_score)
    v.max_length("comment", r.comment, 1000)


def _thresholds(v: Violations, t: cpb.ConsolidationThresholds) -> None:
    if t.HasField("embedding_similarity"):
        _unit(v, "thresholds.embedding_similarity", t.embedding_similarity)
    if t.HasField("lexical_overlap"):
        _unit(v, "thresholds.lexical_overlap", t.lexical_overlap)
    if t.max_group_size < 0 or t.max_group_size == 1:
        v.add("thresholds.max_group_size", "must be at least 2 (0 = the default, 50)")


@validates(pb.ConsolidateRequest)
def _consolidate(r: pb.ConsolidateRequest, v: Violations) -> None:
    _parent(v, r.parent)
    _filter(v, r.scope, "scope")
    _thresholds(v, r.thresholds)


@validates(pb.ClusterRequest)
def _cluster(r: pb.ClusterRequest, v: Violations) -> None:
    _parent(v, r.parent)
    _filter(v, r.scope, "scope")
    p = r.params
    if r.method not in cpb.ClusterMethod.values():
        v.add("method", "use CLUSTER_METHOD_AGGLOMERATIVE or CLUSTER_METHOD_HDBSCAN")
    if p.num_clusters < 0:
        v.add("params.num_clusters", "must not be negative")
    if p.HasField("distance_threshold") and not 0.0 < p.distance_threshold <= 2.0:
        v.add("params.distance_threshold", "a cosine distance: in (0, 2]")
    if p.linkage and p.linkage not in LINKAGES:
        v.add("params.linkage", f"use one of {', '.join(LINKAGES)}")
    if p.min_cluster_size < 0 or p.min_cluster_size == 1:
        v.add("params.min_cluster_size", "must be at least 2 (0 = the default, 5)")
    if p.min_samples < 0:
        v.add("params.min_samples", "must not be negative")
    if not 0 <= p.label_terms <= 20:
        v.add("params.label_terms", "between 1 and 20 (0 = the default, 5)")
