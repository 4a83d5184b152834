#!/usr/bin/env bash
# The first calls a newcomer makes against a running platform (`make up`), all
# through the Envoy edge with grpcurl: operator token -> tenant (with its first
# administrator) -> an AI agent actor -> its API key -> its token -> an
# authenticated call. README.md walks through the same commands.
#
#   scripts/first-calls.sh [EDGE] [DATA_DIR]     (defaults: localhost:8080 .hacs)
set -euo pipefail
EDGE=${1:-localhost:8080}
DATA=${2:-.hacs}
export PATH="$(cd "$(dirname "$0")/.." && pwd)/.venv/bin:$PATH"
# json FIELD.PATH: print one field of the JSON reply on stdin.
json() { python3 -c 'import json, sys
value = json.load(sys.stdin)
for key in sys.argv[1].split("."):
    value = value[key]
print(value)' "$1"; }
TENANT=${HACS_DEMO_TENANT:-st-marys}

echo "1. exchange the platform operator key for a token"
OPERATOR_TOKEN=$(grpcurl -plaintext -d "{\"api_key\": \"$(cat "$DATA/operator.key")\"}" \
  "$EDGE" hacs.tenant.v1.TenantService/IssueToken | json access_token)

echo "2. create tenant $TENANT; the reply carries its first administrator's API key"
ADMIN_KEY=$(grpcurl -plaintext -H "authorization: Bearer $OPERATOR_TOKEN" \
  -d "{\"tenant_id\": \"$TENANT\", \"tenant\": {\"display_name\": \"St Mary's Hospital\", \"plan\": \"PLAN_STANDARD\"},
       \"admin\": {\"display_name\": \"Alice Admin\"}}" \
  "$EDGE" hacs.tenant.v1.TenantService/CreateTenant | json admin_api_key.secret)
ADMIN_TOKEN=$(grpcurl -plaintext -d "{\"api_key\": \"$ADMIN_KEY\"}" \
  "$EDGE" hacs.tenant.v1.TenantService/IssueToken | json access_token)

echo "3. the administrator adds an AI agent and gives it an API key"
grpcurl -plaintext -H "authorization: Bearer $ADMIN_TOKEN" \
  -d "{\"parent\": \"tenants/$TENANT\", \"actor_id\": \"triage-agent\",
       \"actor\": {\"display_name\": \"Triage Agent\", \"role\": \"agent\"}}" \
  "$EDGE" hacs.tenant.v1.TenantService/CreateActor > /dev/null
AGENT_KEY=$(grpcurl -plaintext -H "authorization: Bearer $ADMIN_TOKEN" \
  -d "{\"parent\": \"tenants/$TENANT/actors/triage-agent\", \"api_key\": {\"display_name\": \"laptop\"}}" \
  "$EDGE" hacs.tenant.v1.TenantService/CreateApiKey | json api_key.secret)

echo "4. the agent gets its own token and makes an authenticated call"
AGENT_TOKEN=$(grpcurl -plaintext -d "{\"api_key\": \"$AGENT_KEY\"}" \
  "$EDGE" hacs.tenant.v1.TenantService/IssueToken | json access_token)
grpcurl -plaintext -H "authorization: Bearer $AGENT_TOKEN" \
  -d "{\"name\": \"tenants/$TENANT/actors/triage-agent\"}" \
  "$EDGE" hacs.tenant.v1.TenantService/GetActor

echo "5. without a token the edge refuses the same call"
grpcurl -plaintext -d "{\"name\": \"tenants/$TENANT/actors/triage-agent\"}" \
  "$EDGE" hacs.tenant.v1.TenantService/GetActor || true
