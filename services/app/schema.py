"""Every table of the platform, gathered into one MetaData (for Alembic and its tests).

Each layer declares its own tables on the runtime's `Base`; importing a
table module registers them. This module, above every layer, is the one
place that imports them all.
"""

from __future__ import annotations

from services.common import audit, hourly_usage, usage  # noqa: F401  (registers tables)
from services.common.db import compatibility  # noqa: F401  (registers hacs_schema_compat)
from services.common.db.base import Base
from services.kernel.embedding import registry as embedding_registry  # noqa: F401
from services.kernel.records import tables as record_tables  # noqa: F401
from services.kernel.retrieval import tables as index_tables  # noqa: F401
from services.kernel.tenancy import tables as tenancy_tables  # noqa: F401
from services.rag import tables as rag_tables  # noqa: F401
from services.tenant.identity import tables as identity_tables  # noqa: F401

metadata = Base.metadata

# Tables whose rows belong to one tenant, protected by row-level security on
# PostgreSQL. Every later tenant-owned table must be listed here and get its
# policy in a migration (tests check both).
TENANT_OWNED_TABLES = (
    "actors",
    "api_keys",
    "audit_events",
    "usage_counters",
    "usage_hourly",
    "usage_active_actors",
    "records",
    "record_versions",
    "record_codes",
    "record_labels",
    "change_log",
    "tenant_counters",
    "idempotent_requests",
    "index_cursors",
    "knowledge_bases",
    "knowledge_documents",
    "knowledge_document_tags",
    "knowledge_chunks",
    "identity_providers",
    "external_identities",
    "sign_in_nonces",
)
