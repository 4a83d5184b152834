"""scripts/check_terraform.py against terraform/ and against broken fixtures (issue 21).

The checker runs in the deployment validators' environment (.venv-deploy, python-hcl2),
as CI and `make lint` run it; the fixtures are small modules written to tmp_path that are
valid except for the one problem each test plants.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PYTHON = ROOT / ".venv-deploy" / "bin" / "python"
CHECKER = ROOT / "scripts" / "check_terraform.py"

pytestmark = pytest.mark.skipif(
    not PYTHON.exists(),
    reason=".venv-deploy is missing: run scripts/install_deploy_tools.sh (python-hcl2 lives there)",
)

REQUIRED_OUTPUTS = (
    "cluster_name",
    "cluster_endpoint",
    "database_host",
    "redis_host",
    "backup_bucket",
    "kubeconfig_command",
)

VERSIONS = """\
terraform {
  required_version = ">= 1.6"

  required_providers {
    helm = {
      source  = "hashicorp/helm"
      version = "~> 2.17"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
  }
}
"""

MAIN = """\
resource "random_password" "database" {
  length  = 40
  special = false
}

resource "kubernetes_secret_v1" "database" {
  metadata {
    name = "hacs-database"
  }
  data = {
    password = random_password.database.result
  }
}

resource "helm_release" "hacs" {
  name   = "hacs"
  chart  = "${path.module}/../../../charts/hacs"
  values = [yamlencode({ database = { existingSecret = "hacs-database", key = "url" } })]
}
"""

VARIABLES = """\
variable "name" {
  type        = string
  description = "Prefix for every resource."
}
"""


def outputs(names: tuple[str, ...] = REQUIRED_OUTPUTS) -> str:
    return "\n".join(
        f'output "{name}" {{\n  description = "The {name}."\n  value       = "x"\n}}\n'
        for name in names
    )


def write_tree(
    root: Path,
    *,
    main: str = MAIN,
    variables: str = VARIABLES,
    outputs_tf: str | None = None,
) -> Path:
    """terraform/-shaped tree with one module, modules/fake, valid unless told otherwise."""
    module = root / "modules" / "fake"
    module.mkdir(parents=True)
    (module / "versions.tf").write_text(VERSIONS)
    (module / "main.tf").write_text(main)
    (module / "variables.tf").write_text(variables)
    (module / "outputs.tf").write_text(outputs() if outputs_tf is None else outputs_tf)
    return root


def run(root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PYTHON), str(CHECKER), str(root), *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def problem_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The `<file>: <block>: <what is wrong>` lines (not the fmt note or the summary)."""
    return [
        line
        for line in result.stdout.splitlines()
        if line.count(": ") >= 2 and not line.startswith("check_terraform:")
    ]


def test_the_real_tree_passes() -> None:
    result = run(ROOT / "terraform")
    assert result.returncode == 0, result.stdout + result.stderr
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.endswith(" 0 problems"), summary
    # Three modules and three examples: dozens of files, variables and outputs were read.
    counts = summary.split(": ", 1)[1].split(", ")
    files, variables, outputs_seen = (int(part.split()[0]) for part in counts[:3])
    assert files >= 30
    assert variables >= 100
    assert outputs_seen >= 45


def test_every_cloud_module_is_checked(tmp_path: Path) -> None:
    """A module copied without its outputs fails, so the real modules' pass means something."""
    for cloud in ("aws", "gcp", "azure"):
        source = ROOT / "terraform" / "modules" / cloud
        target = tmp_path / "modules" / cloud
        target.mkdir(parents=True)
        for path in source.glob("*.tf"):
            if path.name != "outputs.tf":
                (target / path.name).write_text(path.read_text())
    result = run(tmp_path, "--no-fmt")
    assert result.returncode == 1
    for cloud in ("aws", "gcp", "azure"):
        assert f'module "{cloud}": missing output "database_host"' in result.stdout


def test_a_valid_fixture_passes(tmp_path: Path) -> None:
    result = run(write_tree(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert problem_lines(result) == []


def test_untyped_variable_fails(tmp_path: Path) -> None:
    variables = VARIABLES + (
        '\nvariable "replicas" {\n  description = "How many."\n  default     = 2\n}\n'
    )
    result = run(write_tree(tmp_path, variables=variables))
    assert result.returncode == 1
    assert any(
        'variables.tf: variable "replicas": no type' in line for line in problem_lines(result)
    ), result.stdout


def test_variable_without_description_fails(tmp_path: Path) -> None:
    variables = VARIABLES + '\nvariable "replicas" {\n  type    = number\n  default = 2\n}\n'
    result = run(write_tree(tmp_path, variables=variables))
    assert result.returncode == 1
    assert 'variable "replicas": no description' in result.stdout


def test_literal_password_fails(tmp_path: Path) -> None:
    main = MAIN.replace("random_password.database.result", '"hunter2-hunter2"')
    result = run(write_tree(tmp_path, main=main))
    assert result.returncode == 1
    assert (
        'main.tf: resource "kubernetes_secret_v1" "database": password is a string literal'
        in result.stdout
    ), result.stdout


def test_literal_secret_inside_yamlencode_fails(tmp_path: Path) -> None:
    main = MAIN.replace(
        'key = "url" }',
        'key = "url" }, milvus = { token = "zilliz-abc123" }',
    )
    result = run(write_tree(tmp_path, main=main))
    assert result.returncode == 1
    assert "values: token is assigned a string literal" in result.stdout, result.stdout


def test_sensitive_variable_with_default_fails(tmp_path: Path) -> None:
    variables = VARIABLES + (
        '\nvariable "redis_auth_token" {\n  type        = string\n'
        '  description = "Token."\n  sensitive   = true\n  default     = "s3cr3t"\n}\n'
    )
    result = run(write_tree(tmp_path, variables=variables))
    assert result.returncode == 1
    assert 'variable "redis_auth_token": sensitive variable has a default' in result.stdout


def test_credential_variable_must_be_sensitive(tmp_path: Path) -> None:
    variables = VARIABLES + (
        '\nvariable "zilliz_token" {\n  type        = string\n  description = "Token."\n}\n'
    )
    result = run(write_tree(tmp_path, variables=variables))
    assert result.returncode == 1
    assert 'variable "zilliz_token": looks like a credential but is not sensitive' in result.stdout


def test_missing_output_fails(tmp_path: Path) -> None:
    partial = tuple(name for name in REQUIRED_OUTPUTS if name != "redis_host")
    result = run(write_tree(tmp_path, outputs_tf=outputs(partial)))
    assert result.returncode == 1
    lines = problem_lines(result)
    assert any('module "fake": missing output "redis_host"' in line for line in lines), lines
    assert not any('"database_host"' in line for line in lines)


def test_module_without_hacs_release_fails(tmp_path: Path) -> None:
    main = MAIN.replace("../../../charts/hacs", "../../../charts/other")
    result = run(write_tree(tmp_path, main=main))
    assert result.returncode == 1
    assert 'module "fake": no helm_release installing the HACS chart' in result.stdout


def test_unparseable_file_fails(tmp_path: Path) -> None:
    result = run(write_tree(tmp_path, main=MAIN + '\nresource "x" "y" {\n  a = \n'))
    assert result.returncode == 1
    assert "main.tf: file: cannot parse" in result.stdout


def test_references_and_secret_names_are_not_flagged(tmp_path: Path) -> None:
    """A Secret's *name* and a reference are fine; only literal credentials are not."""
    main = MAIN + (
        '\nresource "kubernetes_secret_v1" "redis" {\n'
        "  data = {\n    url = local.redis_url\n  }\n"
        '  metadata {\n    name = "hacs-redis"\n  }\n}\n'
        '\nlocals {\n  redis_url  = "rediss://:${random_password.database.result}@host:6379/0"\n'
        '  key_name   = "hacs-operator-key"\n  kms_key_id = "alias/hacs"\n}\n'
    )
    result = run(write_tree(tmp_path, main=main))
    assert result.returncode == 0, result.stdout
