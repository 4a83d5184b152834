"""The values requests are made of: boundaries, unicode, long strings, injections, tricks.

Nothing here may contain the victim tenant's canaries: an answer echoing a request
would otherwise look like a leak.
"""

from __future__ import annotations

import random

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
UINT32 = (0, 2**32 - 1)
UINT64 = (0, 2**64 - 1)

# Seconds of 0001-01-01 and 9999-12-31T23:59:59, the range a Timestamp may hold.
TIMESTAMP_SECONDS = (-62_135_596_800, 253_402_300_799)

FLOATS = (
    0.0,
    -0.0,
    0.5,
    1.0,
    -1.0,
    1.0000001,
    100.0,
    1e-300,
    5e-324,
    1e38,
    3.5e38,
    1e308,
    -1e308,
    float("nan"),
    float("inf"),
    float("-inf"),
)

NAME_TRICKS = (
    "",
    "/",
    "..",
    "../..",
    "%2F",
    "%2e%2e",
    "tenants",
    "tenants/",
    "tenants//patients/p",
    "tenants/*/patients/*",
    "tenants/platform",
    "tenants/platform/actors/operator",
    "ten\u0430nts/x",  # Cyrillic a
    "tenants\uff0fx",  # fullwidth solidus
    "x\n",
    "x\x00y",
    " x",
    "x ",
    "*",
    "-",
    "_",
    ".",
    "a" * 129,
)

INJECTIONS = (
    '" or 1==1 or "',
    "' OR '1'='1",
    'x" || tenant_id != "',
    "tenant_id != ''",
    'tags like "%"',
    "%",
    "_%",
    "\\",
    '\\"',
    "\\u0000",
    "'; DROP TABLE records; --",
    "$where",
    "{{7*7}}",
    "${jndi:ldap://example.invalid/a}",
    "<script>alert(1)</script>",
    "json_contains(tags, 'x')",
    ")) OR ((1=1",
    "\u0027 OR 1=1 --",
)

UNICODE = (
    "café",
    "naïve résumé",
    "日本語の診療記録",
    "Ελληνικά",
    "עברית",
    "😀🩺💊",
    "\u202eevil\u202c",
    "e\u0301",
    "\ufeffbom",
    "\u200bzero width",
    "Ωß İı",
    "\x00",
    "\x7f\x01\x1b[31m",
    "\U0010ffff",
)

CLINICAL = (
    "chest pain radiating to the left arm",
    "HbA1c 7.2% on metformin",
    "metformin 500 mg twice daily",
    "type 2 diabetes mellitus without complications",
    "penicillin allergy: hives",
    "blood pressure 140/90 mmHg",
    "what is the first-line treatment for hypertension?",
    "patient prefers morning appointments",
    "4548-4",
    "http://loinc.org|4548-4",
    "|4548-4",
    "http://snomed.info/sct|44054006",
)

PERMISSIONS = (
    "read:patient",
    "write:patient",
    "delete:patient",
    "read:*",
    "admin:*",
    "admin:all",
    "admin:platform",
    "*:*",
    "read:memory",
    "write:memory",
    "delete:memory",
    "admin:memory",
    "read:",
    ":",
    "READ:PATIENT",
)

COLLECTIONS = (
    "patients",
    "observations",
    "conditions",
    "encounters",
    "memoryBlocks",
    "knowledgeBases",
    "documents",
    "actors",
    "apiKeys",
    "auditEvents",
    "models",
    "records",
    "unknownThings",
)


def long_string(rng: random.Random) -> str:
    size = rng.choice((257, 1_025, 4_097, 65_537, 200_000))
    return rng.choice(("a", "é", "😀", "x ", "tenants/")) * (size // 2)


def random_text(rng: random.Random, length: int = 12) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789-_./:|%\\\"' éß日😀\n\t"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(1, length)))


def any_string(rng: random.Random) -> str:
    pool = rng.random()
    if pool < 0.2:
        return rng.choice(CLINICAL)
    if pool < 0.35:
        return rng.choice(UNICODE)
    if pool < 0.5:
        return rng.choice(INJECTIONS)
    if pool < 0.6:
        return rng.choice(NAME_TRICKS)
    if pool < 0.68:
        return long_string(rng)
    return random_text(rng)


def integer(rng: random.Random, low: int, high: int) -> int:
    choice = rng.random()
    if choice < 0.35:
        return rng.choice((low, high, 0, 1, -1 if low < 0 else 2, low + 1, high - 1))
    if choice < 0.6:
        return max(low, min(high, rng.choice((10, 50, 100, 1000, 1001, 10_000, 100_000))))
    return rng.randint(max(low, -1_000_000), min(high, 1_000_000))


def floating(rng: random.Random) -> float:
    if rng.random() < 0.6:
        return rng.choice(FLOATS)
    return rng.uniform(-2.0, 2.0)
