#!/usr/bin/env python3
"""Structural checks for the Terraform modules under terraform/ (issue 21).

Run from the repository root with the deployment validators' environment, which has
python-hcl2 (scripts/install_deploy_tools.sh creates it):

    .venv-deploy/bin/python scripts/check_terraform.py [terraform/]

`terraform init/validate` need the provider registry, which is out of reach here, so this
script checks what can be checked offline, one line per problem (file, block, what is
wrong), then a summary:

* every .tf file parses;
* every variable has a `type` and a `description`; a variable whose name reads like a
  credential is `sensitive = true`, and no sensitive variable carries a default other
  than null (a default would put the secret in the code);
* no literal secret: an attribute named like a password, secret, token or key
  (`password`, `auth_token`, `access_key`, ...) is a reference, never a string literal;
  this includes map keys inside `yamlencode({...})` values, heredocs and helm
  `set { name = "...password" value = "..." }` blocks;
* every output has a description; one named like a credential is `sensitive = true`;
* every module under <root>/modules/ declares `required_version` and a version for each
  required provider, has the outputs in REQUIRED_OUTPUTS, and installs the HACS chart
  (a `helm_release` whose `chart` is the local charts/hacs path);
* `terraform fmt -check -recursive` when terraform is on PATH.

Exit status: 0 clean, 1 problems found, 2 bad usage.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl2.api

# The outputs every cloud module must expose (the examples and docs/deploy.md use them).
REQUIRED_OUTPUTS: frozenset[str] = frozenset(
    {
        "cluster_name",
        "cluster_endpoint",
        "database_host",
        "redis_host",
        "backup_bucket",
        "kubeconfig_command",
    }
)
HACS_CHART = "charts/hacs"

# Last word of a name that marks a credential ("db_password", "authToken", "clientSecret").
_SECRET_LAST_WORDS = frozenset(
    {"password", "passwd", "passphrase", "secret", "token", "credential", "credentials"}
)
# "<word>_key" names that are credentials ("access_key", "api_key"); "kms_key" is not.
_SECRET_KEY_QUALIFIERS = frozenset(
    {
        "access",
        "account",
        "api",
        "auth",
        "master",
        "operator",
        "primary",
        "private",
        "secondary",
        "secret",
        "service",
        "shared",
        "signing",
    }
)
_SECRET_SUFFIXES = ("connection_string", "auth_string", "sas_token")
# Names that hold the *name* of a Kubernetes Secret, not its content ("existingSecret").
_SECRET_NAME_PREFIXES = frozenset({"existing"})

# Attributes whose text is prose, never scanned for embedded assignments.
_PROSE_ATTRIBUTES = frozenset({"description", "error_message"})
# Blocks whose attributes are scanned for literal secrets.
_SCANNED_BLOCKS = ("resource", "data", "module", "locals", "provider", "output")

# `'key': 'value'` (python-hcl2's rendering of object literals inside expressions),
# `key = "value"` (HCL text) and `key: "value"` (YAML in heredocs).
_EMBEDDED = (
    re.compile(r"'([A-Za-z_][\w.-]*)'\s*:\s*'([^']*)'"),
    re.compile(r"\b([A-Za-z_][\w.-]*)\s*=\s*\"([^\"]*)\""),
    re.compile(r"^\s*([A-Za-z_][\w.-]*)\s*:\s*[\"']?([^\"'\s#]+)[\"']?\s*$", re.MULTILINE),
)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


@dataclass(frozen=True)
class Problem:
    path: str
    block: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.block}: {self.message}"


@dataclass
class Report:
    files: int = 0
    variables: int = 0
    outputs: int = 0
    problems: list[Problem] = field(default_factory=list)

    def add(self, path: Path | str, block: str, message: str) -> None:
        self.problems.append(Problem(str(path), block, message))


def words(name: str) -> list[str]:
    """`clientSecret`, `client-secret`, `client.secret` -> ["client", "secret"]."""
    snake = _CAMEL.sub("_", name).lower()
    return [w for w in re.split(r"[_\-./]+", snake) if w]


def is_secret_name(name: str) -> bool:
    parts = words(name)
    if not parts or parts[0] in _SECRET_NAME_PREFIXES:
        return False
    joined = "_".join(parts)
    if joined.endswith(_SECRET_SUFFIXES):
        return True
    if parts[-1] in _SECRET_LAST_WORDS:
        return True
    return parts[-1] == "key" and len(parts) > 1 and parts[-2] in _SECRET_KEY_QUALIFIERS


def unwrap(value: Any) -> Any:
    """python-hcl2 wraps attribute values in a one-element list; take the value out."""
    while isinstance(value, list) and len(value) == 1:
        value = value[0]
    return value


def literal_string(value: Any) -> str | None:
    """The text of a string literal, or None for references, expressions and non-strings."""
    raw = unwrap(value)
    if not isinstance(raw, str):
        return None
    text: str = raw
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]  # newer python-hcl2 keeps the quotes of literals
    if "${" in text or "%{" in text:
        return None
    return text


def is_reference(text: str) -> bool:
    return "${" in text or text.startswith(("var.", "local.", "module.", "data."))


def embedded_secrets(text: str) -> Iterator[str]:
    """Names assigned literal, non-empty values inside an expression or heredoc."""
    for pattern in _EMBEDDED:
        for match in pattern.finditer(text):
            name, value = match.group(1), match.group(2)
            if value and not is_reference(value) and is_secret_name(name.rsplit(".", 1)[-1]):
                yield name


def scan_secrets(node: Any, where: str, path: Path, report: Report) -> None:
    """Walk one block's attributes and report literal secrets."""
    if isinstance(node, list):
        for item in node:
            scan_secrets(item, where, path, report)
        return
    if not isinstance(node, dict):
        return
    # helm_release `set { name = "auth.password" value = "..." }`
    set_name = literal_string(node.get("name"))
    set_value = literal_string(node.get("value"))
    if set_name and set_value and is_secret_name(set_name.rsplit(".", 1)[-1]):
        report.add(path, where, f'"{set_name}" is set to a string literal (a secret in the code)')
    for key, value in node.items():
        if key.startswith("__"):
            continue
        text = literal_string(value)
        if text and is_secret_name(key):
            report.add(path, where, f"{key} is a string literal (a secret in the code)")
            continue
        raw = unwrap(value)
        if isinstance(raw, str) and key not in _PROSE_ATTRIBUTES:
            for name in embedded_secrets(raw):
                report.add(path, where, f"{key}: {name} is assigned a string literal")
        elif isinstance(raw, dict | list):
            scan_secrets(raw, where, path, report)


def labelled(block: dict[str, Any], depth: int) -> Iterator[tuple[list[str], dict[str, Any]]]:
    """(labels, body) for `resource "a" "b" {}` (depth 2) or `variable "a" {}` (depth 1)."""
    if depth == 0:
        yield [], block
        return
    for label, inner in block.items():
        if label.startswith("__") or not isinstance(inner, dict):
            continue
        for labels, body in labelled(inner, depth - 1):
            yield [label, *labels], body


_DEPTH = {"resource": 2, "data": 2, "module": 1, "provider": 1, "output": 1, "variable": 1}


def blocks(doc: dict[str, Any], kind: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(`kind "label" ...`, body) for every block of one kind in a parsed file."""
    for block in doc.get(kind, []):
        if not isinstance(block, dict):
            continue
        for labels, body in labelled(block, _DEPTH.get(kind, 0)):
            yield " ".join([kind, *(f'"{label}"' for label in labels)]), body


def check_variable(name: str, where: str, body: dict[str, Any], path: Path, report: Report) -> None:
    if "type" not in body:
        report.add(path, where, "no type")
    description = literal_string(body.get("description"))
    if not description or not description.strip():
        report.add(path, where, "no description")
    sensitive = unwrap(body.get("sensitive")) is True
    if is_secret_name(name) and not sensitive:
        report.add(path, where, "looks like a credential but is not sensitive = true")
    secret = sensitive or is_secret_name(name)
    if secret and "default" in body and unwrap(body["default"]) is not None:
        report.add(path, where, "sensitive variable has a default (a secret in the code)")


def check_output(name: str, where: str, body: dict[str, Any], path: Path, report: Report) -> None:
    if "value" not in body:
        report.add(path, where, "no value")
    if not literal_string(body.get("description")):
        report.add(path, where, "no description")
    if is_secret_name(name) and unwrap(body.get("sensitive")) is not True:
        report.add(path, where, "looks like a credential but is not sensitive = true")


@dataclass
class ModuleFacts:
    outputs: set[str] = field(default_factory=set)
    hacs_release: bool = False
    required_version: bool = False
    providers: dict[str, bool] = field(default_factory=dict)


def check_file(path: Path, shown: Path, report: Report, facts: ModuleFacts | None) -> None:
    report.files += 1
    try:
        doc: dict[str, Any] = hcl2.api.loads(path.read_text(encoding="utf-8"))
    except Exception as exc:  # python-hcl2 raises lark errors of several kinds
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        report.add(shown, "file", f"cannot parse: {first}")
        return
    for where, body in blocks(doc, "variable"):
        report.variables += 1
        check_variable(where.split('"')[1], where, body, shown, report)
    for where, body in blocks(doc, "output"):
        report.outputs += 1
        name = where.split('"')[1]
        check_output(name, where, body, shown, report)
        if facts is not None:
            facts.outputs.add(name)
    for kind in _SCANNED_BLOCKS:
        for where, body in blocks(doc, kind):
            scan_secrets(body, where, shown, report)
    if facts is None:
        return
    for where, body in blocks(doc, "resource"):
        chart = unwrap(body.get("chart"))
        if (
            where.startswith('resource "helm_release"')
            and isinstance(chart, str)
            and chart.rstrip("/").endswith(HACS_CHART)
        ):
            facts.hacs_release = True
    for terraform in doc.get("terraform", []):
        if not isinstance(terraform, dict):
            continue
        if "required_version" in terraform:
            facts.required_version = True
        for required in terraform.get("required_providers", []):
            if not isinstance(required, dict):
                continue
            for provider, spec in required.items():
                if not provider.startswith("__"):
                    spec = unwrap(spec)
                    facts.providers[provider] = isinstance(spec, dict) and "version" in spec


def check_module(directory: Path, shown: Path, facts: ModuleFacts, report: Report) -> None:
    where = f'module "{directory.name}"'
    for name in sorted(REQUIRED_OUTPUTS - facts.outputs):
        report.add(shown, where, f'missing output "{name}"')
    if not facts.hacs_release:
        report.add(shown, where, f'no helm_release installing the HACS chart ("{HACS_CHART}")')
    if not facts.required_version:
        report.add(shown, where, "no terraform { required_version } (versions.tf)")
    if not facts.providers:
        report.add(shown, where, "no required_providers (versions.tf)")
    for provider, pinned in sorted(facts.providers.items()):
        if not pinned:
            report.add(shown, where, f'required provider "{provider}" has no version constraint')


def module_dirs(root: Path) -> list[Path]:
    """<root>/modules/<name>/ when there is a modules/ directory, else root itself."""
    modules = root / "modules"
    if modules.is_dir():
        return sorted(d for d in modules.iterdir() if d.is_dir() and any(d.glob("*.tf")))
    return [root] if any(root.glob("*.tf")) else []


def display(path: Path) -> Path:
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path


def check_fmt(root: Path, report: Report) -> None:
    terraform = shutil.which("terraform")
    if terraform is None:
        print("terraform not on PATH: fmt check skipped")
        return
    result = subprocess.run(
        [terraform, "fmt", "-check", "-recursive", "-list=true", str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode == 0:
        print("terraform fmt -check -recursive: ok")
        return
    listed = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    for name in listed:
        report.add(display(Path(name)), "file", "not formatted (run terraform fmt -recursive)")
    if not listed:
        error = (result.stderr.strip() or "failed").splitlines()[-1]
        report.add(display(root), "terraform fmt", error)


def check_tree(root: Path, fmt: bool = True) -> Report:
    report = Report()
    modules = module_dirs(root)
    in_module: set[Path] = set()
    for directory in modules:
        facts = ModuleFacts()
        files = sorted(directory.glob("*.tf"))
        for path in files:
            check_file(path, display(path), report, facts)
            in_module.add(path.resolve())
        check_module(directory, display(directory), facts, report)
    for path in sorted(root.rglob("*.tf")):
        if path.resolve() not in in_module and ".terraform" not in path.parts:
            check_file(path, display(path), report, None)
    if fmt:
        check_fmt(root, report)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("root", nargs="?", default="terraform", type=Path)
    parser.add_argument("--no-fmt", action="store_true", help="skip terraform fmt -check")
    args = parser.parse_args(argv)
    root: Path = args.root
    if not root.is_dir():
        print(f"{root}: not a directory", file=sys.stderr)
        return 2
    report = check_tree(root, fmt=not args.no_fmt)
    for problem in report.problems:
        print(problem)
    print(
        f"check_terraform: {report.files} files, {report.variables} variables, "
        f"{report.outputs} outputs, {len(report.problems)} problems"
    )
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
