"""Which services exist, and how to build each one into a running server.

`hacs serve` hosts every HACS service; `hacs serve --only search,rag` hosts some, and
`hacs serve --only ratelimit` the edge's global rate-limit service, which is not part of
the HACS API: it serves Envoy's contract (`envoy.service.ratelimit.v3`, vendored under
proto/hacs/third_party), takes no caller token (only Envoy calls it), and `all` leaves it
out (it needs Redis).
A service is built by its `services/<key>/wiring.py`: `KERNEL_MODULES` names
the kernel modules it uses (`services/kernel/modules.py` resolves what those
need in turn) and `register(kernel, server)` adds its servicer. A service
whose domain is not built yet is still served from its contract:
reflection lists it, its health reports NOT_SERVING, and every method answers
UNIMPLEMENTED with a message saying so, rather than the process pretending.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

from services.common.errors import NotImplementedYet
from services.kernel.modules import Kernel, resolve


@dataclass(frozen=True)
class ServiceSpec:
    key: str
    full_name: str
    proto_module: str
    # Methods callable without a token (full gRPC paths).
    open_methods: tuple[str, ...] = ()
    # False: no method takes a caller's token, so the process needs no JWKS to verify one.
    takes_tokens: bool = True

    @property
    def descriptor(self) -> ServiceDescriptor:
        module = importlib.import_module(self.proto_module)
        return module.DESCRIPTOR.services_by_name[self.full_name.rsplit(".", 1)[1]]  # type: ignore[no-any-return]

    @property
    def wiring(self) -> str:
        """The module that builds this service: `services/<key>/wiring.py`, with `register()`."""
        return f"services.{self.key}.wiring"

    @property
    def implemented(self) -> bool:
        try:
            return importlib.util.find_spec(self.wiring) is not None
        except ModuleNotFoundError:  # not even the service's package exists yet
            return False

    @property
    def kernel_modules(self) -> tuple[str, ...]:
        """The kernel modules this service declares it uses (none when not built)."""
        if not self.implemented:
            return ()
        return tuple(importlib.import_module(self.wiring).KERNEL_MODULES)

    async def register(self, kernel: Kernel, server: grpc.aio.Server) -> None:
        """Build the servicer from the kernel's parts and add it to `server`."""
        if not self.implemented:
            server.add_generic_rpc_handlers((contract_only(self),))
            return
        module = importlib.import_module(self.wiring)
        await module.register(kernel, server)


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec(
        key="tenant",
        full_name="hacs.tenant.v1.TenantService",
        proto_module="hacs.tenant.v1.tenant_service_pb2",
        open_methods=(
            "/hacs.tenant.v1.TenantService/IssueToken",
            "/hacs.tenant.v1.TenantService/GetJwks",
            # Hospital sign-in: the credential is in the request (a provider's token, a
            # directory password), as IssueToken's API key is.
            "/hacs.tenant.v1.TenantService/ExchangeToken",
            "/hacs.tenant.v1.TenantService/SignInWithPassword",
        ),
    ),
    ServiceSpec("records", "hacs.records.v1.RecordService", "hacs.records.v1.record_service_pb2"),
    ServiceSpec(
        "embedding", "hacs.embedding.v1.EmbeddingService", "hacs.embedding.v1.embedding_service_pb2"
    ),
    ServiceSpec("search", "hacs.search.v1.SearchService", "hacs.search.v1.search_service_pb2"),
    ServiceSpec("rag", "hacs.rag.v1.RagService", "hacs.rag.v1.rag_service_pb2"),
    ServiceSpec("memory", "hacs.memory.v1.MemoryService", "hacs.memory.v1.memory_service_pb2"),
    ServiceSpec("sync", "hacs.sync.v1.SyncService", "hacs.sync.v1.sync_service_pb2"),
    ServiceSpec(
        key="ratelimit",
        full_name="envoy.service.ratelimit.v3.RateLimitService",
        proto_module="hacs.third_party.envoy.service.ratelimit.v3.rls_pb2",
        open_methods=("/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit",),
        takes_tokens=False,
    ),
)

BY_KEY = {spec.key: spec for spec in SERVICES}


def kernel_modules(keys: tuple[str, ...]) -> tuple[str, ...]:
    """What a process hosting these services builds, in dependency order."""
    return resolve(module for key in keys for module in BY_KEY[key].kernel_modules)


def contract_only(spec: ServiceSpec) -> grpc.GenericRpcHandler:
    """Handlers for every method of a service not built yet: UNIMPLEMENTED, clearly."""
    descriptor = spec.descriptor
    handlers = {m.name: _unimplemented(spec.full_name, m) for m in descriptor.methods}
    return grpc.method_handlers_generic_handler(spec.full_name, handlers)


def _unimplemented(service: str, method: MethodDescriptor) -> grpc.RpcMethodHandler[Any, Any]:
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    message = (
        f"{service}/{method.name} is part of the HACS v1 contract but this release does not "
        "serve it yet"
    )

    async def refuse(request: Any, context: Any) -> Any:
        raise NotImplementedYet(message)

    kinds = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    factory = kinds[(method.client_streaming, method.server_streaming)]
    return factory(  # type: ignore[no-any-return, operator]
        refuse,
        request_deserializer=request_class.FromString,
        response_serializer=response_class.SerializeToString,
    )
