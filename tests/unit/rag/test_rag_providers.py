"""The HTTP providers against a local double of the OpenAI and Anthropic APIs.

The real request/response code runs: aiohttp, the JSON bodies, SSE parsing,
timeouts, retries and fallback. Only the far end is a stand-in
(tests/support/llm_double.py), since no LLM is reachable from here.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from services.common.settings import Settings
from services.rag import providers
from services.rag.providers.base import CompletionRequest, Provider
from services.rag.providers.config import ProviderConfig, ProviderConfigError, load_providers
from services.rag.providers.fallback import Attempt, Completed, Delta, Reset, generate
from services.rag.providers.http import SharedSession
from tests.support.llm_double import ANTHROPIC_KEY, OPENAI_KEY, LlmDouble

PROMPT = CompletionRequest(
    system="Answer from the passages.",
    user="Question: dose?\n\nPassages:\n[1] Metformin — Renal impairment\n"
    "Metformin is contraindicated when eGFR is below 30 mL/min. Stop it.",
    max_tokens=200,
)


@pytest.fixture(scope="module")
async def double() -> AsyncIterator[LlmDouble]:
    server = LlmDouble()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def session() -> AsyncIterator[SharedSession]:
    shared = SharedSession()
    yield shared
    await shared.close()


def _config(double: LlmDouble, behaviour: str, api: str, **kw: object) -> ProviderConfig:
    key = ANTHROPIC_KEY if api == "anthropic" else OPENAI_KEY
    values: dict[str, object] = {
        "name": f"{behaviour}-{api}",
        "kind": api,
        "model": f"{api}-model",
        "url": double.url(behaviour, api),
        "api_key": key,
        "timeout_seconds": 2.0,
        "max_retries": 1,
    }
    values.update(kw)
    return ProviderConfig(**values)  # type: ignore[arg-type]


async def _run(chain: list[Provider]) -> list[object]:
    return [event async for event in generate(chain, PROMPT)]


@pytest.mark.parametrize("api", ["openai", "anthropic"])
async def test_streams_text_and_usage_in_each_wire_format(
    double: LlmDouble, session: SharedSession, api: str
) -> None:
    chain = providers.build([_config(double, "ok", api)], session)
    events = await _run(chain)
    deltas = [e.text for e in events if isinstance(e, Delta)]
    assert len(deltas) == 2  # streamed in pieces, not one block
    done = events[-1]
    assert isinstance(done, Completed)
    assert done.text == "Metformin is contraindicated when eGFR is below 30 mL/min [1]."
    assert done.provider == f"ok-{api}" and done.model == f"{api}-model"
    assert (done.prompt_tokens, done.completion_tokens) == (
        (321, 12) if api == "openai" else (250, 9)
    )
    sent = double.requests[-1]
    assert sent["body"]["stream"] is True and sent["body"]["max_tokens"] == 200
    if api == "anthropic":
        assert sent["body"]["system"] == PROMPT.system
        assert sent["headers"]["x-api-key"] == ANTHROPIC_KEY
    else:
        assert sent["body"]["messages"][0] == {"role": "system", "content": PROMPT.system}


async def test_a_timeout_falls_back_to_the_next_provider_at_once(
    double: LlmDouble, session: SharedSession
) -> None:
    slow = _config(double, "slow", "openai", timeout_seconds=0.3, max_retries=2)
    chain = providers.build([slow, _config(double, "ok", "anthropic")], session)
    before = double.calls.get("slow", 0)
    events = await _run(chain)
    attempts = [e for e in events if isinstance(e, Attempt)]
    assert [(a.provider, a.outcome) for a in attempts] == [
        ("slow-openai", "timeout"),
        ("ok-anthropic", "ok"),
    ]
    assert "timed out after 0.3s" in attempts[0].error
    assert double.calls["slow"] - before == 1  # a timeout is not retried on the same provider
    assert isinstance(events[-1], Completed) and events[-1].provider == "ok-anthropic"


async def test_transient_errors_are_retried_then_succeed(
    double: LlmDouble, session: SharedSession
) -> None:
    double.calls.pop("flaky", None)
    chain = providers.build([_config(double, "flaky", "openai", max_retries=2)], session)
    events = await _run(chain)
    attempts = [(e.outcome, e.provider) for e in events if isinstance(e, Attempt)]
    assert attempts == [("unavailable", "flaky-openai"), ("ok", "flaky-openai")]
    assert isinstance(events[-1], Completed)


async def test_rate_limits_and_auth_errors_are_reported_without_the_key(
    double: LlmDouble, session: SharedSession
) -> None:
    limited = _config(double, "limited", "anthropic", max_retries=1)
    wrong_key = _config(double, "ok", "openai", api_key="sk-wrong-key-42", name="badkey")
    events = await _run(providers.build([limited, wrong_key], session))
    attempts = [e for e in events if isinstance(e, Attempt)]
    assert [a.outcome for a in attempts] == ["rate_limited", "rate_limited", "error"]
    assert "HTTP 401" in attempts[-1].error and "invalid api key" in attempts[-1].error
    assert not any(isinstance(e, Completed) for e in events)  # every provider failed
    for a in attempts:
        assert "sk-wrong-key-42" not in a.error and ANTHROPIC_KEY not in a.error
    assert "sk-wrong-key-42" not in repr(wrong_key)


@pytest.mark.parametrize("api", ["openai", "anthropic"])
async def test_a_failure_mid_answer_resets_and_the_next_provider_starts_over(
    double: LlmDouble, session: SharedSession, api: str
) -> None:
    chain = providers.build(
        [_config(double, "midstream", api, max_retries=3), _config(double, "ok", "openai")],
        session,
    )
    events = await _run(chain)
    kinds = [type(e).__name__ for e in events]
    assert kinds[:3] == ["Delta", "Attempt", "Reset"]
    assert isinstance(events[2], Reset) and "midstream" in events[2].reason
    assert double.calls["midstream"] >= 1 and kinds.count("Attempt") == 2  # no retry mid-answer
    assert isinstance(events[-1], Completed) and events[-1].provider == "ok-openai"


async def test_an_unreachable_provider_is_unavailable(session: SharedSession) -> None:
    dead = ProviderConfig(
        name="dead", kind="openai", model="m", url="http://127.0.0.1:9/v1/chat/completions",
        timeout_seconds=1.0, max_retries=0,
    )  # fmt: skip
    events = await _run(providers.build([dead], session))
    assert [(e.outcome) for e in events if isinstance(e, Attempt)] == ["unavailable"]


def test_configuration_from_the_environment(tmp_path: object) -> None:
    from pathlib import Path

    key_file = Path(str(tmp_path)) / "anthropic.key"
    key_file.write_text("sk-ant-from-file\n")
    compact = _load(
        {
            "HACS_LLM_PROVIDERS": "anthropic:claude-sonnet-4, openai:llama3:8b",
            "HACS_ANTHROPIC_API_KEY_FILE": str(key_file),
            "HACS_OPENAI_API_KEY": "sk-env",
            "HACS_LLM_TIMEOUT_SECONDS": "7",
        }
    )
    assert [(c.name, c.kind, c.model) for c in compact] == [
        ("anthropic", "anthropic", "claude-sonnet-4"),
        ("openai", "openai", "llama3:8b"),
    ]
    assert compact[0].api_key == "sk-ant-from-file" and compact[1].api_key == "sk-env"
    assert compact[0].url == "https://api.anthropic.com/v1/messages"
    assert compact[1].timeout_seconds == 7.0
    entries = [{"name": "azure", "kind": "openai", "model": "gpt-4o", "auth": "api-key",
                "url": "https://x.openai.azure.com/openai/deployments/g/chat/completions",
                "api_key_env": "AZ_KEY", "max_retries": 0}]  # fmt: skip
    (azure,) = _load({"HACS_LLM_PROVIDERS": json.dumps(entries), "AZ_KEY": "k"})
    assert (azure.auth, azure.api_key, azure.max_retries) == ("api-key", "k", 0)
    assert _load({}) == []
    for bad in ("openai", '[{"kind": "cohere", "model": "x"}]', "[1, 2]", "openai:a,openai:b"):
        with pytest.raises(ProviderConfigError, match="HACS_LLM_PROVIDERS"):
            _load({"HACS_LLM_PROVIDERS": bad})
    with pytest.raises(ProviderConfigError, match="cannot read the secret file"):
        _load({"HACS_LLM_PROVIDERS": "openai:m", "HACS_OPENAI_API_KEY_FILE": "/nonexistent/key"})


def _load(environ: dict[str, str]) -> list[ProviderConfig]:
    """Providers as a process started with `environ` reads them (settings, then keys)."""
    return load_providers(Settings.from_env(environ), environ)
