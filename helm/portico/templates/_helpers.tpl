{{/* Names, labels and the few values derived from others. */}}

{{- define "portico.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's base name; every object name is this plus a component suffix. */}}
{{- define "portico.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "portico.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "portico.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of one component: call with (dict "ctx" $ "component" "engine"). */}}
{{- define "portico.selectorLabels" -}}
app.kubernetes.io/name: {{ include "portico.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "portico.componentLabels" -}}
{{ include "portico.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "portico.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "portico.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* image reference: call with (dict "image" .Values.engine.image "ctx" $) */}}
{{- define "portico.image" -}}
{{- printf "%s:%s" .image.repository (default .ctx.Chart.AppVersion .image.tag) }}
{{- end }}

{{- define "portico.engineServiceName" -}}
{{- printf "%s-engine" (include "portico.fullname" .) }}
{{- end }}

{{/* What the gateway calls: the engines' headless Service, whose DNS name resolves to
every ready engine pod. */}}
{{- define "portico.engineURL" -}}
{{- printf "http://%s:%d" (include "portico.engineServiceName" .) (int .Values.engine.port) }}
{{- end }}

{{- define "portico.redisName" -}}
{{- printf "%s-redis" (include "portico.fullname" .) }}
{{- end }}

{{- define "portico.redisSecretName" -}}
{{- default (include "portico.redisName" .) .Values.redis.auth.existingSecret }}
{{- end }}

{{- define "portico.gatewaySecretName" -}}
{{- default (printf "%s-gateway" (include "portico.fullname" .)) .Values.gateway.secrets.existingSecret }}
{{- end }}

{{/* The external Redis URL's Secret: the user's, or the gateway Secret the chart writes. */}}
{{- define "portico.externalRedisSecretName" -}}
{{- default (printf "%s-gateway-redis" (include "portico.fullname" .)) .Values.externalRedis.existingSecret }}
{{- end }}

{{/* A value of an existing Secret of this release (kept across upgrades), else a new
random one. lookup answers nothing under `helm template`: set such values explicitly
when rendering offline (GitOps). Call with (list $ secretName key length). */}}
{{- define "portico.keptRandom" -}}
{{- $ctx := index . 0 }}
{{- $existing := lookup "v1" "Secret" $ctx.Release.Namespace (index . 1) }}
{{- if and $existing (hasKey (default dict $existing.data) (index . 2)) }}
{{- index $existing.data (index . 2) | b64dec }}
{{- else }}
{{- randAlphaNum (index . 3) }}
{{- end }}
{{- end }}

{{- define "portico.gatewayGracePeriod" -}}
{{- $floor := add .Values.gateway.preStopSleepSeconds .Values.gateway.drainSeconds .Values.gateway.shutdownSeconds }}
{{- if kindIs "invalid" .Values.gateway.terminationGracePeriodSeconds }}
{{- add $floor 10 }}
{{- else if le (int .Values.gateway.terminationGracePeriodSeconds) (int $floor) }}
{{- fail (printf "gateway.terminationGracePeriodSeconds (%v) must be larger than preStopSleepSeconds + drainSeconds + shutdownSeconds (%v)" .Values.gateway.terminationGracePeriodSeconds $floor) }}
{{- else }}
{{- .Values.gateway.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/* Refuse a release whose gateways would not share keys and limits. */}}
{{- define "portico.checkRedis" -}}
{{- if and (not .Values.redis.enabled) (not .Values.externalRedis.url) (not .Values.externalRedis.existingSecret) }}
{{- fail "Redis is required (keys and limits are shared by every gateway replica): keep redis.enabled, or set externalRedis.url or externalRedis.existingSecret" }}
{{- end }}
{{- if and .Values.redis.enabled (or .Values.externalRedis.url .Values.externalRedis.existingSecret) }}
{{- fail "externalRedis is set while redis.enabled is true: set redis.enabled=false to use the external Redis" }}
{{- end }}
{{- end }}

{{/* PORTICO_ALLOWED_HOSTS: the gateway Service's in-cluster names, the ingress hosts
(the schema makes each rule name one) and gateway.allowedHosts. The cluster domain is
assumed to be cluster.local; add yours to gateway.allowedHosts otherwise. */}}
{{- define "portico.allowedHosts" -}}
{{- $svc := printf "%s-gateway" (include "portico.fullname" .) -}}
{{- $ns := .Release.Namespace -}}
{{- $hosts := list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) -}}
{{- if .Values.ingress.enabled -}}
{{- range .Values.ingress.hosts -}}
{{- $hosts = append $hosts .host -}}
{{- end -}}
{{- end -}}
{{- join "," (uniq (concat $hosts .Values.gateway.allowedHosts)) -}}
{{- end }}
