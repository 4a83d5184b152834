"""A server stream the client cuts: the interceptors and the handler end with the call.

A real grpc.aio server on loopback with the platform's `InterceptorChain`, one
server-streaming method that sends large messages as fast as flow control lets
it, and a client that reads one and cancels. The call must unwind in the task
that served it: every interceptor's scope exits with the call still current,
the handler's generator is closed (its `finally` runs) right away, and nothing
is left for the event loop's generator finaliser, which would run the exits later,
in another context, where resetting the call's context variable fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest

from services.common.caller import current_call
from services.common.runtime.interceptors import Call, InterceptorChain

METHOD = "/test.Streams/Flood"
CHUNK = b"x" * 256 * 1024  # a few of these fill the HTTP/2 window: the server waits in send


class Recorder:
    """An interceptor noting how each call's scope ended, and what call was current then."""

    def __init__(self) -> None:
        self.exits: list[tuple[str, bool]] = []
        self.exited = asyncio.Event()

    @asynccontextmanager
    async def scope(self, call: Call) -> AsyncIterator[None]:
        try:
            yield
        except BaseException as exc:
            self.exits.append((type(exc).__name__, current_call() is call.state))
            raise
        else:
            self.exits.append(("ok", current_call() is call.state))
        finally:
            self.exited.set()


@pytest.fixture
async def served() -> AsyncIterator[tuple[Recorder, dict[str, Any], grpc.aio.Channel]]:
    recorder = Recorder()
    handler_state: dict[str, Any] = {"closed": asyncio.Event(), "sent": 0, "limit": 10**9}

    async def flood(request: bytes, context: Any) -> AsyncIterator[bytes]:
        try:
            while handler_state["sent"] < handler_state["limit"]:
                handler_state["sent"] += 1
                yield CHUNK  # no await of its own: a cancel finds it suspended here
        finally:
            handler_state["closed"].set()

    handler: Any = grpc.unary_stream_rpc_method_handler(flood)
    server = grpc.aio.server(interceptors=[InterceptorChain([recorder])])
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("test.Streams", {"Flood": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    loop_errors: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: loop_errors.append(context))
    handler_state["loop_errors"] = loop_errors
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield recorder, handler_state, channel
    finally:
        await channel.close()
        await server.stop(None)
        loop.set_exception_handler(None)


async def test_a_cut_stream_unwinds_in_its_own_call(
    served: tuple[Recorder, dict[str, Any], grpc.aio.Channel],
) -> None:
    recorder, handler, channel = served
    flood: Any = channel.unary_stream(METHOD)
    call = flood(b"")
    first = await call.read()
    assert first == CHUNK
    call.cancel()

    await asyncio.wait_for(recorder.exited.wait(), 10)
    await asyncio.wait_for(handler["closed"].wait(), 10)
    # The scope saw the cancellation, with this call still the current one.
    assert recorder.exits == [("CancelledError", True)]
    await asyncio.sleep(0.2)  # room for a late finaliser to report, if one ran
    assert handler["loop_errors"] == []


async def test_a_stream_read_to_its_end_exits_cleanly(
    served: tuple[Recorder, dict[str, Any], grpc.aio.Channel],
) -> None:
    recorder, handler, channel = served
    handler["limit"] = 5  # this time the handler ends by itself after five messages
    flood: Any = channel.unary_stream(METHOD)
    received = [m async for m in flood(b"", timeout=10)]
    assert received == [CHUNK] * 5
    await asyncio.wait_for(recorder.exited.wait(), 10)
    assert recorder.exits == [("ok", True)]
    assert handler["closed"].is_set() and handler["loop_errors"] == []
