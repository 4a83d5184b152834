{{/*
Names. Object names are fixed per release namespace (`hacs-<service>`) because the Envoy
edge config in files/envoy.yaml is generated offline by mesh/envoy/chart.py and names the
services' DNS names: one HACS release per namespace.
*/}}
{{- define "hacs.name" -}}hacs{{- end -}}

{{- define "hacs.services" -}}tenant records embedding search rag memory sync{{- end -}}

{{/* Whether the global rate-limit service runs (rateLimit.enabled; mesh mode only). */}}
{{- define "hacs.rateLimit" -}}
{{- if and .Values.rateLimit.enabled (eq .Values.mode "mesh") -}}true{{- end -}}
{{- end -}}

{{/* The Deployments: one per service, or one `all` hosting every service (allInOne); the
rate-limit service's when it is on (`all` never hosts it). */}}
{{- define "hacs.components" -}}
{{- if eq .Values.mode "allInOne" -}}all
{{- else -}}{{ include "hacs.services" . }}{{ if .Values.indexer.dedicated }} indexer{{ end }}{{ if include "hacs.rateLimit" . }} ratelimit{{ end }}
{{- end -}}
{{- end -}}

{{/* The components behind a headless Service of their own, with an HPA, a disruption
budget, a DestinationRule: every service, and the rate-limit service when it is on. */}}
{{- define "hacs.backed" -}}
{{ include "hacs.services" . }}{{ if include "hacs.rateLimit" . }} ratelimit{{ end }}
{{- end -}}

{{/* The components that answer the edge: every service, or the one `all`. */}}
{{- define "hacs.served" -}}
{{- if eq .Values.mode "allInOne" -}}all{{- else -}}{{ include "hacs.services" . }}{{- end -}}
{{- end -}}

{{/* The component whose pods back a service's Service. */}}
{{- define "hacs.backing" -}}
{{- if eq .root.Values.mode "allInOne" -}}all{{- else -}}{{ .component }}{{- end -}}
{{- end -}}

{{/* Services that call the embedding pods over gRPC (HACS_EMBEDDING_URL). */}}
{{- define "hacs.embeddingCallers" -}}search rag memory indexer{{- end -}}

{{- define "hacs.labels" -}}
app.kubernetes.io/name: hacs
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "search") */}}
{{- define "hacs.selector" -}}
app.kubernetes.io/name: hacs
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "hacs.componentLabels" -}}
{{ include "hacs.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* One service's values: serviceDefaults deep-merged under services.<name>. */}}
{{- define "hacs.serviceValues" -}}
{{- $own := index .root.Values.services .component | default dict -}}
{{- toYaml (mergeOverwrite (deepCopy .root.Values.serviceDefaults) (deepCopy $own)) -}}
{{- end -}}

{{/* The image: by digest when one is given (production: the release workflow's digest). */}}
{{- define "hacs.image" -}}
{{- $i := .root.Values.image -}}
{{- $tag := $i.tag | default .root.Chart.AppVersion -}}
{{- $digest := $i.digest -}}
{{- if .gpu -}}
{{- $tag = $i.gpuTag | default (printf "%s-cuda" $tag) -}}
{{- $digest = $i.gpuDigest -}}
{{- end -}}
{{- if $digest -}}
{{ printf "%s:%s@%s" $i.repository $tag $digest }}
{{- else -}}
{{ printf "%s:%s" $i.repository $tag }}
{{- end -}}
{{- end -}}

{{/* checkov skips that hold for every workload, each with its reason (checkov reads them here). */}}
{{- define "hacs.checkovSkips" -}}
checkov.io/skip1: CKV_K8S_15=Images are pinned by digest (image.digest), so IfNotPresent pulls exactly the pinned image; Always would make every pod start depend on the registry
{{- end -}}

{{- define "hacs.podSecurityContext" -}}
{{ toYaml .Values.podSecurityContext }}
{{- end -}}

{{- define "hacs.containerSecurityContext" -}}
{{ toYaml .Values.securityContext }}
{{- end -}}

{{/*
Credentials are files, never environment variables: one projected volume at
/var/run/hacs/secrets holds what a component needs, and HACS_<NAME>_FILE points at each
(Settings reads `<variable>_FILE`). (dict "root" $ "names" (list "database" "redis" ...))
*/}}
{{- define "hacs.secretRefs" -}}
{{- $v := .root.Values -}}
database: {secret: {{ $v.database.existingSecret | quote }}, key: {{ $v.database.key | quote }}, env: HACS_DATABASE_URL_FILE}
redis: {secret: {{ $v.redis.existingSecret | quote }}, key: {{ $v.redis.key | quote }}, env: HACS_REDIS_URL_FILE}
milvus: {secret: {{ $v.milvus.existingSecret | quote }}, key: {{ $v.milvus.key | quote }}, env: HACS_MILVUS_TOKEN_FILE}
operatorKey: {secret: {{ $v.operatorKey.existingSecret | quote }}, key: {{ $v.operatorKey.key | quote }}, env: HACS_BOOTSTRAP_OPERATOR_KEY_FILE}
serviceKey: {secret: {{ $v.serviceKey.existingSecret | quote }}, key: {{ $v.serviceKey.key | quote }}, env: HACS_SERVICE_API_KEY_FILE}
bootstrapServiceKey: {secret: {{ $v.serviceKey.existingSecret | quote }}, key: {{ $v.serviceKey.key | quote }}, env: HACS_BOOTSTRAP_SERVICE_KEY_FILE}
{{- end -}}

{{- define "hacs.secretFileEnv" -}}
{{- $refs := include "hacs.secretRefs" . | fromYaml -}}
{{- range $name := .names }}
{{- $ref := index $refs $name }}
{{- if $ref.secret }}
- name: {{ $ref.env }}
  value: /var/run/hacs/secrets/{{ $name }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "hacs.secretVolume" -}}
{{- $refs := include "hacs.secretRefs" . | fromYaml -}}
{{- $any := false -}}
{{- range $name := .names }}{{ if (index $refs $name).secret }}{{ $any = true }}{{ end }}{{ end -}}
{{- if not $any }}
- name: secrets
  emptyDir: {sizeLimit: 1Mi}
{{- else }}
- name: secrets
  projected:
    # Group-readable: the kubelet gives the files the pod's fsGroup.
    defaultMode: 0440
    sources:
      {{- range $name := .names }}
      {{- $ref := index $refs $name }}
      {{- if $ref.secret }}
      - secret:
          name: {{ $ref.secret }}
          items:
            - {key: {{ $ref.key }}, path: {{ $name }}}
      {{- end }}
      {{- end }}
{{- end }}
{{- end -}}

{{/* Egress every HACS pod needs: DNS, and istiod when Istio injects a sidecar. */}}
{{- define "hacs.egressCommon" -}}
- to:
    - namespaceSelector: {}
      podSelector:
        matchLabels:
          k8s-app: kube-dns
  ports:
    - {port: 53, protocol: UDP}
    - {port: 53, protocol: TCP}
{{- if .Values.istio.enabled }}
- to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: istio-system
  ports:
    - {port: 15012, protocol: TCP}
{{- end }}
{{- end -}}

{{/* Egress to PostgreSQL, Redis and Milvus: the given CIDRs, or anywhere on those ports. */}}
{{- define "hacs.egressStores" -}}
- ports:
    {{- range .Values.networkPolicy.storePorts }}
    - {port: {{ . }}, protocol: TCP}
    {{- end }}
  {{- with .Values.networkPolicy.storeCIDRs }}
  to:
    {{- range . }}
    - ipBlock: {cidr: {{ . }}}
    {{- end }}
  {{- end }}
{{- end -}}

{{/* Egress to PostgreSQL and Redis only (the rate-limit service): the store ports but
Milvus's and Zilliz Cloud's (19530, 443), to the same CIDRs. */}}
{{- define "hacs.egressDatabaseAndRedis" -}}
- ports:
    {{- range .Values.networkPolicy.storePorts }}
    {{- if not (has (int .) (list 19530 443)) }}
    - {port: {{ . }}, protocol: TCP}
    {{- end }}
    {{- end }}
  {{- with .Values.networkPolicy.storeCIDRs }}
  to:
    {{- range . }}
    - ipBlock: {cidr: {{ . }}}
    {{- end }}
  {{- end }}
{{- end -}}

{{/*
Transport (docs/deploy.md, "TLS and mTLS"): with Istio its sidecars carry mTLS and the pods
run HACS_TLS=external; without it HACS_TLS=on, each component with its own certificate
Secret (cert-manager's format) mounted at hacs.tlsDir.
*/}}
{{- define "hacs.tlsMode" -}}{{ ternary "external" "on" .Values.istio.enabled }}{{- end -}}

{{- define "hacs.tlsDir" -}}/etc/hacs/tls{{- end -}}

{{/* Every component with a certificate: the HACS components (the rate-limit service's
too, when it runs), and the edge. */}}
{{- define "hacs.tlsComponents" -}}
{{ include "hacs.components" . }}{{ if .Values.edge.enabled }} edge{{ end }}
{{- end -}}

{{/* The TLS Secret of one component: (dict "root" $ "component" "search") */}}
{{- define "hacs.tlsSecret" -}}
{{- $tls := .root.Values.tls -}}
{{- $own := index ($tls.existingSecrets | default dict) .component -}}
{{- if $own -}}
{{ $own }}
{{- else if $tls.existingSecret -}}
{{ ternary (printf $tls.existingSecret .component) $tls.existingSecret (contains "%s" $tls.existingSecret) }}
{{- else -}}
{{ printf $tls.certManager.secretName .component }}
{{- end -}}
{{- end -}}

{{/* Whether the chart requests the certificates from cert-manager. */}}
{{- define "hacs.certManager" -}}
{{- if and (not .Values.istio.enabled) .Values.tls.certManager.issuerRef -}}true{{- end -}}
{{- end -}}

{{/* Refuse a transport the pods could not start with (called once, by configmap.yaml). */}}
{{- define "hacs.tlsCheck" -}}
{{- $tls := .Values.tls -}}
{{- range $name := list "HACS_TLS" "HACS_TLS_DIR" "HACS_TLS_CERT_FILE" "HACS_TLS_KEY_FILE" "HACS_TLS_CA_FILE" "HACS_JWKS_URL" }}
{{- if hasKey $.Values.config $name }}
{{- fail (printf "config.%s: the chart sets it (HACS_TLS follows istio.enabled, the files are the mounted Secret's; docs/deploy.md#tls-and-mtls)" $name) }}
{{- end }}
{{- end }}
{{- if not (has .Values.edge.tls.clientCertificates (list "off" "optional" "require")) }}
{{- fail (printf "edge.tls.clientCertificates must be off, optional or require, not %q" (toString .Values.edge.tls.clientCertificates)) }}
{{- end }}
{{- if not .Values.istio.enabled }}
{{- $existing := or $tls.existingSecret $tls.existingSecrets }}
{{- $issuer := $tls.certManager.issuerRef | default dict }}
{{- if and $issuer (not $issuer.name) }}
{{- fail "tls.certManager.issuerRef needs a name (and kind: Issuer or ClusterIssuer)" }}
{{- end }}
{{- if and $existing $issuer }}
{{- fail "tls: the certificates come from tls.certManager.issuerRef (cert-manager issues them) or from tls.existingSecret/tls.existingSecrets (you provide them), not both" }}
{{- end }}
{{- if not (or $existing $issuer) }}
{{- fail "no transport security configured: the pods listen on every interface and refuse plaintext there. Either set istio.enabled=true (Istio's sidecars carry mTLS; the pods run HACS_TLS=external), or give the pods certificates for HACS_TLS=on: tls.certManager.issuerRef (cert-manager issues one per component) or tls.existingSecret / tls.existingSecrets (your kubernetes.io/tls Secrets with tls.crt, tls.key and ca.crt). See docs/deploy.md#tls-and-mtls" }}
{{- end }}
{{- if and $issuer (not (contains "%s" $tls.certManager.secretName)) }}
{{- fail (printf "tls.certManager.secretName must contain %%s (the component), got %q" $tls.certManager.secretName) }}
{{- end }}
{{- if and (not $tls.existingSecret) $tls.existingSecrets }}
{{- range $component := splitList " " (include "hacs.tlsComponents" .) }}
{{- if not (index $tls.existingSecrets $component) }}
{{- fail (printf "tls.existingSecrets names no Secret for the %s component (and tls.existingSecret is empty)" $component) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
Refuse a global rate limit that could not work (called once, by configmap.yaml): it needs
the mesh, the edge (its only caller) and Redis (where it counts); the chart sets its
HACS_RATELIMIT_* variables from rateLimit.* (config.* must not set them twice).
*/}}
{{- define "hacs.rateLimitCheck" -}}
{{- $rl := .Values.rateLimit -}}
{{- if $rl.enabled }}
{{- if ne .Values.mode "mesh" }}
{{- fail "rateLimit.enabled needs mode: mesh (`all` does not host the rate-limit service, and it counts in Redis shared by every edge pod)" }}
{{- end }}
{{- if not .Values.edge.enabled }}
{{- fail "rateLimit.enabled needs edge.enabled: the edge's Envoy is the rate-limit service's only caller" }}
{{- end }}
{{- if not .Values.redis.existingSecret }}
{{- fail "rateLimit.enabled needs Redis: the rate-limit service counts every bucket there. Set redis.existingSecret to the Secret holding its URL (key redis.key, e.g. rediss://:…@host:6380/0), or rateLimit.enabled=false (each Envoy then limits on its own buckets). See docs/deploy.md#global-rate-limit" }}
{{- end }}
{{- if not (has (toString $rl.failureMode) (list "open" "closed")) }}
{{- fail (printf "rateLimit.failureMode must be open or closed, not %q" (toString $rl.failureMode)) }}
{{- end }}
{{- if lt (int $rl.burstPercent) 1 }}
{{- fail (printf "rateLimit.burstPercent must be at least 1, got %v" $rl.burstPercent) }}
{{- end }}
{{- range $method, $weight := $rl.weights }}
{{- if not (regexMatch "^[A-Za-z0-9_.]+/([A-Za-z0-9_]+|\\*)$" $method) }}
{{- fail (printf "rateLimit.weights: %q is not Service/Method or Service/*" $method) }}
{{- end }}
{{- if or (lt (int $weight) 1) (gt (int $weight) 1000) }}
{{- fail (printf "rateLimit.weights.%s: the weight must be a whole number from 1 to 1000, got %v" $method $weight) }}
{{- end }}
{{- end }}
{{- range $name := list "HACS_RATELIMIT_URL" "HACS_RATELIMIT_FAILURE_MODE" "HACS_RATELIMIT_BURST_PERCENT" "HACS_RATELIMIT_WEIGHTS" }}
{{- if hasKey $.Values.config $name }}
{{- fail (printf "config.%s: with rateLimit.enabled the chart sets it from rateLimit.* (docs/deploy.md#global-rate-limit)" $name) }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* HACS_RATELIMIT_WEIGHTS from rateLimit.weights: `Service/Method=N,...`, sorted. */}}
{{- define "hacs.rateLimitWeights" -}}
{{- $pairs := list -}}
{{- range $method, $weight := .Values.rateLimit.weights -}}
{{- $pairs = append $pairs (printf "%s=%d" $method (int $weight)) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}

{{/*
The edge's Envoy config, placeholders filled (files/*.yaml from mesh/envoy/chart.py):
files/envoy[-tls][-ratelimit].yaml, by transport and by rateLimit.enabled.
*/}}
{{- define "hacs.edgeEnvoy" -}}
{{- $on := eq (include "hacs.tlsMode" .) "on" -}}
{{- $clients := .Values.edge.tls.clientCertificates -}}
{{- $file := printf "files/envoy%s%s.yaml" (ternary "-tls" "" $on) (ternary "-ratelimit" "" (eq (include "hacs.rateLimit" .) "true")) -}}
{{- .Files.Get $file
    | replace "__HACS_EDGE_CALLS_PER_MINUTE__" (.Values.edge.callsPerMinute | int | toString)
    | replace "__HACS_EDGE_TOKEN_CALLS_PER_MINUTE__" (.Values.edge.tokenCallsPerMinute | int | toString)
    | replace "__HACS_EDGE_OPEN_CALLS_PER_MINUTE__" (.Values.edge.openCallsPerMinute | int | toString)
    | replace "__HACS_EDGE_TRUSTED_PROXY_HOPS__" (.Values.edge.trustedProxyHops | int | toString)
    | replace "__HACS_EDGE_REQUIRE_CLIENT_CERTIFICATE__" (ternary "true" "false" (eq $clients "require"))
    | replace "__HACS_EDGE_CLIENT_CA__" (ternary "# " "" (eq $clients "off"))
    | replace "__HACS_RATELIMIT_FAILURE_MODE_DENY__" (ternary "true" "false" (eq (toString .Values.rateLimit.failureMode) "closed")) -}}
{{- end -}}

{{/* The TLS volume of a component's pod (HACS_TLS=on): its Secret, group-readable. */}}
{{- define "hacs.tlsVolume" -}}
- name: tls
  secret:
    secretName: {{ include "hacs.tlsSecret" . }}
    defaultMode: 0440
{{- end -}}
