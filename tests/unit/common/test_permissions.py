from __future__ import annotations

from itertools import combinations

import pytest

from services.common.caller import Caller
from services.common.errors import Forbidden
from services.common.permissions import (
    ACTIONS,
    ROLES,
    default_permissions,
    grants,
    is_valid_permission,
    narrowed,
)


@pytest.mark.parametrize(
    ("held", "required", "expected"),
    [
        (["read:patient"], "read:patient", True),
        (["read:patient"], "write:patient", False),
        (["read:patient"], "read:observation", False),
        (["read:*"], "read:observation", True),
        (["read:*"], "write:observation", False),
        (["admin:*"], "delete:patient", True),  # HACS: admin:* grants every action
        (["admin:all"], "write:memory", True),
        (["audit:*"], "read:patient", False),
        ([], "read:patient", False),
    ],
)
def test_grants_follows_hacs_wildcards(held: list[str], required: str, expected: bool) -> None:
    assert grants(held, required) is expected


def test_every_role_has_valid_default_permissions() -> None:
    for role in ROLES:
        perms = default_permissions(role)
        assert perms, role
        assert all(is_valid_permission(p) for p in perms), role


@pytest.mark.parametrize("text", ["read:patient", "write:*", "admin:platform", "audit:own_data"])
def test_valid_permissions(text: str) -> None:
    assert is_valid_permission(text)


@pytest.mark.parametrize(
    "text", ["read", "fly:patient", "read:Patient", "read:", ":patient", "read:pa tient"]
)
def test_invalid_permissions(text: str) -> None:
    assert not is_valid_permission(text)


def test_tenant_admin_is_not_a_platform_operator() -> None:
    admin = Caller(
        tenant_id="st-marys",
        actor_id="admin",
        role="administrator",
        permissions=frozenset({"admin:*"}),
    )
    assert admin.can("admin:platform")  # the wildcard grants the permission...
    with pytest.raises(Forbidden):  # ...but tenant lifecycle also needs the platform tenant
        admin.require_platform_operator()
    operator = Caller(
        tenant_id="platform",
        actor_id="operator",
        role="system",
        permissions=frozenset({"admin:platform"}),
    )
    operator.require_platform_operator()


def test_narrowed_grants_exactly_what_both_sets_grant() -> None:
    """Every set of up to two permissions, under every other, against every requirement."""
    forms = ["read:patient", "read:memory", "write:patient", "read:*", "*:patient", "*:*",
             "admin:*", "admin:all", "admin:tenant", "delete:memory"]  # fmt: skip
    requirements = [f"{a}:{r}" for a in ACTIONS for r in ("patient", "memory", "tenant")]
    sets = [frozenset(c) for n in (0, 1, 2) for c in combinations(forms, n)]
    for granted in sets:
        for limit in sets:
            both = narrowed(granted, limit)
            for required in requirements:
                expected = grants(granted, required) and grants(limit, required)
                assert grants(both, required) == expected, (granted, limit, required)


def test_narrowed_keeps_the_forms_a_reader_expects() -> None:
    assert narrowed({"read:*"}, {"read:patient", "write:patient"}) == {"read:patient"}
    assert narrowed({"*:patient"}, {"read:*"}) == {"read:patient"}
    assert narrowed({"read:patient"}, {"admin:all"}) == {"read:patient"}
    assert narrowed({"write:patient"}, {"read:patient"}) == frozenset()
