"""gRPC glue for Envoy's RLS API: descriptors in, the limiter's verdicts out."""

from __future__ import annotations

from typing import Any

from google.protobuf.duration_pb2 import Duration
from hacs.third_party.envoy.config.core.v3 import base_pb2
from hacs.third_party.envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from services.ratelimit.limiter import GlobalRateLimiter, Verdict

Response = rls_pb2.RateLimitResponse


class RateLimitServicer(rls_pb2_grpc.RateLimitServiceServicer):
    def __init__(self, limiter: GlobalRateLimiter) -> None:
        self._limiter = limiter

    async def ShouldRateLimit(
        self, request: rls_pb2.RateLimitRequest, context: Any
    ) -> rls_pb2.RateLimitResponse:
        descriptors = [[(e.key, e.value) for e in d.entries] for d in request.descriptors]
        verdicts = await self._limiter.check(descriptors, request.hits_addend or 1)
        return encode(verdicts)


def encode(verdicts: list[Verdict]) -> rls_pb2.RateLimitResponse:
    refused = [v for v in verdicts if not v.allowed]
    reply = Response(
        overall_code=Response.OVER_LIMIT if refused else Response.OK,
        statuses=[_status(v) for v in verdicts],
    )
    for verdict in refused[:1]:
        if verdict.charge is not None:  # the refusal says which limit: as the local one does
            reply.response_headers_to_add.append(
                base_pb2.HeaderValue(key="x-hacs-rate-limited", value=verdict.charge.kind)
            )
    return reply


def _status(verdict: Verdict) -> Response.DescriptorStatus:
    status = Response.DescriptorStatus(code=Response.OK if verdict.allowed else Response.OVER_LIMIT)
    if verdict.charge is not None:
        status.current_limit.CopyFrom(
            Response.RateLimit(
                name=verdict.charge.kind,
                requests_per_unit=verdict.charge.calls_per_minute,
                unit=Response.RateLimit.MINUTE,
            )
        )
        status.limit_remaining = verdict.remaining
        reset = Duration()
        reset.FromNanoseconds(int(verdict.full_in_seconds * 1e9))
        status.duration_until_reset.CopyFrom(reset)
    return status
