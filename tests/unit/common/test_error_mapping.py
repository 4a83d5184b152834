from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from hacs.common.v1 import errors_pb2

from services.common import errors
from services.common.etags import concurrent_update
from services.common.runtime.error_mapping import internal_status, to_status


def _subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def test_every_domain_error_reason_is_in_the_contract() -> None:
    reasons = set(errors_pb2.ErrorReason.keys())
    for cls in [errors.HacsError, *_subclasses(errors.HacsError)]:
        assert f"ERROR_REASON_{cls.reason}" in reasons, cls


@pytest.mark.parametrize(
    ("error", "code", "detail"),
    [
        (
            errors.Invalid(errors.FieldViolation("name", "is required")),
            grpc.StatusCode.INVALID_ARGUMENT,
            error_details_pb2.BadRequest,
        ),
        (
            errors.NotFound("Actor", "tenants/a/actors/b"),
            grpc.StatusCode.NOT_FOUND,
            error_details_pb2.ResourceInfo,
        ),
        (
            errors.EtagMismatch("tenants/a", "old", "new"),
            grpc.StatusCode.FAILED_PRECONDITION,
            error_details_pb2.PreconditionFailure,
        ),
        (
            errors.RateLimited("a", 60, 2.5),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            error_details_pb2.RetryInfo,
        ),
        (
            errors.Forbidden("no", permission="read:patient"),
            grpc.StatusCode.PERMISSION_DENIED,
            error_details_pb2.ErrorInfo,
        ),
        (
            errors.NotImplementedYet("later"),
            grpc.StatusCode.UNIMPLEMENTED,
            error_details_pb2.ErrorInfo,
        ),
    ],
)
def test_domain_errors_map_to_codes_with_details(
    error: errors.HacsError, code: grpc.StatusCode, detail: type
) -> None:
    mapped_code, message, status = to_status(error)
    assert mapped_code == code
    assert status.code == code.value[0]
    assert message == error.message
    assert any(d.Is(detail.DESCRIPTOR) for d in status.details)
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    assert info.domain == "hacs.health" and info.reason == f"ERROR_REASON_{error.reason}"


def test_concurrent_update_is_an_etag_conflict() -> None:
    code, _, status = to_status(concurrent_update("tenants/a/actors/b"))
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    assert (
        code == grpc.StatusCode.FAILED_PRECONDITION and info.reason == "ERROR_REASON_ETAG_MISMATCH"
    )


def test_unexpected_errors_hide_the_trace_behind_an_incident_id() -> None:
    code, message, status = internal_status(RuntimeError("secret stack detail"), "/x.Y/Z")
    assert code == grpc.StatusCode.INTERNAL
    assert "secret" not in message and "incident" in message
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    assert info.metadata["incident"] in message


def test_a_status_stays_small_whatever_the_request_held() -> None:
    """Trailers over Envoy's 60 KiB (gRPC's 16 KiB) fail the call, or Envoy's whole upstream
    connection: messages and violations echoing request values are cut to a bound."""
    echo = "é" * 200_000
    many = [errors.FieldViolation(f"records[{i}].{echo}", f"{echo!r} is bad") for i in range(1000)]
    code, message, status = to_status(errors.Invalid(many))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert len(status.SerializeToString()) < 4096 and len(message) < 400
    bad = error_details_pb2.BadRequest()
    status.details[1].Unpack(bad)
    listed = len(bad.field_violations) - 1
    assert listed >= 1 and bad.field_violations[-1].description == f"and {1000 - listed} more"
    assert bad.field_violations[0].description.endswith("more characters)")
    _, short, _ = to_status(errors.NotFound("Actor", "tenants/a/actors/b"))
    assert "more characters" not in short
