#!/usr/bin/env bash
# `make image`: build the HACS container image from the Dockerfile without a Docker engine
# or a container registry, then smoke-test it (docs/image.md). Slow (minutes): run on
# demand, not in every CI run.
#
#   1. installs buildah, podman, mmdebstrap and runc from Debian when they are missing;
#   2. builds the base image (Debian bookworm + Python 3.11 from the Debian mirror, with
#      mmdebstrap, imported with `podman import`) unless BASE_IMAGE names one;
#   3. fills build/wheelhouse/ by running pip inside the base image with the host's pip
#      configuration (so torch resolves to the same CPU wheel as in .venv); the image build
#      then installs from it alone and needs no index;
#   4. builds the Dockerfile with `buildah bud` on that base;
#   5. runs scripts/image_smoke_test.sh: `hacs serve` with a read-only root and a
#      writable /data until the gRPC health check answers SERVING.
#
# Environment (all optional):
#   IMAGE          the tag to build (default localhost/hacs:<version>, -cuda for cuda)
#   TORCH_VARIANT  cpu (default) or cuda; cuda skips the wheelhouse and installs from
#                  PIP_INDEX_URL / TORCH_INDEX_URL (GBs of CUDA wheels; see docs/image.md)
#   BASE_IMAGE     use this base instead of building one (e.g. python:3.11-slim-bookworm
#                  where a registry is reachable)
#   DEBIAN_MIRROR, DEBIAN_SECURITY_MIRROR   where mmdebstrap fetches the base from
#   REBUILD_BASE=1 rebuild the local base even if it exists
#   WORK_DIR       scratch space for the base root file system (default /var/tmp/hacs-image)
#   PYTHON         the host Python whose pip configuration the wheelhouse follows (python3)
#   SMOKE=0        build only, skip the smoke test
#   NO_CACHE=1     rebuild every layer (default: reuse buildah's cached layers)
#   BUILDAH_ISOLATION  default chroot (works without cgroup v2 or user namespaces)
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> [%4d s] %s\n' "$SECONDS" "$*"; }
die() { printf 'build_image: %s\n' "$*" >&2; exit 1; }

TORCH_VARIANT=${TORCH_VARIANT:-cpu}
case "$TORCH_VARIANT" in cpu | cuda) ;; *) die "TORCH_VARIANT must be cpu or cuda" ;; esac
PYTHON=${PYTHON:-python3}
VERSION=$("$PYTHON" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
suffix=""
[ "$TORCH_VARIANT" = cuda ] && suffix="-cuda"
IMAGE=${IMAGE:-localhost/hacs:${VERSION}${suffix}}
LOCAL_BASE=localhost/hacs-base:bookworm-py311
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
WORK_DIR=${WORK_DIR:-/var/tmp/hacs-image}
export BUILDAH_ISOLATION=${BUILDAH_ISOLATION:-chroot}

[ "$(id -u)" = 0 ] || die "run as root: buildah/podman here use the root storage in /var/lib/containers
(rootless needs /etc/subuid and /etc/subgid ranges for your user; see docs/image.md)"

# -- 1. tools -----------------------------------------------------------------------------
need=()
for tool in buildah podman mmdebstrap runc; do
  command -v "$tool" >/dev/null || need+=("$tool")
done
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]} (Debian packages)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
say "$(buildah --version); $(podman --version); mmdebstrap $(mmdebstrap --version | awk '{print $2}')"

avail_kb=$(df -Pk /var/lib 2>/dev/null | awk 'NR == 2 {print $4}')
[ "${avail_kb:-0}" -ge $((8 * 1024 * 1024)) ] ||
  die "less than 8 GiB free under /var/lib (the image store needs ~5 GiB): $(df -h /var/lib | tail -1)"

# -- 2. base image ------------------------------------------------------------------------
if [ -n "${BASE_IMAGE:-}" ]; then
  say "base image: $BASE_IMAGE (given)"
else
  BASE_IMAGE=$LOCAL_BASE
  if [ "${REBUILD_BASE:-0}" = 1 ] || ! podman image exists "$BASE_IMAGE"; then
    say "building the base $BASE_IMAGE: Debian bookworm + python3 from $DEBIAN_MIRROR"
    mkdir -p "$WORK_DIR"
    tarball=$WORK_DIR/base-bookworm.tar
    # minbase + what python:3.11-slim-bookworm carries (CA certificates, netbase, tzdata)
    # and python3-venv (Debian splits ensurepip out of python3). No docs, man pages or
    # locales; no apt lists left behind.
    mmdebstrap --variant=minbase \
      --include=python3,python3-venv,ca-certificates,netbase,tzdata \
      --dpkgopt='path-exclude=/usr/share/man/*' \
      --dpkgopt='path-exclude=/usr/share/doc/*' \
      --dpkgopt='path-include=/usr/share/doc/*/copyright' \
      --dpkgopt='path-exclude=/usr/share/locale/*' \
      --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
      bookworm "$tarball" \
      "deb $DEBIAN_MIRROR bookworm main" \
      "deb $DEBIAN_MIRROR bookworm-updates main" \
      "deb $DEBIAN_SECURITY_MIRROR bookworm-security main"
    podman import \
      --change 'ENV LANG=C.UTF-8' \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'CMD ["python3"]' \
      "$tarball" "$BASE_IMAGE" >/dev/null
    rm -f "$tarball"
  fi
  say "base image: $BASE_IMAGE ($(podman image inspect --format '{{.Size}}' "$BASE_IMAGE" |
    awk '{printf "%.0f MB", $1 / 1e6}'))"
fi

# -- 3. wheelhouse ------------------------------------------------------------------------
# pip runs inside the base image (its Python decides environment markers and wheel tags:
# Debian's 3.11.2 needs async-timeout for redis, a 3.11.7 host would not) but with the
# host's pip configuration: its config files, its PIP_* variables and every local path
# they name (find-links directories, file:// indexes, constraint files) mounted read-only
# at the same place. So torch resolves exactly as in the host's .venv.
wheelhouse=build/wheelhouse
pip_mounts() {
  local path target
  for path in /etc/pip.conf /etc/xdg/pip "$HOME/.config/pip/pip.conf" "$HOME/.pip/pip.conf" \
    "${PIP_CONFIG_FILE:-}"; do
    [ -n "$path" ] && [ -e "$path" ] || continue
    target=$path
    case $path in "$HOME"/*) target=/root/${path#"$HOME"/} ;; esac
    printf '%s\n' "--volume=$path:$target:ro"
  done
  # A file:// index's pages link to ../../files/...: mount the index's parent directory.
  { "$PYTHON" -m pip config list 2>/dev/null; env | grep '^PIP_' || true; } |
    grep -oE "(file://)?/[^ '\"]+" | sort -u | while IFS= read -r path; do
      case $path in file://*) path=$(dirname "${path#file://}") ;; esac
      [ -e "$path" ] && printf '%s\n' "--volume=$path:$path:ro"
    done
}
# One mount per tree: drop a path that lies inside another mounted one.
pip_mounts_deduplicated() {
  pip_mounts | sort -u | awk -F'[=:]' '{ print length($2) "\t" $0 }' | sort -n | cut -f2- |
    awk -F'[=:]' '{ for (i = 1; i <= n; i++) if (index($2, seen[i] "/") == 1) next
                    seen[++n] = $2; print }'
}
if [ "$TORCH_VARIANT" = cpu ]; then
  stamp=$({ cat requirements/runtime.txt; podman image inspect --format '{{.Id}}' "$BASE_IMAGE"
    "$PYTHON" -m pip config list 2>/dev/null; env | grep '^PIP_' | sort; } | sha256sum | cut -c1-16)
  if [ "$(cat "$wheelhouse/.stamp" 2>/dev/null)" != "$stamp" ]; then
    say "filling $wheelhouse inside $BASE_IMAGE with the host's pip configuration"
    rm -rf "$wheelhouse"
    mkdir -p "$wheelhouse"
    mapfile -t mounts < <(pip_mounts_deduplicated)
    envs=()
    while IFS= read -r var; do envs+=("--env=$var"); done < <(env | grep '^PIP_' || true)
    log=$WORK_DIR/wheelhouse.log
    mkdir -p "$WORK_DIR"
    ctr=$(buildah from --pull=never "$BASE_IMAGE")
    trap 'buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
    if ! buildah run --network host "${mounts[@]}" "${envs[@]}" \
      --volume "$PWD/requirements:/req:ro" --volume "$PWD/$wheelhouse:/out" "$ctr" -- \
      sh -c 'python3 -m venv /tmp/pip && /tmp/pip/bin/python -m pip install --upgrade pip &&
             /tmp/pip/bin/pip wheel --use-pep517 --prefer-binary --wheel-dir /out \
               -r /req/runtime.txt "setuptools>=69"' >"$log" 2>&1; then
      grep -v 'is ignored: it is neither' "$log" | tail -30
      die "pip wheel failed inside $BASE_IMAGE (log: $log)"
    fi
    buildah rm "$ctr" >/dev/null
    trap - EXIT
    echo "$stamp" >"$wheelhouse/.stamp"
  fi
  ls "$wheelhouse"/torch-*.whl >/dev/null 2>&1 || die "no torch wheel in $wheelhouse"
  say "wheelhouse: $(find "$wheelhouse" -name '*.whl' | wc -l) wheels, $(du -sh "$wheelhouse" | cut -f1);" \
    "torch: $(basename "$wheelhouse"/torch-*.whl)"
else
  # No wheelhouse: the Dockerfile then installs from the indexes (build args below).
  rm -rf "$wheelhouse"
  say "TORCH_VARIANT=cuda: installing from ${TORCH_INDEX_URL:-${PIP_INDEX_URL:-https://pypi.org/simple}}" \
    "inside the build (several GB of CUDA wheels)"
fi

# -- 4. build -----------------------------------------------------------------------------
build_args=(--build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "TORCH_VARIANT=$TORCH_VARIANT"
  --label "org.opencontainers.image.version=$VERSION"
  --label "org.opencontainers.image.revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)")
for name in TORCH_INDEX_URL PIP_INDEX_URL PIP_EXTRA_INDEX_URL; do
  if [ -n "${!name:-}" ] && [ "$TORCH_VARIANT" = cuda ]; then build_args+=(--build-arg "$name=${!name}"); fi
done
say "building $IMAGE (buildah bud, isolation $BUILDAH_ISOLATION)"
build_started=$SECONDS
# --format docker keeps the HEALTHCHECK (the OCI image format has no field for it).
cache=(--layers)
[ "${NO_CACHE:-0}" = 1 ] && cache+=(--no-cache)
buildah bud --format docker --force-rm "${cache[@]}" "${build_args[@]}" --tag "$IMAGE" --file Dockerfile .
build_seconds=$((SECONDS - build_started))
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
say "built $IMAGE in ${build_seconds} s: $(awk -v s="$size" 'BEGIN {printf "%.0f MB (%.0f bytes)", s / 1e6, s}')"

# -- 5. smoke test ------------------------------------------------------------------------
if [ "${SMOKE:-1}" != 0 ]; then
  scripts/image_smoke_test.sh "$IMAGE"
fi
say "done in $SECONDS s: $IMAGE"
