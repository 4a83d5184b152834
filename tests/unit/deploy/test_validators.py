"""The offline validators must catch what they claim to: an unknown field, a bad value in an
Istio resource, a kind nobody has a schema for. A validator that passes everything would
make every other deploy check meaningless."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.unit.deploy.chart import HELM, ROOT, VENV_DEPLOY

pytestmark = pytest.mark.skipif(
    not (HELM.exists() and VENV_DEPLOY.exists()),
    reason="the deploy tools are not installed: run scripts/install_deploy_tools.sh",
)

BAD = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: typo}
spec:
  replica: 2
  selector: {matchLabels: {app: x}}
  template:
    metadata: {labels: {app: x}}
    spec: {containers: [{name: x, image: x}]}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: sometimes}
spec:
  mtls: {mode: SOMETIMES}
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: misused}
spec:
  secretName: misused-tls
  issuerRef: {name: hacs-ca}
  usages: [server-auth]
---
apiVersion: example.org/v1
kind: Unheard
metadata: {name: nobody}
"""


def test_the_chart_validator_refuses_unknown_fields_bad_values_and_unknown_kinds(
    tmp_path: Path,
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    out = subprocess.run(
        [str(VENV_DEPLOY), "scripts/validate_chart.py", "--extra", str(bad)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 1, out.stdout + out.stderr
    problems = out.stderr
    assert "Deployment/typo" in problems and "replica" in problems
    assert "PeerAuthentication/sometimes" in problems and "SOMETIMES" in problems
    assert "Certificate/misused" in problems and "server-auth" in problems
    assert "no schema for example.org/v1 Unheard" in problems
    # ...while the chart's own values sets render and validate clean, and its bare
    # defaults (no transport security) are refused, as they must be.
    # Two Kubernetes versions each for the Deployment and the unknown kind, one each for
    # Istio and cert-manager.
    assert "bad.yaml: 4 objects validated; 6 problems" in out.stdout
    labels = (
        "all-in-one",
        "mesh",
        "mesh-istio",
        "gpu",
        "tls-cert-manager",
        "tls-existing-secrets",
        "ratelimit",
        "ratelimit-istio",
    )
    for label in ("defaults", *labels):
        line = next(x for x in out.stdout.splitlines() if x.startswith(label + " "))
        assert line.endswith("; 0 problems"), line
    assert "defaults" in out.stdout and "refused as they must be" in out.stdout
