#!/usr/bin/env bash
# Creates .venv and installs HACS with its pinned dependencies. Idempotent:
# it does nothing when the requirement files have not changed since last time.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP="$VENV/.hacs-installed"
want=$(cat requirements/*.txt pyproject.toml clients/python/pyproject.toml | sha256sum | cut -c1-16)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
echo "==> installing Python dependencies into $VENV (pinned in requirements/)"
log="$VENV/pip-install.log"
{
  "$VENV/bin/python" -m pip install --upgrade pip &&
  # First and alone: the CPU build of torch (a local wheel); see COMPONENTS.md.
  "$VENV/bin/python" -m pip install "$(grep '^torch==' requirements/runtime.txt)" &&
  "$VENV/bin/python" -m pip install -r requirements/dev.txt &&
  "$VENV/bin/python" -m pip install --no-deps -e clients/python -e .
} >"$log" 2>&1 || { tail -40 "$log"; echo "pip install failed; full log in $log" >&2; exit 1; }
echo "$want" > "$STAMP"
echo "==> $VENV ready"
