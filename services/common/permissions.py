"""Permissions as the HACS library spells them: `action:resource` strings.

Matching follows `hacs_models.Actor.has_permission`: an exact grant, the
action's wildcard (`read:*`), or `admin:*` / `admin:all` (which grant every
action) satisfy a requirement. Permissions never cross tenants: that is
enforced by tenancy, not here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

ROLES = (
    "physician",
    "nurse",
    "pharmacist",
    "therapist",
    "technician",
    "administrator",
    "patient",
    "caregiver",
    "agent",
    "system",
    "researcher",
    "auditor",
)

SECURITY_LEVELS = ("low", "medium", "high", "critical")

# Role defaults, as in the HACS library (hacs_models.actor), extended with the
# record types the mesh stores (condition, allergy, diagnostic_report,
# care_plan, goal, message, memory, evidence, knowledge).
ROLE_DEFAULT_PERMISSIONS: dict[str, tuple[str, ...]] = {
    "physician": (
        "read:patient",
        "write:patient",
        "read:observation",
        "write:observation",
        "read:encounter",
        "write:encounter",
        "read:diagnosis",
        "write:diagnosis",
        "read:condition",
        "write:condition",
        "read:medication",
        "write:medication",
        "read:procedure",
        "write:procedure",
        "read:evidence",
        "read:knowledge",
        "read:memory",
        "write:memory",
        "read:allergy",
        "write:allergy",
        "read:diagnostic_report",
        "write:diagnostic_report",
        "read:care_plan",
        "write:care_plan",
        "read:goal",
        "write:goal",
        "read:organization",
        "read:practitioner",
        "read:message",
        "read:embedding",
    ),
    "nurse": (
        "read:patient",
        "read:observation",
        "write:observation",
        "read:encounter",
        "write:encounter",
        "read:medication",
        "write:medication",
        "read:condition",
        "read:knowledge",
        "read:allergy",
        "read:diagnostic_report",
        "read:care_plan",
        "read:goal",
        "read:embedding",
    ),
    "pharmacist": (
        "read:patient",
        "read:medication",
        "write:medication",
        "read:observation",
        "read:allergy",
        "read:condition",
        "read:knowledge",
        "read:embedding",
    ),
    "therapist": (
        "read:patient",
        "read:observation",
        "write:observation",
        "read:encounter",
        "write:encounter",
        "read:procedure",
        "write:procedure",
    ),
    "technician": (
        "read:patient",
        "read:observation",
        "write:observation",
        "read:procedure",
        "write:procedure",
    ),
    "administrator": ("admin:*", "audit:*"),
    "patient": ("read:own_data", "write:own_data"),
    "caregiver": ("read:patient", "read:observation", "read:encounter"),
    "agent": (
        "read:patient",
        "write:patient",
        "read:observation",
        "write:observation",
        "read:encounter",
        "write:encounter",
        "read:memory",
        "write:memory",
        "read:condition",
        "read:medication",
        "read:evidence",
        "read:knowledge",
        "read:allergy",
        "read:diagnostic_report",
        "read:care_plan",
        "read:goal",
        "read:message",
        "write:message",
        "read:embedding",
    ),
    "system": ("admin:*", "audit:*"),
    "researcher": (
        "read:patient",
        "read:observation",
        "read:encounter",
        "audit:research",
        "read:embedding",
    ),
    "auditor": ("audit:*", "read:*"),
}

ACTIONS = ("read", "write", "delete", "admin", "audit")
_PERMISSION = re.compile(r"^(read|write|delete|admin|audit|\*):([a-z_]+|\*)\Z")


def is_valid_permission(permission: str) -> bool:
    """True for `action:resource` with a known action and a lowercase resource."""
    return bool(_PERMISSION.match(permission))


def default_permissions(role: str) -> list[str]:
    return list(ROLE_DEFAULT_PERMISSIONS.get(role, ("read:basic",)))


def grants(granted: Iterable[str], required: str) -> bool:
    """Whether the granted permissions satisfy `required` (HACS wildcard rules)."""
    held = set(granted)
    if required in held or "admin:*" in held or "admin:all" in held or "*:*" in held:
        return True
    action, _, resource = required.partition(":")
    return f"{action}:*" in held or f"*:{resource}" in held


_EVERYTHING = ("admin:*", "admin:all", "*:*")


def narrowed(granted: Iterable[str], limit: Iterable[str]) -> frozenset[str]:
    """The permissions that grant exactly what both `granted` and `limit` grant.

    A token's permissions under its actor's current ones: `read:*` under
    `read:patient` leaves `read:patient`, `*:patient` under `read:*` leaves
    `read:patient`, and anything under `admin:*` stays as it is.
    """
    return frozenset(met for a in granted for b in limit if (met := _meet(a, b)) is not None)


def _meet(a: str, b: str) -> str | None:
    if a in _EVERYTHING:
        return b
    if b in _EVERYTHING:
        return a
    a_action, _, a_resource = a.partition(":")
    b_action, _, b_resource = b.partition(":")
    action = _meet_part(a_action, b_action)
    resource = _meet_part(a_resource, b_resource)
    return None if action is None or resource is None else f"{action}:{resource}"


def _meet_part(a: str, b: str) -> str | None:
    if a == "*":
        return b
    if b == "*" or a == b:
        return a
    return None
