"""The audit log's hash chain: each tenant's events linked in order, so an edit, an
insertion or a removal anywhere shows.

Every event of a tenant gets the next sequence number and two hashes:

    content_hash = SHA-256(canonical JSON of the event's fields and its sequence number)
    chain_hash   = SHA-256(previous event's chain_hash + content_hash)   (hex digests)

with the previous chain hash of a tenant's first event 64 zeros. A changed field breaks
its content hash; a removed or inserted event breaks the next event's link. What the
chain alone cannot show is a removed *tail* (the newest events, and nothing after them
to break): signed checkpoints of the head, kept outside the database, close that gap
(services/common/audit_checkpoints.py).

The canonical form is fixed (version 1): JSON with sorted keys, no spaces, UTF-8, the
event time as ISO 8601 in UTC with microseconds. Changing it needs a new version.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

GENESIS = "0" * 64


@dataclass(frozen=True)
class Link:
    seq: int
    prev_hash: str
    content_hash: str
    chain_hash: str


def content_hash(seq: int, row: dict[str, Any]) -> str:
    """The hash of one event's content (the fields of `audit_events` but its id)."""
    moment: datetime = row["event_time"]
    canonical = {
        "v": 1,
        "seq": seq,
        "tenant_id": row["tenant_id"],
        "event_time": moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "actor": row["actor"],
        "method": row["method"],
        "permission": row["permission"] or "",
        "resource": row["resource"] or "",
        "outcome": row["outcome"],
        "details": row["details"] or {},
    }
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def chain_hash(prev_hash: str, content: str) -> str:
    return hashlib.sha256((prev_hash + content).encode()).hexdigest()


def link(seq: int, prev_hash: str, row: dict[str, Any]) -> Link:
    """The chain fields of the event that follows `prev_hash` as number `seq`."""
    content = content_hash(seq, row)
    return Link(seq, prev_hash, content, chain_hash(prev_hash, content))
