"""The one error map: domain errors -> gRPC status codes with google.rpc details.

Every error carries an ErrorInfo (domain "hacs.health", a reason from
hacs.common.v1.ErrorReason) plus the detail that says what to fix: BadRequest
field violations, a PreconditionFailure naming the stale etag, a QuotaFailure
naming the limit, RetryInfo for rate limits and plan quotas (when waiting helps),
ResourceInfo for NOT_FOUND, the resume cursor (ErrorInfo metadata "cursor") for a
stream's slow consumer.
Unexpected exceptions become INTERNAL with an incident id that is also logged
with the stack trace; the caller never sees the trace.

A status travels in HTTP/2 trailers, which Envoy and gRPC clients cap (60 KiB;
8 KiB by default): a message echoing a 200 KB request value would make Envoy
reset the whole upstream connection, failing other callers' calls with it. So
every text is cut to a bound and the violations listed to a byte budget (the
rest counted in a last one), keeping a status under 4 KiB.
"""

from __future__ import annotations

import logging
import uuid

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from services.common import errors

log = logging.getLogger(__name__)

ERROR_DOMAIN = "hacs.health"
STATUS_DETAILS_KEY = "grpc-status-details-bin"
MAX_MESSAGE_CHARS = 300
MAX_FIELD_CHARS = 100
MAX_DESCRIPTION_CHARS = 200
VIOLATION_BYTES = 2048


def bounded(text: str, limit: int) -> str:
    """`text`, or its start and how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit:,} more characters)"


_CODES: list[tuple[type[errors.HacsError], grpc.StatusCode]] = [
    (errors.Invalid, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.Conflict, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.Forbidden, grpc.StatusCode.PERMISSION_DENIED),
    (errors.QuotaExceeded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.OutOfRange, grpc.StatusCode.OUT_OF_RANGE),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.NotImplementedYet, grpc.StatusCode.UNIMPLEMENTED),
]


def status_code_for(exc: BaseException) -> grpc.StatusCode:
    for kind, code in _CODES:
        if isinstance(exc, kind):
            return code
    return grpc.StatusCode.INTERNAL


def to_status(exc: errors.HacsError) -> tuple[grpc.StatusCode, str, status_pb2.Status]:
    code = status_code_for(exc)
    message = bounded(exc.message, MAX_MESSAGE_CHARS)
    info = error_details_pb2.ErrorInfo(reason=f"ERROR_REASON_{exc.reason}", domain=ERROR_DOMAIN)
    details: list[object] = [info]
    if isinstance(exc, errors.Invalid):
        request = error_details_pb2.BadRequest()
        budget = VIOLATION_BYTES
        for listed, v in enumerate(exc.violations):
            violation = error_details_pb2.BadRequest.FieldViolation(
                field=bounded(v.field, MAX_FIELD_CHARS),
                description=bounded(v.description, MAX_DESCRIPTION_CHARS),
            )
            budget -= violation.ByteSize()
            if budget < 0 and listed:
                request.field_violations.add(
                    field="…", description=f"and {len(exc.violations) - listed:,} more"
                )
                break
            request.field_violations.append(violation)
        details.append(request)
    elif isinstance(exc, errors.NotFound | errors.AlreadyExists):
        details.append(
            error_details_pb2.ResourceInfo(
                resource_type=exc.resource_type,
                resource_name=bounded(exc.name, MAX_DESCRIPTION_CHARS),
                description=message,
            )
        )
    elif isinstance(exc, errors.Conflict):
        details.append(
            error_details_pb2.PreconditionFailure(
                violations=[
                    error_details_pb2.PreconditionFailure.Violation(
                        type=exc.kind,
                        subject=bounded(exc.subject, MAX_DESCRIPTION_CHARS),
                        description=message,
                    )
                ]
            )
        )
    elif isinstance(exc, errors.Forbidden) and exc.permission:
        info.metadata["permission"] = bounded(exc.permission, MAX_FIELD_CHARS)
    elif isinstance(exc, errors.SlowConsumer):
        info.metadata["cursor"] = exc.cursor
    if isinstance(exc, errors.QuotaExceeded):
        details.append(
            error_details_pb2.QuotaFailure(
                violations=[
                    error_details_pb2.QuotaFailure.Violation(
                        subject=bounded(v.subject, MAX_DESCRIPTION_CHARS),
                        description=bounded(v.description, MAX_DESCRIPTION_CHARS),
                    )
                    for v in exc.violations[:10]
                ]
            )
        )
    if isinstance(exc, errors.QuotaExceeded) and exc.retry_after_seconds is not None:
        seconds = max(exc.retry_after_seconds, 0.0)
        details.append(
            error_details_pb2.RetryInfo(
                retry_delay=duration_pb2.Duration(
                    seconds=int(seconds), nanos=int((seconds % 1) * 1e9)
                )
            )
        )
    status = status_pb2.Status(code=code.value[0], message=message)
    for detail in details:
        packed = any_pb2.Any()
        packed.Pack(detail)  # type: ignore[arg-type]
        status.details.append(packed)
    return code, message, status


def internal_status(
    exc: BaseException, method: str
) -> tuple[grpc.StatusCode, str, status_pb2.Status]:
    incident = uuid.uuid4().hex[:12]
    log.error("unexpected error in %s (incident %s)", method, incident, exc_info=exc)
    message = f"internal error (incident {incident}); the operators have the details"
    info = error_details_pb2.ErrorInfo(
        reason="ERROR_REASON_INTERNAL", domain=ERROR_DOMAIN, metadata={"incident": incident}
    )
    status = status_pb2.Status(code=code_pb2.INTERNAL, message=message)
    packed = any_pb2.Any()
    packed.Pack(info)
    status.details.append(packed)
    return grpc.StatusCode.INTERNAL, message, status
