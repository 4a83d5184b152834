"""Request validation: one validator per request message, run before the servicer.

Service modules register validators with `@validates(SomeRequest)`; the
validation interceptor looks them up by message type, so a servicer only ever
sees requests that passed. Violations name the field (as a path) and say what
a valid value looks like, and they are all reported at once.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message

from services.common import names, wellformed
from services.common.errors import FieldViolation, Invalid

M = TypeVar("M", bound=Message)

_VALIDATORS: dict[str, Callable[[Any, Violations], None]] = {}

ID_PATTERN = re.compile(r"^[a-z][a-z0-9-]{1,38}[a-z0-9]\Z")
ID_RULE = "3-40 characters: lowercase letters, digits and hyphens, starting with a letter"


def validates(
    message_type: type[M],
) -> Callable[[Callable[[M, Violations], None]], Callable[[M, Violations], None]]:
    def register(fn: Callable[[M, Violations], None]) -> Callable[[M, Violations], None]:
        name = message_type.DESCRIPTOR.full_name
        if name in _VALIDATORS:
            raise RuntimeError(f"two validators for {name}")
        _VALIDATORS[name] = fn
        return fn

    return register


def has_validator(message_type: type[Message]) -> bool:
    return message_type.DESCRIPTOR.full_name in _VALIDATORS


def validate(message: Message) -> None:
    """Raise Invalid with every violation of `message`, or return.

    First what every request must be (wellformed.py: times in range, finite
    numbers, no NUL), then the request type's own validator, which may rely on it.
    """
    violations = Violations()
    for path, problem in wellformed.problems(message):
        violations.add(path, problem)
    violations.raise_if_any()
    fn = _VALIDATORS.get(message.DESCRIPTOR.full_name)
    if fn is not None:
        fn(message, violations)
        violations.raise_if_any()


class Violations:
    """Collects field violations; helpers for the checks most requests need."""

    def __init__(self) -> None:
        self.items: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self.items.append(FieldViolation(field, description))

    def raise_if_any(self) -> None:
        if self.items:
            raise Invalid(self.items)

    def required(self, field: str, value: object) -> bool:
        if value in ("", None, 0) or (isinstance(value, list | tuple) and not value):
            self.add(field, "is required")
            return False
        return True

    def identifier(self, field: str, value: str) -> None:
        if self.required(field, value) and not ID_PATTERN.match(value):
            self.add(field, f"{value!r} is not a valid id ({ID_RULE})")

    def max_length(self, field: str, value: str, limit: int) -> None:
        if len(value) > limit:
            self.add(field, f"is {len(value)} characters long; the limit is {limit}")

    def one_of(
        self, field: str, value: str, allowed: Iterable[str], *, allow_empty: bool = False
    ) -> None:
        allowed = tuple(allowed)
        if (value or not allow_empty) and value not in allowed:
            self.add(field, f"{value!r} is not one of: {', '.join(allowed)}")

    def resource_name(self, field: str, value: str, pattern: re.Pattern[str], example: str) -> None:
        if self.required(field, value) and not pattern.match(value):
            self.add(field, f"{value!r} is not a resource name like {example!r}")

    def parent_tenant(self, parent: str, field: str = "parent") -> str:
        """The tenant of `tenants/{tenant}` ("" when the name is not one: a violation then)."""
        self.resource_name(field, parent, names.TENANT, "tenants/{tenant}")
        match = names.TENANT.match(parent)
        return match["tenant"] if match else ""

    def in_tenant(self, field: str, name: str, tenant: str) -> None:
        """Names inside a request must lie in its parent's tenant: another tenant's is refused,
        never read as the caller's own."""
        if tenant and name and not name.startswith(f"tenants/{tenant}/"):
            self.add(field, f"{name!r} is not in tenants/{tenant}, the request's parent")

    def page(self, page_size: int) -> None:
        if page_size < 0:
            self.add("page_size", "must not be negative")

    def update_mask(self, mask: FieldMask, allowed: Iterable[str]) -> None:
        allowed = tuple(allowed)
        if not mask.paths:
            self.add(
                "update_mask", f"is required; name the fields to change ({', '.join(allowed)})"
            )
        for path in mask.paths:
            if path not in allowed:
                self.add(
                    "update_mask", f"{path!r} cannot be updated; updatable: {', '.join(allowed)}"
                )

    def labels(self, field: str, labels: dict[str, str]) -> None:
        if len(labels) > 64:
            self.add(field, "at most 64 labels")
        for key, value in labels.items():
            if not re.match(r"^[a-z][a-z0-9_.-]{0,62}\Z", key):
                self.add(
                    f"{field}[{key!r}]", "label keys are 1-63 lowercase letters, digits, _ . -"
                )
            if len(value) > 63:
                self.add(f"{field}[{key!r}]", "label values are at most 63 characters")
