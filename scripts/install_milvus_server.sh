#!/usr/bin/env bash
# Installs a Milvus standalone server (the `milvus` wheel: Milvus 2.3.5 with embedded
# etcd) into .venv-milvus, for the tests that point the platform at a server URI.
# Its own environment: the wheel's pins do not mix with the platform's. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv-milvus
STAMP="$VENV/.installed"
want=$(sha256sum requirements/milvus-server.txt | cut -c1-16)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/milvus-server" ]; then
  exit 0
fi
echo "==> installing a Milvus test server into $VENV (requirements/milvus-server.txt)"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
log="$VENV/pip-install.log"
"$VENV/bin/python" -m pip install -r requirements/milvus-server.txt >"$log" 2>&1 ||
  { tail -20 "$log"; echo "installing the Milvus server failed; full log in $log" >&2; exit 1; }
echo "$want" > "$STAMP"
