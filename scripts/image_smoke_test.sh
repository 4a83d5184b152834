#!/usr/bin/env bash
# Runs the HACS image the way a locked-down pod does and checks that it serves:
#   read-only root file system, writable /data (a fresh directory) and /tmp (a tmpfs) only,
#   every capability dropped, no privilege escalation, the image's own user (10001).
# Then: the image's HEALTHCHECK (gRPC health, "") until healthy, every service's health,
# HTTP /readyz, one real Embed call (the model from the wheel, offline), the services chosen
# by `serve --only X` and by HACS_SERVICES, the image's own transport (HACS_TLS=on: without
# certificates `hacs serve` refuses to start and names the file; with `hacs certs`' it
# serves TLS only, its HEALTHCHECK passes over TLS, a plaintext client is refused),
# `envoy --version` and `envoy --mode validate` of the chart's edge configs, plaintext
# (Istio) and TLS with real certificates, with Envoy's buckets and with the global rate
# limit (when helm is installed), and a graceful stop on
# SIGTERM. The plaintext checks run with HACS_TLS=off on loopback addresses: the only
# place the settings allow plaintext.
#
#   scripts/image_smoke_test.sh [IMAGE]     (default localhost/hacs:<version>)
# Needs podman (root). Called by scripts/build_image.sh after the build.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*"; }
fail() { printf 'image smoke test FAILED: %s\n' "$*" >&2; exit 1; }

VERSION=$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
IMAGE=${1:-localhost/hacs:$VERSION}
TIMEOUT=${SMOKE_TIMEOUT:-240}
podman image exists "$IMAGE" || fail "no image $IMAGE (run scripts/build_image.sh)"

# podman's defaults do not run everywhere: crun refuses hybrid cgroup hierarchies
# ("cgroups in hybrid mode not supported"), and raising RLIMIT_NOFILE/NPROC to podman's
# defaults fails without CAP_SYS_RESOURCE. Take the first set of options that starts a
# container here (the options only change the runtime, never the image).
run_opts=()
for candidate in "" "--runtime runc" \
  "--runtime runc --ulimit nofile=16384:16384 --ulimit nproc=8192:8192" \
  "--ulimit nofile=16384:16384 --ulimit nproc=8192:8192"; do
  # shellcheck disable=SC2206  # word splitting intended
  opts=($candidate)
  if podman run --rm --network none "${opts[@]}" --entrypoint true "$IMAGE" >/dev/null 2>&1; then
    run_opts=("${opts[@]}")
    break
  fi
  [ "$candidate" = "--ulimit nofile=16384:16384 --ulimit nproc=8192:8192" ] &&
    fail "podman cannot start a container here: $(podman run --rm --network none --entrypoint true "$IMAGE" 2>&1 | tail -1)"
done
say "podman run options for this host: ${run_opts[*]:-(none)}"

# podman 4.3 logs an error when it cannot set up a systemd timer for the HEALTHCHECK (no
# systemd here) even with --health-interval=disable; the checks below run it themselves.
quiet() { grep -v 'unable to get systemd connection' || true; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
GRPC_PORT=$(free_port)
HTTP_PORT=$(free_port)
data=$(mktemp -d /var/tmp/hacs-smoke-data.XXXXXX)
tls_data=$(mktemp -d /var/tmp/hacs-smoke-tls.XXXXXX)
chown 10001:10001 "$data" "$tls_data"
chmod 0700 "$data" "$tls_data"
name=hacs-smoke-$$
cleanup() {
  for container in "$name" "$name-tls" "$name-only"; do
    podman rm -f "$container" >/dev/null 2>&1 || true
  done
  rm -rf "$data" "$tls_data"
}
trap cleanup EXIT

# Host networking: no CNI set-up needed; the ports are free ones on loopback.
say "starting $IMAGE: read-only root, /data=$data, /tmp tmpfs, gRPC 127.0.0.1:$GRPC_PORT"
started=$(date +%s.%N)
# --health-interval=disable: no systemd timer (there may be no systemd); the loop below runs
# the image's HEALTHCHECK itself with `podman healthcheck run`.
podman run -d --name "$name" "${run_opts[@]}" --health-interval=disable \
  --read-only --read-only-tmpfs=false --tmpfs /tmp:rw,nosuid,nodev,size=256m,mode=1777 \
  --volume "$data:/data" \
  --cap-drop ALL --security-opt no-new-privileges \
  --network host --env HACS_TLS=off \
  --env "HACS_GRPC_LISTEN=127.0.0.1:$GRPC_PORT" --env "HACS_HTTP_LISTEN=127.0.0.1:$HTTP_PORT" \
  "$IMAGE" >/dev/null 2> >(quiet >&2)

deadline=$(($(date +%s) + TIMEOUT))
until podman healthcheck run "$name" >/dev/null 2>&1; do
  state=$(podman inspect --format '{{.State.Status}}' "$name")
  if [ "$state" != running ]; then
    podman logs "$name" 2>&1 | tail -30
    fail "the container stopped ($state) before it was healthy"
  fi
  if [ "$(date +%s)" -ge "$deadline" ]; then
    podman logs "$name" 2>&1 | tail -30
    fail "not healthy after ${TIMEOUT} s"
  fi
  sleep 1
done
healthy_after=$(python3 -c "import time; print(f'{time.time() - $started:.1f}')")
say "HEALTHCHECK passed (gRPC health \"\" = SERVING) ${healthy_after} s after start"

# Every hosted service's own health status, and the HTTP readiness probe.
podman exec -i "$name" python3 - <<'EOF' || fail "a service is not SERVING"
import os, sys, urllib.request

import grpc
from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g

port = os.environ["HACS_GRPC_LISTEN"].rpartition(":")[2]
stub = g.HealthStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
bad = 0
for service in ("", "hacs.tenant.v1.TenantService", "hacs.records.v1.RecordService",
                "hacs.embedding.v1.EmbeddingService", "hacs.search.v1.SearchService",
                "hacs.rag.v1.RagService", "hacs.memory.v1.MemoryService",
                "hacs.sync.v1.SyncService"):
    status = stub.Check(h.HealthCheckRequest(service=service), timeout=5).status
    name = h.HealthCheckResponse.ServingStatus.Name(status)
    print(f"    health {service or '(overall)':<38} {name}")
    bad += status != h.HealthCheckResponse.SERVING
http = os.environ["HACS_HTTP_LISTEN"].rpartition(":")[2]
with urllib.request.urlopen(f"http://127.0.0.1:{http}/readyz", timeout=5) as reply:
    print(f"    GET /readyz -> {reply.status} {reply.read().decode()}")
sys.exit(bad)
EOF

# One real call through the stack: operator key -> token -> tenant -> admin token -> Embed.
say "an Embed call (all-MiniLM-L6-v2 from the wheel, HF offline)"
json() { python3 -c 'import json, sys
value = json.load(sys.stdin)
for key in sys.argv[1].split("."):
    value = value[key]
print(value)' "$1"; }
call() { podman exec "$name" grpcurl -plaintext "$@"; }
E=127.0.0.1:$GRPC_PORT
op_key=$(cat "$data/operator.key")
op_token=$(call -d "{\"api_key\": \"$op_key\"}" "$E" hacs.tenant.v1.TenantService/IssueToken | json access_token)
admin_key=$(call -H "authorization: Bearer $op_token" \
  -d '{"tenant_id": "smoke", "tenant": {"display_name": "Smoke", "plan": "PLAN_STANDARD"}, "admin": {"display_name": "Admin"}}' \
  "$E" hacs.tenant.v1.TenantService/CreateTenant | json admin_api_key.secret)
admin_token=$(call -d "{\"api_key\": \"$admin_key\"}" "$E" hacs.tenant.v1.TenantService/IssueToken | json access_token)
embed=$(call -H "authorization: Bearer $admin_token" -d '{"texts": ["chest pain radiating to the left arm"]}' \
  "$E" hacs.embedding.v1.EmbeddingService/Embed)
printf '%s' "$embed" | python3 -c 'import json, sys
r = json.load(sys.stdin)
print("    Embed -> model", r["model"], "on", r["device"] + ",", r["dimension"], "dimensions,",
      len(r["embeddings"][0]["values"]), "values, normalized:", r.get("normalized", False))
sys.exit(r["dimension"] != 384)' || fail "Embed did not return a 384-dimension vector: $embed"

say "user and writable paths inside the container"
podman exec "$name" sh -c 'echo "    id: $(id)"; for d in / /opt/hacs /data /tmp; do
  if (: >"$d/.probe") 2>/dev/null; then rm -f "$d/.probe"; echo "    $d writable"; else echo "    $d read-only"; fi; done
  echo "    /tmp in use: $(du -sk /tmp 2>/dev/null | cut -f1) KiB"'
echo "    /data now holds: $(find "$data" -mindepth 1 -maxdepth 1 -printf '%f ' | sort)"

# The services a process hosts: `serve --only X` (the chart's args) or HACS_SERVICES. As in
# the mesh, a process without the tenant service verifies tokens with the JWKS of one that
# has it (the container above).
only() {  # only LABEL EXPECTED podman-run-arguments...
  local label=$1 expected=$2 one=$name-only
  shift 2
  podman run -d --name "$one" "${run_opts[@]}" --health-interval=disable --read-only \
    --read-only-tmpfs=false --tmpfs /tmp:rw,size=256m,mode=1777 --network host --env HACS_TLS=off \
    --env "HACS_GRPC_LISTEN=127.0.0.1:$(free_port)" --env "HACS_HTTP_LISTEN=127.0.0.1:$(free_port)" \
    --env "HACS_JWKS_URL=http://127.0.0.1:$HTTP_PORT/.well-known/jwks.json" \
    "$@" >/dev/null 2> >(quiet >&2)
  local until=$(($(date +%s) + TIMEOUT))
  until podman healthcheck run "$one" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$until" ] || [ "$(podman inspect --format '{{.State.Status}}' "$one")" != running ]; then
      podman logs "$one" 2>&1 | tail -20
      podman rm -f "$one" >/dev/null 2>&1
      fail "$label: not healthy"
    fi
    sleep 1
  done
  serving=$(podman logs "$one" 2>&1 | grep -o 'hacs serving [a-z, ]*(' | sed 's/ *($//' | head -1)
  podman rm -f "$one" >/dev/null 2>&1
  [ "$serving" = "hacs serving $expected" ] || fail "$label: expected 'hacs serving $expected', got '$serving'"
  echo "    $label -> $serving"
}
say "choosing the services: an argument, or HACS_SERVICES"
only "args: serve --only embedding" embedding "$IMAGE" serve --only embedding
only "env: HACS_SERVICES=tenant,records" "tenant, records" --env HACS_SERVICES=tenant,records "$IMAGE"

# The image's own transport: HACS_TLS=on, every interface. Without certificates `hacs
# serve` refuses to start and names the file it needs; with `hacs certs`' development ones
# (written to /data/tls, where it looks) it serves TLS only, and its HEALTHCHECK passes.
say "the image's transport: HACS_TLS=on"
tls=$name-tls
refusal=$(podman run --rm "${run_opts[@]}" --health-interval=disable --read-only \
  --read-only-tmpfs=false --tmpfs /tmp:rw,size=256m,mode=1777 --network none \
  --volume "$tls_data:/data" "$IMAGE" 2>&1 | quiet) &&
  fail "hacs serve started without certificates: $(printf '%s' "$refusal" | tail -3)"
printf '%s\n' "$refusal" | grep -q 'cannot read the TLS certificate /data/tls/serve.pem' ||
  fail "no clear refusal without certificates: $(printf '%s' "$refusal" | tail -3)"
echo "    without certificates: $(printf '%s\n' "$refusal" | grep -o 'cannot read the TLS certificate [^;]*' | head -1)"
podman run --rm "${run_opts[@]}" --network none --volume "$tls_data:/data" "$IMAGE" \
  certs --names serve,client >/dev/null 2> >(quiet >&2)
TLS_GRPC=$(free_port)
TLS_HTTP=$(free_port)
podman run -d --name "$tls" "${run_opts[@]}" --health-interval=disable --read-only \
  --read-only-tmpfs=false --tmpfs /tmp:rw,size=256m,mode=1777 --volume "$tls_data:/data" \
  --cap-drop ALL --security-opt no-new-privileges --network host \
  --env "HACS_GRPC_LISTEN=127.0.0.1:$TLS_GRPC" --env "HACS_HTTP_LISTEN=127.0.0.1:$TLS_HTTP" \
  "$IMAGE" >/dev/null 2> >(quiet >&2)
tls_deadline=$(($(date +%s) + TIMEOUT))
until podman healthcheck run "$tls" >/dev/null 2>&1; do
  if [ "$(podman inspect --format '{{.State.Status}}' "$tls")" != running ] ||
    [ "$(date +%s)" -ge "$tls_deadline" ]; then
    podman logs "$tls" 2>&1 | tail -20
    fail "HACS_TLS=on: not healthy"
  fi
  sleep 1
done
echo "    HEALTHCHECK passed over TLS (the certificate, key and CA under /data/tls)"
podman exec "$tls" grpcurl -cacert /data/tls/ca.pem -cert /data/tls/client.pem \
  -key /data/tls/client-key.pem "127.0.0.1:$TLS_GRPC" list >/dev/null ||
  fail "HACS_TLS=on: grpcurl with a client certificate was not served"
if podman exec "$tls" grpcurl -plaintext -max-time 5 "127.0.0.1:$TLS_GRPC" list >/dev/null 2>&1; then
  fail "HACS_TLS=on: a plaintext client was served"
fi
podman exec "$tls" python3 -c 'import ssl, sys, urllib.request
context = ssl.create_default_context(cafile="/data/tls/ca.pem")
with urllib.request.urlopen(f"https://127.0.0.1:{sys.argv[1]}/readyz", timeout=5, context=context) as reply:
    print(f"    GET https://127.0.0.1/readyz -> {reply.status}; gRPC with a client certificate served, plaintext refused")' \
  "$TLS_HTTP" || fail "HACS_TLS=on: HTTPS /readyz"
podman rm -f "$tls" >/dev/null 2>&1

say "the Envoy edge from the same image"
podman run --rm "${run_opts[@]}" --health-interval=disable --read-only --network none \
  --entrypoint envoy "$IMAGE" --version 2> >(quiet >&2) | grep -v '^\s*$' | sed 's/^/    /' | head -2

# The chart's Envoy configs (helm template -> the hacs-edge ConfigMap), validated by the
# image's envoy as the edge Deployment runs it: read-only root, no capabilities, the
# ConfigMap at /etc/envoy. Plaintext (behind Istio), and TLS (HACS_TLS=on: the SDS files
# next to envoy.yaml, the edge's certificate Secret at /etc/hacs/tls and the served one at
# /etc/hacs/edge-tls, here certificates `hacs certs` makes in cert-manager's names).
helm=.tools/bin/helm
validate_edge() {  # validate_edge LABEL VALUES_FILE
  local label=$1 values=$2 edge
  edge=$(mktemp -d /var/tmp/hacs-smoke-edge.XXXXXX)
  chmod 0755 "$edge"
  mkdir -m 0755 "$edge/envoy" "$edge/tls" "$edge/certs"
  "$helm" template hacs charts/hacs --namespace hacs -f "$values" >"$edge/all.yaml" ||
    fail "helm template -f $values"
  podman run --rm -i "${run_opts[@]}" --network none --entrypoint python3 "$IMAGE" -c 'import json, sys, yaml
for doc in yaml.safe_load_all(sys.stdin):
    if doc and doc.get("kind") == "ConfigMap" and "envoy.yaml" in (doc.get("data") or {}):
        json.dump(doc["data"], sys.stdout)' <"$edge/all.yaml" >"$edge/edge.json" 2> >(quiet >&2)
  python3 -c 'import json, pathlib, sys
for name, text in json.load(open(sys.argv[1])).items():
    pathlib.Path(sys.argv[2], name).write_text(text)' "$edge/edge.json" "$edge/envoy"
  chmod 0644 "$edge"/envoy/*
  [ -s "$edge/envoy/envoy.yaml" ] || fail "no envoy.yaml in the chart's ConfigMaps ($label)"
  chown 10001:10001 "$edge/certs"
  podman run --rm "${run_opts[@]}" --network none --volume "$edge/certs:/certs" "$IMAGE" \
    certs --dir /certs --names edge >/dev/null 2> >(quiet >&2)
  cp "$edge/certs/edge.pem" "$edge/tls/tls.crt"
  cp "$edge/certs/edge-key.pem" "$edge/tls/tls.key"
  cp "$edge/certs/ca.pem" "$edge/tls/ca.crt"
  chown -R 10001:10001 "$edge/tls"
  podman run --rm "${run_opts[@]}" --health-interval=disable --read-only --read-only-tmpfs=false \
    --tmpfs /tmp --network none --cap-drop ALL --security-opt no-new-privileges \
    --volume "$edge/envoy:/etc/envoy:ro" --volume "$edge/tls:/etc/hacs/tls:ro" \
    --volume "$edge/tls:/etc/hacs/edge-tls:ro" --entrypoint envoy "$IMAGE" \
    --mode validate -c /etc/envoy/envoy.yaml --disable-hot-restart >"$edge/validate.log" 2>&1 ||
    { tail -5 "$edge/validate.log"; rm -rf "$edge"; fail "envoy refuses the chart's $label config"; }
  echo "    chart's Envoy config, $label ($(ls "$edge/envoy" | tr '\n' ' ')): $(tail -1 "$edge/validate.log")"
  rm -rf "$edge"
}
if [ -x "$helm" ] && [ -f charts/hacs/Chart.yaml ]; then
  validate_edge "behind Istio" charts/hacs/ci/mesh-istio-values.yaml
  validate_edge "TLS" charts/hacs/ci/tls-cert-manager-values.yaml
  validate_edge "TLS, global rate limit" charts/hacs/ci/ratelimit-values.yaml
else
  echo "    (no $helm: the chart's Envoy configs were not validated; scripts/install_deploy_tools.sh installs helm)"
fi

say "graceful stop (SIGTERM through tini)"
stop_started=$(date +%s.%N)
podman stop --time 30 "$name" >/dev/null 2> >(quiet >&2)
code=$(podman inspect --format '{{.State.ExitCode}}' "$name")
stopped_after=$(python3 -c "import time; print(f'{time.time() - $stop_started:.1f}')")
podman logs "$name" 2>&1 | grep -E 'hacs serving|shutting down' | cut -c1-160 | sed 's/^/    /' || true
[ "$code" = 0 ] || fail "exit code $code after SIGTERM (expected 0)"
say "image smoke test passed: healthy in ${healthy_after} s, stopped cleanly in ${stopped_after} s"
