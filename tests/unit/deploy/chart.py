"""Render charts/hacs with the real helm binary (scripts/install_deploy_tools.sh puts it in
.tools/bin) and hand the objects to the tests."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "charts" / "hacs"
HELM = ROOT / ".tools" / "bin" / "helm"
VENV_DEPLOY = ROOT / ".venv-deploy" / "bin" / "python"

needs_helm = pytest.mark.skipif(
    not HELM.exists(), reason="helm is not installed: run scripts/install_deploy_tools.sh"
)


class RenderError(RuntimeError):
    pass


def render(*sets: str, values: Path | None = None) -> list[dict[str, Any]]:
    """`helm template` with `--set` pairs; the rendered objects (hooks included)."""
    args = [str(HELM), "template", "hacs", str(CHART), "--namespace", "hacs"]
    for pair in sets:
        args += ["--set", pair]
    if values is not None:
        args += ["-f", str(values)]
    out = subprocess.run(args, capture_output=True, text=True)
    if out.returncode != 0:
        raise RenderError(out.stderr)
    return [d for d in yaml.safe_load_all(out.stdout) if isinstance(d, dict)]


def of_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec
