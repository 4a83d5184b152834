"""Versioned clinical prompt templates: `<name>.v<version>.yaml` in this directory.

A template is never edited once released; a change is a new version, so an
answer's `prompt_template_version` always says exactly which words the model
was given. Each file has `description`, `temperature`, `system` and `user`
(Jinja2, rendered in a sandbox with `question`, `passages` and `patient`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from services.common.errors import FieldViolation, Invalid

DEFAULT_TEMPLATE = "clinical-answer"
_FILE = re.compile(r"^(?P<name>[a-z][a-z0-9-]*)\.v(?P<version>\d+)\.yaml\Z")
_ENV = SandboxedEnvironment(undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    version: str
    description: str
    temperature: float
    system: str
    user: str

    def render(self, **values: Any) -> tuple[str, str]:
        """(system prompt, user message)."""
        return (
            _ENV.from_string(self.system).render(**values).strip(),
            _ENV.from_string(self.user).render(**values).strip(),
        )


@cache
def templates() -> dict[str, dict[str, PromptTemplate]]:
    """name -> version -> template, read once from this directory."""
    found: dict[str, dict[str, PromptTemplate]] = {}
    for path in sorted(Path(__file__).parent.glob("*.yaml")):
        match = _FILE.match(path.name)
        if match is None:
            continue
        data = yaml.safe_load(path.read_text())
        template = PromptTemplate(
            name=match["name"],
            version=match["version"],
            description=str(data["description"]),
            temperature=float(data.get("temperature", 0.0)),
            system=str(data["system"]),
            user=str(data["user"]),
        )
        found.setdefault(template.name, {})[template.version] = template
    return found


def get_template(name: str, version: str) -> PromptTemplate:
    """The named template (default: clinical-answer) at a version (default: the latest)."""
    versions = templates().get(name or DEFAULT_TEMPLATE)
    if versions is None:
        raise Invalid(
            FieldViolation(
                "prompt_template",
                f"{name!r} is not a prompt template; available: {', '.join(sorted(templates()))}",
            )
        )
    if not version:
        return versions[max(versions, key=int)]
    if version not in versions:
        raise Invalid(
            FieldViolation(
                "prompt_template_version",
                f"{name or DEFAULT_TEMPLATE} has no version {version!r}; "
                f"available: {', '.join(sorted(versions, key=int))}",
            )
        )
    return versions[version]
