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

{{/* The keys an engine group may set; the rest of engine.* is shared by every group. */}}
{{- define "portico.engineGroupKeys" -}}
model revision servedModelName quantization dtype runner toolCallParser maxModelLen gpuMemoryUtilization tensorParallelSize replicas maxNumSeqs maxNumQueuedReqs schedulingPolicy enablePrefixCaching enforceEager extraArgs loraAdapters autoscaling resources nodeSelector tolerations affinity topologySpreadConstraints
{{- end }}

{{/* Every engine group with engine.* filled in where the group is silent, as a JSON
list (read with fromJsonArray). Keys are taken whole, by presence (hasKey), so a group's
false or null wins over a default; autoscaling is filled key by key. Each group also
gets its object name (fullName). Fails on names that are not unique DNS labels. */}}
{{- define "portico.engineGroups" -}}
{{- $engine := .Values.engine }}
{{- $groups := list }}
{{- $seen := dict }}
{{- range $group := $engine.groups }}
{{- $fullName := printf "%s-engine-%s" (include "portico.fullname" $) $group.name }}
{{- if hasKey $seen $group.name }}
{{- fail (printf "engine.groups: the name %q is used twice" $group.name) }}
{{- end }}
{{- if gt (len $fullName) 63 }}
{{- fail (printf "engine.groups: %q makes the object name %q longer than 63 characters; shorten the group name or fullnameOverride" $group.name $fullName) }}
{{- end }}
{{- $_ := set $seen $group.name true }}
{{- $merged := dict "name" $group.name "fullName" $fullName }}
{{- range $key := splitList " " (include "portico.engineGroupKeys" $) }}
{{- $_ := set $merged $key (ternary (index $group $key) (index $engine $key) (hasKey $group $key)) }}
{{- end }}
{{- $scaling := deepCopy $engine.autoscaling }}
{{- range $key, $value := (default dict $group.autoscaling) }}
{{- $_ := set $scaling $key $value }}
{{- end }}
{{- $_ := set $merged "autoscaling" $scaling }}
{{- $groups = append $groups $merged }}
{{- end }}
{{- toJson $groups }}
{{- end }}

{{/* The engine pods' grace period: the preStop sleep, vLLM's drain and its shutdown must
fit in it, or the kubelet kills streams mid-drain. */}}
{{- define "portico.engineGracePeriod" -}}
{{- $e := .Values.engine }}
{{- $floor := add $e.preStopSleepSeconds $e.drainSeconds $e.shutdownTimeoutSeconds }}
{{- if kindIs "invalid" $e.terminationGracePeriodSeconds }}
{{- add $floor 10 }}
{{- else if le (int $e.terminationGracePeriodSeconds) (int $floor) }}
{{- fail (printf "engine.terminationGracePeriodSeconds (%v) must be larger than preStopSleepSeconds + drainSeconds + shutdownTimeoutSeconds (%v)" $e.terminationGracePeriodSeconds $floor) }}
{{- else }}
{{- $e.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/* Selector labels of one engine group: call with (dict "ctx" $ "group" $group). */}}
{{- define "portico.engineGroupSelectorLabels" -}}
{{ include "portico.selectorLabels" (dict "ctx" .ctx "component" "engine") }}
portico.io/engine-group: {{ .group.name }}
{{- end }}

{{/* PORTICO_ENGINES: every group's headless Service, each name resolving to every ready
pod of the group. */}}
{{- define "portico.engineURLs" -}}
{{- $urls := list }}
{{- range $group := include "portico.engineGroups" . | fromJsonArray }}
{{- $urls = append $urls (printf "dns+http://%s:%d" $group.fullName (int $.Values.engine.port)) }}
{{- end }}
{{- join "," $urls }}
{{- end }}

{{/* The environment both engine containers (download and engine) share: where the hub
cache is, which hub, the token, and a writable HOME and XDG cache on the scratch volume. */}}
{{- define "portico.engineHubEnv" -}}
{{- $engine := .Values.engine }}
- name: HF_HOME
  value: {{ printf "%s/huggingface" $engine.modelCache.mountPath | quote }}
- name: HOME
  value: {{ $engine.scratch.mountPath | quote }}
- name: XDG_CACHE_HOME
  value: {{ printf "%s/cache" $engine.scratch.mountPath | quote }}
{{- with $engine.hfEndpoint }}
- name: HF_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- with $engine.hfToken.existingSecret }}
- name: HF_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $engine.hfToken.key }}
{{- end }}
{{- end }}

{{/* The launcher's flags for one group: call with (dict "ctx" $ "group" $g "offline" bool). */}}
{{- define "portico.engineArgs" -}}
{{- $engine := .ctx.Values.engine }}
{{- $g := .group }}
- --host
- 0.0.0.0
- --port
- {{ int $engine.port | quote }}
- --device
- cuda
- --model
- {{ $g.model | quote }}
{{- with $g.revision }}
- --revision
- {{ . | quote }}
{{- end }}
{{- with $g.servedModelName }}
- --served-model-name
- {{ . | quote }}
{{- end }}
- --dtype
- {{ $g.dtype | quote }}
- --quantization
- {{ $g.quantization | quote }}
- --runner
- {{ $g.runner | quote }}
- --tool-call-parser
- {{ $g.toolCallParser | quote }}
- --tensor-parallel-size
- {{ int $g.tensorParallelSize | quote }}
{{- if not (kindIs "invalid" $g.gpuMemoryUtilization) }}
- --gpu-memory-utilization
- {{ $g.gpuMemoryUtilization | quote }}
{{- end }}
{{- if not (kindIs "invalid" $g.maxModelLen) }}
- --max-model-len
- {{ ternary "auto" (toString (int $g.maxModelLen)) (eq (toString $g.maxModelLen) "auto") | quote }}
{{- end }}
{{- if not (kindIs "invalid" $g.maxNumSeqs) }}
- --max-num-seqs
- {{ int $g.maxNumSeqs | quote }}
{{- end }}
{{- if not (kindIs "invalid" $g.maxNumQueuedReqs) }}
- --max-num-queued-reqs
- {{ int $g.maxNumQueuedReqs | quote }}
{{- end }}
- --scheduling-policy
- {{ $g.schedulingPolicy | quote }}
{{- if not (kindIs "invalid" $g.enablePrefixCaching) }}
- {{ ternary "--enable-prefix-caching" "--no-enable-prefix-caching" $g.enablePrefixCaching }}
{{- end }}
{{- if $g.enforceEager }}
- --enforce-eager
{{- end }}
{{- if .offline }}
- --offline
{{- end }}
- --cache-dir
- {{ printf "%s/portico" $engine.scratch.mountPath | quote }}
- --startup-timeout-s
- {{ int $engine.startupTimeoutSeconds | quote }}
- --drain-s
- {{ int $engine.drainSeconds | quote }}
- --shutdown-timeout-s
- {{ int $engine.shutdownTimeoutSeconds | quote }}
{{- with $g.loraAdapters }}
- --extra-args=--enable-lora
- --extra-args=--lora-modules
{{- range . }}
- {{ printf "--extra-args=%s=%s" .name .path | quote }}
{{- end }}
{{- end }}
{{- range $g.extraArgs }}
- {{ printf "--extra-args=%s" . | quote }}
{{- end }}
{{- end }}

{{/* A group's topology spread: call with (dict "group" $g "selector" $labels). */}}
{{- define "portico.engineSpread" -}}
{{- $constraints := .group.topologySpreadConstraints }}
{{- $selector := .selector | fromYaml }}
{{- if kindIs "invalid" $constraints }}
{{- $constraints = list }}
{{- range $key := list "kubernetes.io/hostname" "topology.kubernetes.io/zone" }}
{{- $constraints = append $constraints (dict "maxSkew" 1 "topologyKey" $key "whenUnsatisfiable" "ScheduleAnyway") }}
{{- end }}
{{- end }}
{{- if $constraints }}
topologySpreadConstraints:
{{- range $c := $constraints }}
{{- $c := deepCopy $c }}
{{- if not (hasKey $c "labelSelector") }}
{{- $_ := set $c "labelSelector" (dict "matchLabels" $selector) }}
{{- end }}
{{- list $c | toYaml | nindent 2 }}
{{- end }}
{{- end }}
{{- end }}

{{/* The model volume: call with (dict "ctx" $ "selector" $labels). */}}
{{- define "portico.modelVolume" -}}
{{- $cache := .ctx.Values.engine.modelCache }}
- name: model-cache
{{- if eq $cache.type "existingClaim" }}
  persistentVolumeClaim:
    claimName: {{ required "engine.modelCache.existingClaim is required with modelCache.type=existingClaim" $cache.existingClaim }}
{{- else if eq $cache.type "hostPath" }}
  hostPath:
    path: {{ $cache.hostPath }}
    type: DirectoryOrCreate
{{- else if eq $cache.type "emptyDir" }}
  emptyDir: {}
{{- else }}
  # A claim per pod, created with it and deleted with it.
  ephemeral:
    volumeClaimTemplate:
      metadata:
        labels:
          {{- .selector | nindent 10 }}
      spec:
        accessModes:
          {{- toYaml $cache.accessModes | nindent 10 }}
        {{- with $cache.storageClassName }}
        storageClassName: {{ . }}
        {{- end }}
        resources:
          requests:
            storage: {{ $cache.size }}
{{- end }}
{{- end }}
