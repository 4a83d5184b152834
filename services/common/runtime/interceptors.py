"""Cross-cutting concerns of every RPC, each in its own interceptor.

An interceptor here is an async context manager around one call (`scope`),
so the same code serves unary and streaming RPCs. `InterceptorChain` adapts
an ordered list of them to grpc.aio; the first is outermost:

  metrics -> error mapping -> authentication -> audit -> admission -> validation -> servicer

Authentication checks the token's signature; admission asks the registry
whether its tenant, actor and API key still stand (and the tenant's rate),
again before every streamed response.

A domain error raised anywhere inside is seen by audit (outcome), turned into
a status by error mapping, and counted by metrics.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, aclosing, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias

import grpc
from google.protobuf.message import DecodeError, Message

from services.common.audit import AuditLog
from services.common.caller import CallState, begin_call, end_call
from services.common.errors import FieldViolation, HacsError, Invalid
from services.common.hourly_usage import HourlyMeter
from services.common.runtime import metrics
from services.common.runtime.admission import Admission, still_admitted
from services.common.runtime.error_mapping import (
    STATUS_DETAILS_KEY,
    internal_status,
    status_code_for,
    to_status,
)
from services.common.runtime.rate_limit import TenantRateLimiter
from services.common.tokens import TokenVerifier, bearer_token
from services.common.usage import UsageMeter
from services.common.usage_attribution import USAGE_TENANT_HEADER, usage_tenant_header
from services.common.validation import validate

log = logging.getLogger(__name__)

# Subscripted only for the type checker: grpc's runtime class is not generic.
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


@dataclass
class Call:
    """One RPC as the interceptors see it."""

    method: str
    metadata: dict[str, str]
    context: grpc.aio.ServicerContext[Any, Any]
    state: CallState
    # The request message, or an async iterator of them for client streaming.
    request: Any = None
    request_streaming: bool = False
    request_type: str = ""  # the request message's full name
    attributes: dict[str, Any] = field(default_factory=dict)
    # Awaited before each response of a server stream; raising ends the stream.
    before_response: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


class CallInterceptor(Protocol):
    def scope(self, call: Call) -> AbstractAsyncContextManager[None]: ...


class InterceptorChain(grpc.aio.ServerInterceptor):
    def __init__(self, interceptors: Iterable[CallInterceptor]) -> None:
        self._interceptors = list(interceptors)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        metadata = {
            k: v for k, v in (handler_call_details.invocation_metadata or ()) if isinstance(v, str)
        }
        return _wrap(handler, method, metadata, self._interceptors)


@dataclass(frozen=True)
class Malformed:
    """What a request's bytes became when they were not a message of its type."""

    message_type: str


def _tolerant(deserialize: Callable[[bytes], Any] | None, message_type: str) -> Any:
    """The handler's deserializer, returning Malformed instead of raising: grpc would answer
    UNKNOWN naming the exception's class; validation answers INVALID_ARGUMENT instead."""
    if deserialize is None:
        return None

    def run(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception:  # DecodeError, invalid UTF-8, nesting past protobuf's limit
            return Malformed(message_type)

    return run


def _message_type(deserialize: Any) -> str:
    owner = getattr(deserialize, "__self__", None)  # Message.FromString is bound to its class
    descriptor = getattr(owner, "DESCRIPTOR", None)
    return str(getattr(descriptor, "full_name", "request"))


def _wrap(
    handler: Handler,
    method: str,
    metadata: dict[str, str],
    interceptors: list[CallInterceptor],
) -> Handler:
    request_streaming = handler.request_streaming
    request_type = _message_type(handler.request_deserializer)
    deserialize = _tolerant(handler.request_deserializer, request_type)

    def new_call(request: Any, context: Any) -> Call:
        return Call(
            method=method,
            metadata=metadata,
            context=context,
            state=CallState(method=method),
            request=request,
            request_streaming=request_streaming,
            request_type=request_type,
        )

    async def enter(stack: AsyncExitStack, call: Call) -> None:
        stack.callback(end_call, begin_call(call.state))
        for interceptor in interceptors:
            await stack.enter_async_context(interceptor.scope(call))

    if not handler.response_streaming:
        inner: Any = handler.stream_unary if request_streaming else handler.unary_unary

        async def unary_response(request: Any, context: Any) -> Any:
            call = new_call(request, context)
            async with AsyncExitStack() as stack:
                await enter(stack, call)
                return await inner(call.request, context)

        factory = (
            grpc.stream_unary_rpc_method_handler
            if request_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        return factory(
            unary_response,
            request_deserializer=deserialize,
            response_serializer=handler.response_serializer,
        )

    inner_stream: Any = handler.stream_stream if request_streaming else handler.unary_stream

    async def stream_response(request: Any, context: Any) -> None:
        # A coroutine that writes, not a generator that yields: when the client cuts the
        # stream, grpc cancels this task wherever it waits (a send held by flow control
        # too), so every scope exits now, in this call's context. A generator would be
        # left suspended at its `yield` until the garbage collector finalised it, later,
        # in another context, with the audit record and the in-flight gauge waiting.
        call = new_call(request, context)
        async with AsyncExitStack() as stack:
            await enter(stack, call)
            checked = _Checked(context, call.before_response)
            result = inner_stream(call.request, checked)
            if inspect.isawaitable(result):  # a handler that writes with context.write()
                await result
                return
            async with aclosing(result) as responses:  # the handler's `finally` runs now
                async for response in responses:
                    await checked.write(response)

    factory = (
        grpc.stream_stream_rpc_method_handler
        if request_streaming
        else grpc.unary_stream_rpc_method_handler
    )
    return factory(
        stream_response,
        # A request stream's messages are decoded as they are read (_validated_stream).
        request_deserializer=handler.request_deserializer if request_streaming else deserialize,
        response_serializer=handler.response_serializer,
    )


class _Checked:
    """The servicer's context, whose `write` runs the call's checks before each response
    (for handlers that write with context.write() instead of yielding)."""

    def __init__(self, context: Any, checks: list[Callable[[], Awaitable[None]]]) -> None:
        self._context = context
        self._checks = checks

    async def write(self, message: Any) -> None:
        for check in self._checks:
            await check()
        await self._context.write(message)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


def _code_of(call: Call, exc: BaseException | None) -> grpc.StatusCode:
    if exc is None:
        return grpc.StatusCode.OK
    if isinstance(exc, grpc.aio.AbortError):
        code = call.context.code()
        return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN
    if isinstance(exc, HacsError):
        return status_code_for(exc)
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.INTERNAL


class MetricsInterceptor:
    """RED metrics per method and tenant, and usage metering per tenant (per day, and per
    hour with the calling actor); notes the tenant a platform service says it calls for."""

    def __init__(self, usage: UsageMeter | None, hourly: HourlyMeter | None = None) -> None:
        self._usage = usage
        self._hourly = hourly

    @asynccontextmanager
    async def scope(self, call: Call) -> AsyncIterator[None]:
        if on_behalf := call.metadata.get(USAGE_TENANT_HEADER):
            call.state.usage_tenant = usage_tenant_header(on_behalf)
        service, method = metrics.split_method(call.method)
        in_flight = metrics.IN_FLIGHT.labels(service, method)
        in_flight.inc()
        started = time.perf_counter()
        failure: BaseException | None = None
        try:
            yield
        except BaseException as exc:
            failure = exc
            raise
        finally:
            in_flight.dec()
            code = _code_of(call, failure)
            caller = call.state.caller
            tenant = caller.tenant_id if caller else ""
            metrics.REQUESTS.labels(service, method, code.name, tenant).inc()
            metrics.LATENCY.labels(service, method).observe(time.perf_counter() - started)
            if caller is not None:
                ok = code == grpc.StatusCode.OK
                if self._usage is not None:
                    self._usage.record(tenant, call.method, ok)
                if self._hourly is not None:
                    self._hourly.record_call(tenant, caller.actor_id, call.method, ok)


class ErrorMappingInterceptor:
    """Domain errors -> statuses with details; anything unexpected -> INTERNAL + incident id."""

    @asynccontextmanager
    async def scope(self, call: Call) -> AsyncIterator[None]:
        try:
            yield
        except HacsError as exc:
            code, message, status = to_status(exc)
            await call.context.abort(
                code, message, trailing_metadata=((STATUS_DETAILS_KEY, status.SerializeToString()),)
            )
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            code, message, status = internal_status(exc, call.method)
            await call.context.abort(
                code, message, trailing_metadata=((STATUS_DETAILS_KEY, status.SerializeToString()),)
            )


class AuthInterceptor:
    """Verifies the bearer token again (zero trust) and makes it the call's `Caller`.

    Methods in `open_methods` (token issue, JWKS, health, reflection) take no
    token; every other method is refused without a valid one.
    """

    def __init__(self, verifier: TokenVerifier, open_methods: Iterable[str]) -> None:
        self._verifier = verifier
        self._open = frozenset(open_methods)

    @asynccontextmanager
    async def scope(self, call: Call) -> AsyncIterator[None]:
        if call.method in self._open or call.method.startswith(
            ("/grpc.health.", "/grpc.reflection.")
        ):
            yield
            return
        call.state.caller = await self._verifier.verify(bearer_token(call.metadata))
        yield


class AuditInterceptor:
    """Appends one audit event per authenticated call, with its outcome."""

    def __init__(self, audit: AuditLog) -> None:
        self._audit = audit

    @asynccontextmanager
    async def scope(self, call: Call) -> AsyncIterator[None]:
        failure: BaseException | None = None
        # Read the peer now: once a streaming call is cancelled its context is gone,
        # and touching it from the `finally` below crashes the process.
        peer = call.context.peer()
        try:
            yield
        except BaseException as exc:
            failure = exc
            raise
        finally:
            caller = call.state.caller
            if caller is not None:
                code = _code_of(call, failure)
                details = dict(call.state.details)
                if peer:
                    details["peer"] = peer
                if request_id := call.metadata.get("x-request-id"):
                    details["request_id"] = request_id
                try:
                    await self._audit.append(
                        tenant_id=caller.tenant_id,
                        actor=caller.actor_name,
                        method=call.method,
                        permission=call.state.permission,
                        resource=call.state.resource,
                        outcome=code.name,
                        details=details,
                    )
                except Exception:
                    # An unwritable audit log must not pass silently: fail the call.
                    log.exception("audit write failed for %s", call.method)
                    if failure is None:
                        raise


class AdmissionInterceptor:
    """The caller's tenant, actor and API key must still stand (a revoked token stops here,
    on every replica within HACS_REVOCATION_SECONDS), its permissions are narrowed to the
    actor's current ones, and the tenant's plan rate applies. Streams re-check before each
    response, so a revocation also ends the streams its token opened."""

    def __init__(self, admission: Admission, limiter: TenantRateLimiter) -> None:
        self._admission = admission
        self._limiter = limiter

    @asynccontextmanager
    async def scope(self, call: Call) -> AsyncIterator[None]:
        if call.state.caller is not None:
            caller, standing = await self._admission.admit(call.state.caller)
            call.state.caller = caller
            self._limiter.take(caller.tenant_id, standing)
            admission = self._admission
            call.before_response.append(lambda: still_admitted(admission, caller))
        yield


class ValidationInterceptor:
    """Runs the registered validator of each request message (streamed ones too)."""

    @asynccontextmanager
    async def scope(self, call: Call) -> AsyncIterator[None]:
        if call.request_streaming:
            call.request = _validated_stream(call.request, call.request_type)
        else:
            _check(call.request)
        yield


def _check(request: Any) -> None:
    if isinstance(request, Malformed):
        raise Invalid(
            FieldViolation(
                "request", f"is not a {request.message_type} message: its bytes cannot be decoded"
            )
        )
    if isinstance(request, Message):
        validate(request)


async def _validated_stream(
    requests: AsyncIterator[Any], request_type: str
) -> AsyncIterator[Message]:
    incoming = aiter(requests)
    while True:
        try:
            request = await anext(incoming)
        except StopAsyncIteration:
            return
        except DecodeError:  # grpc reads a stream's messages with the unwrapped deserializer
            request = Malformed(request_type)
        _check(request)
        yield request
