"""Etags for optimistic concurrency (AIP-154): opaque, and new on every version."""

from __future__ import annotations

import hashlib

from services.common.errors import Conflict, EtagMismatch


def etag_for(name: str, version: int) -> str:
    return hashlib.sha256(f"{name}@{version}".encode()).hexdigest()[:20]


def check_etag(name: str, version: int, sent: str) -> None:
    """An empty etag means "whatever the current version"; any other must match."""
    current = etag_for(name, version)
    if sent and sent != current:
        raise EtagMismatch(name, sent, current)


def concurrent_update(name: str) -> Conflict:
    """The version moved between our read and our write: another writer won."""
    error = Conflict(
        f"{name!r} was changed by another writer at the same time; read it again and retry",
        subject=name,
        kind="ETAG",
    )
    error.reason = EtagMismatch.reason
    return error
