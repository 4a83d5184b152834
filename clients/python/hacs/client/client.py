"""HacsClient: one channel, every service stub, token handling."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from hacs.embedding.v1 import embedding_service_pb2_grpc
from hacs.memory.v1 import memory_service_pb2_grpc
from hacs.rag.v1 import rag_service_pb2_grpc
from hacs.records.v1 import record_service_pb2_grpc
from hacs.search.v1 import search_service_pb2_grpc
from hacs.sync.v1 import sync_service_pb2_grpc
from hacs.tenant.v1 import tenant_service_pb2, tenant_service_pb2_grpc

REFRESH_BEFORE_EXPIRY_SECONDS = 60.0
TOKENLESS_METHODS = ("/IssueToken", "/GetJwks", "/ExchangeToken", "/SignInWithPassword")

# Retry UNAVAILABLE only: the server did not process the call. Anything else
# (a conflict, a quota) is an answer, not a transport failure.
_SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{}],
                "retryPolicy": {
                    "maxAttempts": 4,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)
_OPTIONS = [("grpc.service_config", _SERVICE_CONFIG), ("grpc.enable_retries", 1)]


class HacsClientError(Exception):
    pass


class HacsClient:
    def __init__(
        self,
        target: str,
        *,
        api_key: str | None = None,
        token: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        default_timeout: float = 30.0,
        token_ttl_seconds: int = 0,
        token_target: str | None = None,
    ) -> None:
        if api_key and token:
            raise HacsClientError("give an api_key or a token, not both")
        self._api_key = api_key
        self._token = token
        self._token_expiry = float("inf") if token else 0.0
        self._token_ttl = token_ttl_seconds
        self._lock = asyncio.Lock()
        decorator = _CallDecorator(self._metadata, default_timeout)
        interceptors: list[grpc.aio.ClientInterceptor] = [
            _UnaryUnary(decorator),
            _UnaryStream(decorator),
            _StreamUnary(decorator),
            _StreamStream(decorator),
        ]
        self.channel = _channel(target, credentials, interceptors)
        # Token issue has its own channel, so fetching a token never recurses; it may go to
        # another address (`token_target`: the tenant service, when `target` is one service
        # of a mesh called directly rather than through the edge).
        self._token_channel = _channel(token_target or target, credentials, [])
        self.tenant = tenant_service_pb2_grpc.TenantServiceStub(self.channel)
        self.records = record_service_pb2_grpc.RecordServiceStub(self.channel)
        self.embedding = embedding_service_pb2_grpc.EmbeddingServiceStub(self.channel)
        self.search = search_service_pb2_grpc.SearchServiceStub(self.channel)
        self.rag = rag_service_pb2_grpc.RagServiceStub(self.channel)
        self.memory = memory_service_pb2_grpc.MemoryServiceStub(self.channel)
        self.sync = sync_service_pb2_grpc.SyncServiceStub(self.channel)

    async def __aenter__(self) -> HacsClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close()
        await self._token_channel.close()

    async def token(self) -> str | None:
        """The current bearer token, fetched or refreshed from the API key when needed."""
        if self._api_key is None:
            return self._token
        async with self._lock:
            if (
                self._token
                and time.monotonic() < self._token_expiry - REFRESH_BEFORE_EXPIRY_SECONDS
            ):
                return self._token
            stub = tenant_service_pb2_grpc.TenantServiceStub(self._token_channel)
            reply = await stub.IssueToken(
                tenant_service_pb2.IssueTokenRequest(
                    api_key=self._api_key, ttl_seconds=self._token_ttl
                ),
                timeout=15,
            )
            self._token = reply.access_token
            self._token_expiry = time.monotonic() + (reply.expire_time.ToSeconds() - time.time())
            return self._token

    async def _metadata(self, method: str) -> list[tuple[str, str]]:
        if method.endswith(TOKENLESS_METHODS) or method.startswith("/grpc."):
            return []
        token = await self.token()
        return [("authorization", f"Bearer {token}")] if token else []


def _channel(
    target: str,
    credentials: grpc.ChannelCredentials | None,
    interceptors: list[grpc.aio.ClientInterceptor],
) -> grpc.aio.Channel:
    if credentials is not None:
        return grpc.aio.secure_channel(
            target, credentials, options=_OPTIONS, interceptors=interceptors
        )
    return grpc.aio.insecure_channel(target, options=_OPTIONS, interceptors=interceptors)


class _CallDecorator:
    """Adds the bearer token and a default deadline to every outgoing call."""

    def __init__(
        self, metadata: Callable[[str], Awaitable[list[tuple[str, str]]]], timeout: float
    ) -> None:
        self._metadata = metadata
        self._timeout = timeout

    async def decorate(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        for key, value in await self._metadata(method):
            if not metadata.get_all(key):
                metadata.add(key, value)
        return grpc.aio.ClientCallDetails(
            method=details.method,
            timeout=details.timeout if details.timeout is not None else self._timeout,
            metadata=metadata,
            credentials=details.credentials,
            wait_for_ready=details.wait_for_ready,
        )


class _UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, decorator: _CallDecorator) -> None:
        self._d = decorator

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(await self._d.decorate(details), request)


class _UnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, decorator: _CallDecorator) -> None:
        self._d = decorator

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(await self._d.decorate(details), request)


class _StreamUnary(grpc.aio.StreamUnaryClientInterceptor):
    def __init__(self, decorator: _CallDecorator) -> None:
        self._d = decorator

    async def intercept_stream_unary(
        self, continuation: Any, details: Any, request_iterator: Any
    ) -> Any:
        return await continuation(await self._d.decorate(details), request_iterator)


class _StreamStream(grpc.aio.StreamStreamClientInterceptor):
    def __init__(self, decorator: _CallDecorator) -> None:
        self._d = decorator

    async def intercept_stream_stream(
        self, continuation: Any, details: Any, request_iterator: Any
    ) -> Any:
        return await continuation(await self._d.decorate(details), request_iterator)
