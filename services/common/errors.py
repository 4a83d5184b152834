"""Domain errors: what went wrong, in words a caller can act on.

Domain code raises these; one interceptor (`runtime.error_mapping`) turns them
into gRPC statuses with `google.rpc` details. Nothing else in a service needs
to know about status codes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request: its path (e.g. `tenant.display_name`) and why."""

    field: str
    description: str


class HacsError(Exception):
    """Base of every error a HACS service reports to its callers on purpose."""

    reason: str = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Invalid(HacsError):
    """The request is malformed. Maps to INVALID_ARGUMENT with a BadRequest."""

    reason = "INVALID_ARGUMENT"

    def __init__(self, violations: list[FieldViolation] | FieldViolation) -> None:
        if isinstance(violations, FieldViolation):
            violations = [violations]
        self.violations = violations
        summary = "; ".join(f"{v.field}: {v.description}" for v in violations)
        super().__init__(f"invalid request: {summary}")


class NotFound(HacsError):
    """The named resource does not exist (or is not visible to the caller)."""

    reason = "NOT_FOUND"

    def __init__(self, resource_type: str, name: str) -> None:
        super().__init__(f"{resource_type} {name!r} not found")
        self.resource_type = resource_type
        self.name = name


class AlreadyExists(HacsError):
    reason = "ALREADY_EXISTS"

    def __init__(self, resource_type: str, name: str) -> None:
        super().__init__(f"{resource_type} {name!r} already exists")
        self.resource_type = resource_type
        self.name = name


class Conflict(HacsError):
    """A stale etag or a state that forbids the change (FAILED_PRECONDITION)."""

    reason = "FAILED_PRECONDITION"

    def __init__(self, message: str, *, subject: str = "", kind: str = "STATE") -> None:
        super().__init__(message)
        self.subject = subject
        self.kind = kind


class EtagMismatch(Conflict):
    reason = "ETAG_MISMATCH"

    def __init__(self, name: str, sent: str, current: str) -> None:
        super().__init__(
            f"etag {sent!r} does not match the current etag {current!r} of {name!r}: "
            "read the resource again and retry with its etag",
            subject=name,
            kind="ETAG",
        )
        self.current = current


class Unauthenticated(HacsError):
    reason = "UNAUTHENTICATED"


class Forbidden(HacsError):
    """The caller is known but may not do this (PERMISSION_DENIED)."""

    reason = "PERMISSION_DENIED"

    def __init__(self, message: str, *, permission: str = "") -> None:
        super().__init__(message)
        self.permission = permission


@dataclass
class QuotaViolation:
    subject: str
    description: str


class QuotaExceeded(HacsError):
    """A plan limit was reached (RESOURCE_EXHAUSTED with a QuotaFailure, and a RetryInfo
    when waiting helps: `retry_after_seconds`)."""

    reason = "QUOTA_EXCEEDED"

    def __init__(
        self,
        message: str,
        violations: list[QuotaViolation] | None = None,
        *,
        retry_after_seconds: float | None = None,
    ) -> None:
        super().__init__(message)
        self.violations = violations or []
        self.retry_after_seconds = retry_after_seconds


class RateLimited(QuotaExceeded):
    reason = "RATE_LIMITED"

    def __init__(self, tenant_id: str, calls_per_minute: int, retry_after_seconds: float) -> None:
        super().__init__(
            f"tenant {tenant_id!r} exceeded its limit of {calls_per_minute} calls per minute; "
            f"retry in {retry_after_seconds:.1f}s",
            [QuotaViolation(f"tenants/{tenant_id}", f"{calls_per_minute} calls per minute")],
            retry_after_seconds=retry_after_seconds,
        )


class SlowConsumer(QuotaExceeded):
    """A stream consumer fell too far behind and was cut off (RESOURCE_EXHAUSTED).

    The server will not buffer for it without bound; `cursor` is the last
    position delivered, so the consumer resumes from there and loses nothing.
    """

    reason = "SLOW_CONSUMER"

    def __init__(self, message: str, *, cursor: str, limit: str = "") -> None:
        super().__init__(message, [QuotaViolation("stream", limit)] if limit else [])
        self.cursor = cursor


class OutOfRange(HacsError):
    reason = "OUT_OF_RANGE"


class Unavailable(HacsError):
    """A dependency (database, model, index) cannot serve now; callers may retry."""

    reason = "UNAVAILABLE"


class NotImplementedYet(HacsError):
    reason = "UNIMPLEMENTED"
