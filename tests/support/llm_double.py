"""A test double of the external LLM APIs: a local aiohttp server speaking their wire formats.

No LLM can be reached from the build machines, so the HTTP providers are
tested against this server on a free loopback port. It implements the parts
of the real protocols HACS uses:

* OpenAI chat completions, streamed: `POST …/v1/chat/completions` with
  `stream: true` -> `text/event-stream` of `data: {"choices": [{"delta":
  {"content": …}}]}`, a usage chunk, `data: [DONE]`; bearer authentication;
  errors as `{"error": {"message": …}}` with an HTTP status.
* Anthropic messages, streamed: `POST …/v1/messages` with `x-api-key` and
  `anthropic-version` -> `message_start`, `content_block_delta`
  (`text_delta`), `message_delta` (usage), `message_stop`; `error` events.

What it answers is chosen by the URL prefix (a "behaviour"):

* `ok`: quotes the first sentence of passage [1] of the prompt, cited "[1]";
* `hallucinate`: one supported sentence, one citing [42] (never retrieved) and
  one uncited claim;
* `slow`: waits 10 s before answering (for timeouts);
* `flaky`: 503 on the first call of each test, then `ok` (for retries);
* `limited`: always 429;
* `midstream`: one delta, then a stream error (for resets).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

OPENAI_KEY = "sk-test-openai-0123456789"
ANTHROPIC_KEY = "sk-ant-test-9876543210"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def first_sentence(prompt: str, index: int = 1) -> str:
    """The first full sentence of passage [index] in a HACS prompt (its heading skipped)."""
    block = re.search(rf"^\[{index}\] [^\n]*\n(.*?)(?=^\[\d+\] |\Z)", prompt, re.M | re.S)
    if block is None:
        return "No passage was given"
    lines = [line for line in block.group(1).splitlines() if len(line.split()) >= 6]
    text = " ".join(" ".join(lines).split())
    return re.split(r"(?<=[.!?])\s+(?=[A-Z])", text)[0].rstrip(".")


def _answer_for(behaviour: str, prompt: str) -> list[str]:
    first = first_sentence(prompt)
    if behaviour == "hallucinate":
        return [f"{first} [1].", " Aspirin cures atrial fibrillation [42].",
                " Double the dose of every drug on Mondays."]  # fmt: skip
    return [f"{first} ", "[1]."]


@dataclass
class LlmDouble:
    """The server and what it saw (requests, so tests can check keys and prompts)."""

    port: int = field(default_factory=free_port)
    requests: list[dict[str, Any]] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=dict)
    _runner: web.AppRunner | None = None
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, behaviour: str, api: str) -> str:
        path = "v1/messages" if api == "anthropic" else "v1/chat/completions"
        return f"http://127.0.0.1:{self.port}/{behaviour}/{api}/{path}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{behaviour}/openai/v1/chat/completions", self._openai)
        app.router.add_post("/{behaviour}/anthropic/v1/messages", self._anthropic)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        self._stopping.set()  # releases the `slow` handlers still waiting
        if self._runner is not None:
            await self._runner.cleanup()

    async def _common(self, request: web.Request, api: str) -> tuple[str, dict[str, Any]]:
        behaviour = request.match_info["behaviour"]
        body = await request.json()
        self.requests.append({"api": api, "behaviour": behaviour, "headers": dict(request.headers),
                              "body": body})  # fmt: skip
        self.calls[behaviour] = self.calls.get(behaviour, 0) + 1
        if behaviour == "slow":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), 10)
        return behaviour, body

    async def _openai(self, request: web.Request) -> web.StreamResponse:
        behaviour, body = await self._common(request, "openai")
        if request.headers.get("authorization") != f"Bearer {OPENAI_KEY}":
            return web.json_response({"error": {"message": "invalid api key"}}, status=401)
        if failure := self._failure(behaviour):
            return web.json_response({"error": {"message": failure[1]}}, status=failure[0])
        assert body["stream"] is True
        prompt = body["messages"][-1]["content"]
        response = await self._sse_start(request)
        parts = _answer_for(behaviour, prompt)
        for i, part in enumerate(parts):
            await self._send(
                response, None, {"choices": [{"index": 0, "delta": {"content": part}}]}
            )
            if behaviour == "midstream" and i == 0:
                await self._send(response, None, {"error": {"message": "upstream reset"}})
                return response
        usage = {"prompt_tokens": 321, "completion_tokens": 12}
        await self._send(response, None, {"choices": [], "usage": usage})
        await response.write(b"data: [DONE]\n\n")
        return response

    async def _anthropic(self, request: web.Request) -> web.StreamResponse:
        behaviour, body = await self._common(request, "anthropic")
        if request.headers.get("x-api-key") != ANTHROPIC_KEY or not request.headers.get(
            "anthropic-version"
        ):
            error = {"type": "error", "error": {"type": "authentication_error", "message": "no"}}
            return web.json_response(error, status=401)
        if failure := self._failure(behaviour):
            error = {"type": "error", "error": {"type": "api_error", "message": failure[1]}}
            return web.json_response(error, status=failure[0])
        prompt = body["messages"][-1]["content"]
        response = await self._sse_start(request)
        await self._send(response, "message_start", {"type": "message_start", "message": {
            "id": "msg_1", "role": "assistant", "usage": {"input_tokens": 250}}})  # fmt: skip
        for i, part in enumerate(_answer_for(behaviour, prompt)):
            delta = {"type": "content_block_delta", "index": 0,
                     "delta": {"type": "text_delta", "text": part}}  # fmt: skip
            await self._send(response, "content_block_delta", delta)
            if behaviour == "midstream" and i == 0:
                await self._send(response, "error", {"type": "error", "error": {
                    "type": "overloaded_error", "message": "Overloaded"}})  # fmt: skip
                return response
        end = {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
               "usage": {"output_tokens": 9}}  # fmt: skip
        await self._send(response, "message_delta", end)
        await self._send(response, "message_stop", {"type": "message_stop"})
        return response

    def _failure(self, behaviour: str) -> tuple[int, str] | None:
        if behaviour == "limited":
            return 429, "rate limit reached"
        if behaviour == "flaky" and self.calls["flaky"] == 1:
            return 503, "temporarily unavailable"
        return None

    @staticmethod
    async def _sse_start(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        return response

    @staticmethod
    async def _send(response: web.StreamResponse, event: str | None, data: object) -> None:
        head = f"event: {event}\n" if event else ""
        await response.write(f"{head}data: {json.dumps(data)}\n\n".encode())
