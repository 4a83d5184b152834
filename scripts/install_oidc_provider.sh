#!/usr/bin/env bash
# Installs the OpenID Connect provider the tests start (npm's oidc-provider, pinned
# in tests/support/oidc/package-lock.json) with `npm ci`. Needs Node.js 20+ and npm.
# Does nothing when node_modules already matches the lock file.
set -euo pipefail
cd "$(dirname "$0")/../tests/support/oidc"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "error: node and npm are needed (Node.js 20 or newer)" >&2
  exit 1
fi
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
  echo "error: Node.js $(node --version) is too old; oidc-provider 9 needs 20 or newer" >&2
  exit 1
fi

# A stamp of the lock file that was installed: skip when it is unchanged.
stamp=node_modules/.hacs-installed-lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ -d node_modules/oidc-provider ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
echo "==> npm ci (tests/support/oidc)"
npm ci --no-audit --no-fund --loglevel=error
echo "$want" >"$stamp"
