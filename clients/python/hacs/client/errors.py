"""Reading the google.rpc details HACS attaches to every error."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

_DETAIL_TYPES: tuple[type[Message], ...] = (
    error_details_pb2.ErrorInfo,
    error_details_pb2.BadRequest,
    error_details_pb2.PreconditionFailure,
    error_details_pb2.QuotaFailure,
    error_details_pb2.RetryInfo,
    error_details_pb2.ResourceInfo,
)


def error_details(error: grpc.RpcError) -> dict[str, Any]:
    """The details of a failed call, keyed by type name ('ErrorInfo', 'BadRequest', ...)."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    found: dict[str, Any] = {}
    if status is None:
        return found
    for packed in status.details:
        for kind in _DETAIL_TYPES:
            if packed.Is(kind.DESCRIPTOR):
                detail = kind()
                packed.Unpack(detail)
                found[kind.DESCRIPTOR.name] = detail
    return found
