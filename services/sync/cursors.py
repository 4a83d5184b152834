"""Sync cursors: an opaque string naming a position in one tenant's change log.

A cursor is the tenant and a change-log sequence, base64url-encoded with a
CRC-32 so a truncated or mangled cursor is refused instead of silently
meaning another position (a shorter sequence would redeliver changes). It
needs no secret: a caller can only ever use cursors of its own tenant, and
any position in its own log is one it may read from.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from dataclasses import dataclass

from services.common.errors import FieldViolation, Invalid

VERSION = "c1"


@dataclass(frozen=True)
class Position:
    tenant_id: str
    sequence: int


def encode(tenant_id: str, sequence: int) -> str:
    payload = f"{tenant_id}:{sequence}".encode()
    text = base64.urlsafe_b64encode(payload).decode().rstrip("=")
    return f"{VERSION}.{text}.{zlib.crc32(payload):08x}"


def try_decode(cursor: str) -> Position | None:
    """The position a cursor names, or None when it is not a cursor this server made."""
    version, _, rest = cursor.partition(".")
    text, _, checksum = rest.partition(".")
    if version != VERSION or not text or len(checksum) != 8 or len(cursor) > 200:
        return None
    try:
        payload = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    if f"{zlib.crc32(payload):08x}" != checksum:
        return None
    tenant_id, _, sequence = payload.decode(errors="replace").rpartition(":")
    if not tenant_id or not sequence.isdigit():
        return None
    return Position(tenant_id, int(sequence))


def decode(cursor: str, field: str, tenant_id: str) -> int:
    """The sequence of a cursor of `tenant_id`; INVALID_ARGUMENT for anything else."""
    position = try_decode(cursor)
    if position is None:
        raise Invalid(FieldViolation(field, "is not a sync cursor returned by this service"))
    if position.tenant_id != tenant_id:
        raise Invalid(FieldViolation(field, f"is a cursor of another tenant, not of {tenant_id!r}"))
    return position.sequence
