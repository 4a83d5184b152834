"""Page tokens and page sizes for every List RPC (AIP-158).

A token is opaque to callers: a list kind and the key to continue after,
base64url-encoded. Tokens never widen access; the tenant filter still applies
to the next page, so a token from another tenant just lists that key range of
the caller's own tenant.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import TypeVar

from services.common.errors import FieldViolation, Invalid

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


def page_size(
    requested: int, *, default: int = DEFAULT_PAGE_SIZE, maximum: int = MAX_PAGE_SIZE
) -> int:
    """0 means the default; above the maximum is clamped (AIP-158), negative is invalid."""
    if requested < 0:
        raise Invalid(FieldViolation("page_size", "must not be negative"))
    if requested == 0:
        return default
    return min(requested, maximum)


def encode_page_token(kind: str, after: str) -> str:
    return base64.urlsafe_b64encode(f"{kind}\x00{after}".encode()).decode().rstrip("=")


def decode_page_token(kind: str, token: str) -> str:
    """The key to continue after; INVALID_ARGUMENT for a token of another list."""
    try:
        padded = token + "=" * (-len(token) % 4)
        found_kind, sep, after = (
            base64.urlsafe_b64decode(padded.encode()).decode().partition("\x00")
        )
    except (binascii.Error, UnicodeDecodeError, ValueError):
        found_kind, sep, after = "", "", ""
    if not sep or found_kind != kind:
        raise Invalid(FieldViolation("page_token", "is not a page token returned by this list"))
    return after


MAX_KEY = 2**63 - 1  # the largest BIGINT: sequences, versions, row ids


def decode_page_number(kind: str, token: str) -> int:
    """A token whose key is a number (a row id, a version): a plain ASCII integer that fits
    a BIGINT, else INVALID_ARGUMENT (a forged huge one would overflow the database)."""
    after = decode_page_token(kind, token)
    if not (after.isascii() and after.isdigit() and len(after) <= 19 and int(after) <= MAX_KEY):
        raise Invalid(FieldViolation("page_token", "is not a page token returned by this list"))
    return int(after)


def take_page(items: list[T], size: int, kind: str, key: Callable[[T], str]) -> tuple[list[T], str]:
    """Cut a list fetched with `size + 1` rows into a page and the token for the next one."""
    page = items[:size]
    more = len(items) > size and bool(page)
    return page, encode_page_token(kind, key(page[-1])) if more else ""
