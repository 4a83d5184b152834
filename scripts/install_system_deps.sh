#!/usr/bin/env bash
# Installs the Debian packages the integration tests start as real servers
# (PostgreSQL, Redis, OpenLDAP; xmlsec1 for SAML), make, and Graphviz (`make lint`
# checks the architecture picture is rendered from its source). Skips what is already there; needs root
# (or sudo) otherwise.
set -euo pipefail

need=()
command -v make >/dev/null 2>&1 || need+=(make)
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  need+=(postgresql)
fi
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v dot >/dev/null 2>&1 || need+=(graphviz)
# Hospital sign-in, tested against real servers: OpenLDAP, and xmlsec1 for SAML signatures.
command -v slapd >/dev/null 2>&1 || [ -x /usr/sbin/slapd ] || need+=(slapd ldap-utils)
command -v xmlsec1 >/dev/null 2>&1 || need+=(xmlsec1)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "error: missing Debian packages: ${need[*]}; install them as root" >&2
    exit 1
  fi
fi
echo "==> apt-get install ${need[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
