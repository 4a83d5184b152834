"""Resource names (AIP-122): `tenants/{tenant}/...` patterns and their parts."""

from __future__ import annotations

import re

from services.common.errors import FieldViolation, Invalid

_SEGMENT = r"[a-z][a-z0-9-]{1,38}[a-z0-9]"
TENANT = re.compile(rf"^tenants/(?P<tenant>{_SEGMENT})\Z")
ACTOR = re.compile(rf"^tenants/(?P<tenant>{_SEGMENT})/actors/(?P<actor>{_SEGMENT})\Z")
API_KEY = re.compile(
    rf"^tenants/(?P<tenant>{_SEGMENT})/actors/(?P<actor>{_SEGMENT})/apiKeys/(?P<api_key>[a-z0-9]{{4,40}})\Z"
)

IDENTITY_PROVIDER = re.compile(
    rf"^tenants/(?P<tenant>{_SEGMENT})/identityProviders/(?P<identity_provider>{_SEGMENT})\Z"
)


def parse(pattern: re.Pattern[str], name: str, field: str = "name") -> dict[str, str]:
    """The name's parts, or INVALID_ARGUMENT naming the field and the expected shape."""
    match = pattern.match(name)
    if match is None:
        raise Invalid(
            FieldViolation(field, f"{name!r} does not match {pattern_example(pattern)!r}")
        )
    return match.groupdict()


def tenant_of(name: str, field: str = "parent") -> str:
    """The tenant id of `tenants/{tenant}`, or INVALID_ARGUMENT naming the field."""
    return parse(TENANT, name, field)["tenant"]


def pattern_example(pattern: re.Pattern[str]) -> str:
    return {
        TENANT: "tenants/{tenant}",
        ACTOR: "tenants/{tenant}/actors/{actor}",
        API_KEY: "tenants/{tenant}/actors/{actor}/apiKeys/{api_key}",
        IDENTITY_PROVIDER: "tenants/{tenant}/identityProviders/{identity_provider}",
    }.get(pattern, pattern.pattern)
