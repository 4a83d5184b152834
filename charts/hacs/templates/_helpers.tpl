{{/*
Names. Object names are fixed per release namespace (`hacs-<service>`) because the Envoy
edge config in files/envoy.yaml is generated offline by mesh/envoy/chart.py and names the
services' DNS names: one HACS release per namespace.
*/}}
{{- define "hacs.name" -}}hacs{{- end -}}

{{- define "hacs.services" -}}tenant records embedding search rag memory sync{{- end -}}

{{/* The Deployments: one per service, or one `all` hosting every service (allInOne). */}}
{{- define "hacs.components" -}}
{{- if eq .Values.mode "allInOne" -}}all
{{- else -}}{{ include "hacs.services" . }}{{ if .Values.indexer.dedicated }} indexer{{ end }}
{{- end -}}
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
