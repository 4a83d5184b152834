"""Validate charts/hacs offline: lint, render and schema-check every values set.

For each values file in charts/hacs/ci/: `helm lint`, then `helm template`, then every
rendered object is validated
  * built-in kinds: against the Kubernetes OpenAPI schemas bundled with kubernetes-validate
    (strict: an unknown field fails), for each Kubernetes version in KUBERNETES_VERSIONS;
  * custom resources (Istio, Prometheus Operator, external-secrets, cert-manager, Argo CD):
    against the openAPIV3Schema of their CRD, kept in mesh/schemas/ (mesh/schemas/SOURCES.md);
a kind with no schema fails. The chart's bare defaults must NOT render: they configure no
transport security (neither istio.enabled nor a certificate source), and the chart refuses
with the message in DEFAULTS_REFUSAL. The rendered manifests are written to --out (emptied
of earlier *.yaml first) for checkov.

    .venv-deploy/bin/python scripts/validate_chart.py [--out build/rendered] [--extra FILE...]

Runs in .venv-deploy (scripts/install_deploy_tools.sh); exit 1 on any problem.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "hacs"
HELM = ROOT / ".tools" / "bin" / "helm"
SCHEMAS = ROOT / "mesh" / "schemas"
# The chart's kubeVersion floor and the newest release kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.29.0", "1.35.0")
NAMESPACE = "hacs"
# What `helm template` of the bare defaults must fail with (templates/_helpers.tpl).
DEFAULTS_REFUSAL = "no transport security configured"


def crd_schemas(root: Path = SCHEMAS) -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> openAPIV3Schema, from every CRD under `root`."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(root.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if not isinstance(doc, dict) or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            for version in spec["versions"]:
                schema = (version.get("schema") or {}).get("openAPIV3Schema")
                if version.get("served") and schema:
                    api = f"{spec['group']}/{version['name']}"
                    schemas[(api, spec["names"]["kind"])] = schema
    return schemas


def render(values: Path | None) -> str:
    """helm lint + helm template for one values file (None: the chart's defaults)."""
    extra = ["-f", str(values)] if values else []
    lint = subprocess.run(
        [str(HELM), "lint", str(CHART), "--strict", *extra], capture_output=True, text=True
    )
    if lint.returncode != 0:
        raise RuntimeError(f"helm lint failed:\n{lint.stdout}{lint.stderr}")
    out = subprocess.run(
        [str(HELM), "template", "hacs", str(CHART), "--namespace", NAMESPACE, *extra],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(f"helm template failed:\n{out.stderr}")
    return out.stdout


def refuses_defaults() -> str | None:
    """None when `helm template` of the bare defaults fails as it must, else the problem."""
    out = subprocess.run(
        [str(HELM), "template", "hacs", str(CHART), "--namespace", NAMESPACE],
        capture_output=True,
        text=True,
    )
    if out.returncode == 0:
        return "the defaults rendered: they must refuse (no transport security configured)"
    if DEFAULTS_REFUSAL not in out.stderr:
        return f"the defaults failed, but not with {DEFAULTS_REFUSAL!r}:\n{out.stderr}"
    return None


def validate_documents(
    docs: list[dict[str, Any]], crds: dict[tuple[str, str], dict[str, Any]], source: str
) -> tuple[Counter[str], list[str]]:
    """Validate each object; returns (objects per validator, problems)."""
    counts: Counter[str] = Counter()
    problems: list[str] = []
    for doc in docs:
        api, kind = doc.get("apiVersion", ""), doc.get("kind", "")
        name = f"{source}: {kind}/{doc.get('metadata', {}).get('name', '?')}"
        schema = crds.get((api, kind))
        if schema is not None:
            errors = sorted(
                jsonschema.Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.path)
            )
            problems += [f"{name}: {'/'.join(map(str, e.path))}: {e.message}" for e in errors]
            counts["crd-schema"] += 1
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                problems.append(f"{name}: no schema for {api} {kind} (Kubernetes {version})")
            except kubernetes_validate.ValidationError as exc:
                where = "/".join(map(str, exc.path))
                problems.append(f"{name} (Kubernetes {version}): {where}: {exc.message}")
        counts["kubernetes"] += 1
    return counts, problems


def load(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write each rendered set here (for checkov)")
    parser.add_argument("--extra", type=Path, nargs="*", default=[], help="more manifests")
    args = parser.parse_args(argv)
    if not HELM.exists():
        print(f"{HELM} is missing: run scripts/install_deploy_tools.sh", file=sys.stderr)
        return 2
    crds = crd_schemas()
    problems: list[str] = []
    refused = refuses_defaults()
    if refused:
        problems.append(f"defaults: {refused}")
    print(
        f"{'defaults':<22} refused as they must be ({DEFAULTS_REFUSAL}); "
        f"{1 if refused else 0} problems"
    )
    if args.out and args.out.exists():
        for stale in args.out.glob("*.yaml"):
            stale.unlink()
    sets: list[Path] = sorted((CHART / "ci").glob("*-values.yaml"))
    for values in sets:
        label = values.name.removesuffix("-values.yaml")
        try:
            text = render(values)
        except RuntimeError as exc:
            problems.append(f"{label}: {exc}")
            continue
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / f"{label}.yaml").write_text(text, encoding="utf-8")
        docs = load(text)
        counts, found = validate_documents(docs, crds, label)
        problems += found
        kinds = Counter(d["kind"] for d in docs)
        print(
            f"{label:<22} {len(docs):>3} objects: {counts['kubernetes']} Kubernetes-validated "
            f"(v{' and v'.join(KUBERNETES_VERSIONS)}), {counts['crd-schema']} CRD-validated "
            f"({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))}); "
            f"{len(found)} problems"
        )
    for path in args.extra:
        counts, found = validate_documents(load(path.read_text()), crds, str(path))
        problems += found
        print(f"{path}: {sum(counts.values())} objects validated; {len(found)} problems")
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)
    print(
        f"chart validation: {len(sets)} values sets and the refused defaults, "
        f"{len(problems)} problems"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
