"""Validators for every SearchService request (registered on import)."""

from __future__ import annotations

import re

from hacs.records.v1 import record_pb2
from hacs.search.v1 import query_pb2
from hacs.search.v1 import search_service_pb2 as pb

from services.common import names
from services.common.validation import Violations, validates
from services.kernel.records.names import is_record_name
from services.kernel.retrieval.terms import MAX_QUERY_CHARS

TYPES = set(record_pb2.ResourceType.values()) - {0}
GENDERS = ("male", "female", "other", "unknown")
TOKEN = re.compile(r"^[^|\s]*\|?[^|\s]+\Z")
KNOWLEDGE_BASE = re.compile(
    r"^tenants/[a-z][a-z0-9-]{1,38}[a-z0-9]/knowledgeBases/[a-z0-9][a-z0-9-]{0,62}\Z"
)


def _parent(v: Violations, parent: str) -> None:
    v.resource_name("parent", parent, names.TENANT, "tenants/{tenant}")


def check_filter(v: Violations, prefix: str, f: query_pb2.SearchFilter, tenant: str) -> None:
    for i, t in enumerate(f.resource_types):
        if t not in TYPES:
            v.add(f"{prefix}.resource_types[{i}]", f"{t} is not a resource type")
    for i, p in enumerate(f.patients):
        if not (is_record_name(p) and p.split("/")[2] == "patients"):
            v.add(
                f"{prefix}.patients[{i}]",
                f"{p!r} is not a patient name like 'tenants/acme/patients/p-1'",
            )
        v.in_tenant(f"{prefix}.patients[{i}]", p, tenant)
    for field in ("min_age", "max_age"):
        if f.HasField(field) and not 0 <= getattr(f, field) <= 150:
            v.add(f"{prefix}.{field}", "must be between 0 and 150")
    if f.HasField("min_age") and f.HasField("max_age") and f.min_age > f.max_age:
        v.add(f"{prefix}.min_age", f"{f.min_age} is above max_age {f.max_age}")
    for i, g in enumerate(f.genders):
        v.one_of(f"{prefix}.genders[{i}]", g, GENDERS)
    for i, token in enumerate(f.codes):
        if not TOKEN.match(token):
            v.add(f"{prefix}.codes[{i}]", f"{token!r} is not 'system|code', '|code' or 'code'")
    if (
        f.HasField("start_time")
        and f.HasField("end_time")
        and f.end_time.ToDatetime() <= f.start_time.ToDatetime()
    ):
        v.add(f"{prefix}.end_time", "must be after start_time")
    v.labels(f"{prefix}.labels", dict(f.labels))
    for i, kb in enumerate(f.knowledge_bases):
        if not KNOWLEDGE_BASE.match(kb):
            v.add(
                f"{prefix}.knowledge_bases[{i}]",
                f"{kb!r} is not like 'tenants/acme/knowledgeBases/guidelines'",
            )
        v.in_tenant(f"{prefix}.knowledge_bases[{i}]", kb, tenant)


@validates(pb.SearchRequest)
def _search(r: pb.SearchRequest, v: Violations) -> None:
    tenant = v.parent_tenant(r.parent)
    if not r.query.strip():
        v.add("query", "is required")
    v.max_length("query", r.query, MAX_QUERY_CHARS)
    if not 0 <= r.top_k <= 1000:
        v.add("top_k", "must be between 1 and 1,000 (0 = 10)")
    if not 0 <= r.snippet_length <= 1000:
        v.add("snippet_length", "must be between 1 and 1,000 (0 = 200)")
    check_filter(v, "filter", r.filter, tenant)
    h = r.hybrid
    for field in ("semantic_weight", "lexical_weight"):
        if h.HasField(field) and not 0.0 <= getattr(h, field) <= 1.0:
            v.add(f"hybrid.{field}", "must be in [0, 1]")
    if (
        h.HasField("semantic_weight")
        and h.HasField("lexical_weight")
        and h.semantic_weight + h.lexical_weight == 0
    ):
        v.add("hybrid", "the weights cannot both be 0")
    if h.rrf_k < 0:
        v.add("hybrid.rrf_k", "must not be negative")
    if not 0 <= h.candidate_depth <= 2000:
        v.add("hybrid.candidate_depth", "must be between 0 and 2,000")


@validates(pb.ParseQueryRequest)
def _parse(r: pb.ParseQueryRequest, v: Violations) -> None:
    _parent(v, r.parent)
    if not r.query.strip():
        v.add("query", "is required")
    v.max_length("query", r.query, MAX_QUERY_CHARS)


@validates(pb.GetIndexStatusRequest)
def _status(r: pb.GetIndexStatusRequest, v: Violations) -> None:
    _parent(v, r.parent)


@validates(pb.BackfillIndexRequest)
def _backfill(r: pb.BackfillIndexRequest, v: Violations) -> None:
    _parent(v, r.parent)
    for i, t in enumerate(r.resource_types):
        if t not in TYPES:
            v.add(f"resource_types[{i}]", f"{t} is not a resource type")
    if not 0 <= r.batch_size <= 2048:
        v.add("batch_size", "must be between 0 (default) and 2,048")
