from __future__ import annotations

import pytest

from services.common.caller import Caller
from services.common.errors import Forbidden
from services.common.permissions import ROLES, default_permissions, grants, is_valid_permission


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
