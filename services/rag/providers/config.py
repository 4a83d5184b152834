"""LLM provider configuration: the settings' `HACS_LLM_PROVIDERS`, parsed once at start.

`HACS_LLM_PROVIDERS` lists the providers `Answer` tries, in order. Empty
(the default): none, and `Answer` answers extractively. Two forms:

* compact: `anthropic:claude-sonnet-4,openai:gpt-4o-mini` — `kind:model`
  entries with the kind's public endpoint and API key variable;
* JSON: a list of objects with `kind` ("openai" for any OpenAI-compatible
  server, or "anthropic") and `model`, and optionally `name` (default: the
  kind), `url` (the full chat-completions / messages endpoint),
  `api_key_env` (the variable holding the key), `api_key_file`, `auth`
  ("bearer", "api-key" for Azure, "none"), `timeout_seconds`,
  `total_timeout_seconds`, `max_retries`.

Keys come from `HACS_OPENAI_API_KEY` / `HACS_ANTHROPIC_API_KEY` (or the
variable an entry names), or from a file: `<variable>_FILE` or
`api_key_file` (a mounted Secret). Keys are never logged or shown: the
config's repr leaves them out. A malformed value stops the process at
start, naming the variable.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from services.common.settings import Settings, secret

KINDS = ("openai", "anthropic")
DEFAULT_URLS = {
    "openai": "https://api.openai.com/v1/chat/completions",
    "anthropic": "https://api.anthropic.com/v1/messages",
}
DEFAULT_KEY_ENV = {"openai": "HACS_OPENAI_API_KEY", "anthropic": "HACS_ANTHROPIC_API_KEY"}
VARIABLE = "HACS_LLM_PROVIDERS"


class ProviderConfigError(ValueError):
    """A malformed provider configuration; the message names the variable."""


@dataclass(frozen=True)
class ProviderConfig:
    name: str
    kind: str
    model: str
    url: str
    api_key: str = field(default="", repr=False)
    auth: str = "bearer"  # bearer | api-key | none (OpenAI-compatible only)
    timeout_seconds: float = 20.0
    total_timeout_seconds: float = 120.0
    max_retries: int = 2


def load_providers(
    settings: Settings, environ: Mapping[str, str] | None = None
) -> list[ProviderConfig]:
    """The providers `settings` name, with their keys (read from `environ`, else the process's)."""
    raw = settings.llm_providers.strip()
    if not raw:
        return []
    defaults = {
        "timeout_seconds": settings.llm_timeout_seconds,
        "total_timeout_seconds": settings.llm_total_timeout_seconds,
        "max_retries": settings.llm_max_retries,
    }
    if raw.startswith("["):
        try:
            entries = json.loads(raw)
        except ValueError as exc:
            raise ProviderConfigError(f"{VARIABLE} is not valid JSON: {exc}") from exc
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise ProviderConfigError(f"{VARIABLE} must be a JSON list of objects")
    else:
        entries = []
        for item in raw.split(","):
            kind, sep, model = item.strip().partition(":")
            if not sep or not model:
                raise ProviderConfigError(
                    f"{VARIABLE}: {item.strip()!r} is not 'kind:model' (e.g. 'openai:gpt-4o-mini')"
                )
            entries.append({"kind": kind, "model": model})
    configs = [_entry(environ, e, defaults, i) for i, e in enumerate(entries)]
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        raise ProviderConfigError(f"{VARIABLE}: provider names must be unique ({names})")
    return configs


def _entry(
    environ: Mapping[str, str] | None,
    entry: dict[str, Any],
    defaults: dict[str, Any],
    position: int,
) -> ProviderConfig:
    where = f"{VARIABLE}[{position}]"
    kind = str(entry.get("kind", ""))
    if kind not in KINDS:
        raise ProviderConfigError(f"{where}: kind {kind!r} is not one of {', '.join(KINDS)}")
    model = str(entry.get("model", ""))
    if not model:
        raise ProviderConfigError(f"{where}: model is required")
    auth = str(entry.get("auth", "bearer"))
    if auth not in ("bearer", "api-key", "none"):
        raise ProviderConfigError(f"{where}: auth {auth!r} is not bearer, api-key or none")
    try:
        timeout = float(entry.get("timeout_seconds", defaults["timeout_seconds"]))
        total = float(entry.get("total_timeout_seconds", defaults["total_timeout_seconds"]))
        retries = int(entry.get("max_retries", defaults["max_retries"]))
    except (TypeError, ValueError) as exc:
        raise ProviderConfigError(f"{where}: {exc}") from exc
    if timeout <= 0 or total <= 0 or retries < 0:
        raise ProviderConfigError(f"{where}: timeouts must be positive and retries >= 0")
    return ProviderConfig(
        name=str(entry.get("name") or kind),
        kind=kind,
        model=model,
        url=str(entry.get("url") or DEFAULT_URLS[kind]),
        api_key=_api_key(environ, entry, kind, where),
        auth=auth,
        timeout_seconds=timeout,
        total_timeout_seconds=total,
        max_retries=retries,
    )


def _api_key(
    environ: Mapping[str, str] | None, entry: dict[str, Any], kind: str, where: str
) -> str:
    variable = str(entry.get("api_key_env") or DEFAULT_KEY_ENV[kind])
    try:
        return secret(variable, environ, file=str(entry.get("api_key_file") or ""))
    except ValueError as exc:
        raise ProviderConfigError(f"{where}: {exc}") from exc
