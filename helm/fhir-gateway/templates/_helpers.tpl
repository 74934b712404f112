{{/*
Helpers of the fhir-gateway chart. Every name here starts with "fhir-gateway." so that a parent chart's helpers
never collide with ours.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "fhir-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The prefix of every resource name: fullnameOverride, else <release>-<chart> (just <release> when it holds the
chart name). Kept to 50 characters so that "-worker", "-redis" and the like still fit 63. */}}
{{- define "fhir-gateway.fullname" -}}
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

{{/* chart-version, for the helm.sh/chart label. */}}
{{- define "fhir-gateway.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the release's pods: name and instance. */}}
{{- define "fhir-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fhir-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of one component's pods; call with (dict "root" $ "component" "api"). */}}
{{- define "fhir-gateway.componentSelectorLabels" -}}
{{ include "fhir-gateway.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Every label of a resource; call with (dict "root" $ "component" "api"). */}}
{{- define "fhir-gateway.labels" -}}
helm.sh/chart: {{ include "fhir-gateway.chart" .root }}
{{ include "fhir-gateway.componentSelectorLabels" . }}
app.kubernetes.io/part-of: {{ include "fhir-gateway.name" .root }}
{{- if .root.Chart.AppVersion }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end }}

{{/* The ServiceAccount every pod runs as. */}}
{{- define "fhir-gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "fhir-gateway.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret the operator creates (never rendered by this chart). */}}
{{- define "fhir-gateway.secretName" -}}
{{- default (include "fhir-gateway.fullname" .) .Values.existingSecret }}
{{- end }}

{{/* An image reference; call with an image block (repository, tag, digest) and a default tag. */}}
{{- define "fhir-gateway.imageRef" -}}
{{- $tag := default .defaultTag .image.tag | toString }}
{{- if .image.digest }}
{{- printf "%s:%s@%s" .image.repository $tag .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository $tag }}
{{- end }}
{{- end }}

{{/* Name of the bundled Redis' Service and StatefulSet. */}}
{{- define "fhir-gateway.redisName" -}}
{{- /* A StatefulSet's name must leave room for its pods' controller-revision-hash label (63 characters). */}}
{{- printf "%s-redis" (include "fhir-gateway.fullname" . | trunc 46 | trimSuffix "-") }}
{{- end }}

{{/* Whether the gateway sends a password to Redis: "true" or "". */}}
{{- define "fhir-gateway.redisAuth" -}}
{{- if or .Values.redis.enabled .Values.redis.auth.enabled }}true{{ end }}
{{- end }}

{{/* The parts of the Redis URL as a YAML dict: scheme, user, host (host:port), hostname, port, path, query.
Refuses a URL that carries a password, without repeating it in the message. */}}
{{- define "fhir-gateway.redisEndpoint" -}}
{{- if .Values.redis.enabled }}
{{- if not .Values.redis.auth.enabled }}
{{- fail "redis.auth.enabled: the bundled Redis always requires a password; set it true (or use an external Redis)" }}
{{- end }}
{{- if .Values.config.redisCluster }}
{{- fail "config.redisCluster: the bundled Redis is one node, not a cluster; set redis.enabled=false and redis.url to a cluster node" }}
{{- end }}
{{- $hostname := printf "%s.%s.svc" (include "fhir-gateway.redisName" .) .Release.Namespace }}
scheme: redis
user: ""
hostname: {{ $hostname }}
port: "6379"
host: {{ printf "%s:6379" $hostname }}
path: /0
query: ""
{{- else }}
{{- if not .Values.redis.url }}
{{- fail "redis.url: set the external Redis URL (or redis.enabled=true for the bundled Redis)" }}
{{- end }}
{{- $url := urlParse .Values.redis.url }}
{{- if not (has $url.scheme (list "redis" "rediss")) }}
{{- fail "redis.url: the scheme must be redis:// or rediss://" }}
{{- end }}
{{- if or (contains ":" $url.userinfo) (regexMatch "(^|&)password=" $url.query) }}
{{- fail "redis.url carries a password: remove it from the URL and put it in the Secret under secretKeys.redisPassword" }}
{{- end }}
{{- if not $url.hostname }}
{{- fail "redis.url: the URL names no host" }}
{{- end }}
{{- $port := regexFind ":[0-9]+$" $url.host | trimPrefix ":" | default "6379" }}
scheme: {{ $url.scheme }}
user: {{ $url.userinfo | quote }}
hostname: {{ $url.hostname }}
port: {{ $port | quote }}
host: {{ printf "%s:%s" $url.hostname $port }}
path: {{ $url.path | quote }}
query: {{ $url.query | quote }}
{{- end }}
{{- end }}

{{/* REDIS_URL as the gateway pods receive it: with "$(REDIS_PASSWORD)", which Kubernetes replaces by the Secret's
value when it starts the container, so no password is ever rendered. */}}
{{- define "fhir-gateway.redisUrl" -}}
{{- $e := include "fhir-gateway.redisEndpoint" . | fromYaml }}
{{- $auth := "" }}
{{- if include "fhir-gateway.redisAuth" . }}
{{- $auth = printf "%s:$(REDIS_PASSWORD)@" $e.user }}
{{- else if $e.user }}
{{- $auth = printf "%s@" $e.user }}
{{- end }}
{{- printf "%s://%s%s%s" $e.scheme $auth $e.host $e.path }}
{{- if $e.query }}?{{ $e.query }}{{ end }}
{{- end }}

{{/* A value as an environment variable string: whole numbers without an exponent (Helm reads numbers as floats). */}}
{{- define "fhir-gateway.envValue" -}}
{{- if and (kindIs "float64" .) (eq (floor .) .) }}
{{- int64 . }}
{{- else }}
{{- . }}
{{- end }}
{{- end }}

{{/* Mount path of the clients file. */}}
{{- define "fhir-gateway.clientsDir" -}}
/etc/fhir-gateway/clients
{{- end }}

{{/* The environment of every gateway container: config.* as GATEWAY_*, the clients file, and REDIS_URL. These are
the only variables set: each is one the application reads, except REDIS_PASSWORD, which exists only so that
Kubernetes can put the Secret's password into REDIS_URL. */}}
{{- define "fhir-gateway.env" -}}
{{- range $key, $value := .Values.config }}
{{- if not (kindIs "invalid" $value) }}{{/* null: the application's default (no variable) */}}
- name: {{ printf "GATEWAY_%s" ($key | snakecase | upper) }}
  value: {{ include "fhir-gateway.envValue" $value | quote }}
{{- end }}
{{- end }}
- name: GATEWAY_CLIENTS_FILE
  value: {{ printf "%s/%s" (include "fhir-gateway.clientsDir" .) .Values.secretKeys.clientsFile | quote }}
{{- if include "fhir-gateway.redisAuth" . }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "fhir-gateway.secretName" . }}
      key: {{ .Values.secretKeys.redisPassword }}
{{- end }}
- name: REDIS_URL
  value: {{ include "fhir-gateway.redisUrl" . | quote }}
{{- end }}

{{/* The pod-level security context of the restricted Pod Security Standard; call with a user id. */}}
{{- define "fhir-gateway.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ . }}
runAsGroup: {{ . }}
fsGroup: {{ . }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* The container-level security context of the restricted Pod Security Standard; call with a user id. */}}
{{- define "fhir-gateway.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ . }}
runAsGroup: {{ . }}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* The uid and gid the gateway image runs as (see the Dockerfile). */}}
{{- define "fhir-gateway.uid" -}}
10001
{{- end }}

{{/* Volumes of a gateway pod; call with (dict "root" $ "component" "worker"). SMART keys only where connectors
run (worker, poller). */}}
{{- define "fhir-gateway.volumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: 256Mi
- name: clients
  secret:
    secretName: {{ include "fhir-gateway.secretName" .root }}
    defaultMode: 0440
    items:
      - key: {{ .root.Values.secretKeys.clientsFile }}
        path: {{ .root.Values.secretKeys.clientsFile }}
{{- if and .root.Values.smartKeys.secretName (ne .component "api") }}
- name: smart-keys
  secret:
    secretName: {{ .root.Values.smartKeys.secretName }}
    defaultMode: 0440
{{- end }}
{{- end }}

{{/* Volume mounts matching fhir-gateway.volumes. */}}
{{- define "fhir-gateway.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: clients
  mountPath: {{ include "fhir-gateway.clientsDir" .root }}
  readOnly: true
{{- if and .root.Values.smartKeys.secretName (ne .component "api") }}
- name: smart-keys
  mountPath: {{ .root.Values.smartKeys.mountPath }}
  readOnly: true
{{- end }}
{{- end }}

{{/* Spread one component's pods over nodes when the scheduler can. */}}
{{- define "fhir-gateway.topologySpread" -}}
- maxSkew: 1
  topologyKey: kubernetes.io/hostname
  whenUnsatisfiable: ScheduleAnyway
  labelSelector:
    matchLabels:
      {{- include "fhir-gateway.componentSelectorLabels" . | nindent 6 }}
{{- end }}

{{/* The pod template of a gateway component; call with (dict "root" $ "component" "worker" "args" (list "worker")
"values" .Values.worker "extra" "<container YAML: ports, probes, lifecycle>"). */}}
{{- define "fhir-gateway.podTemplate" -}}
{{- $root := .root }}
{{- $uid := include "fhir-gateway.uid" $root -}}
metadata:
  labels:
    {{- include "fhir-gateway.labels" . | nindent 4 }}
  {{- with $root.Values.podAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  serviceAccountName: {{ include "fhir-gateway.serviceAccountName" $root }}
  automountServiceAccountToken: false
  # No Service environment variables: the containers get only the variables the application reads.
  enableServiceLinks: false
  terminationGracePeriodSeconds: {{ .values.terminationGracePeriodSeconds }}
  securityContext:
    {{- include "fhir-gateway.podSecurityContext" $uid | nindent 4 }}
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- range . }}
    - name: {{ . }}
    {{- end }}
  {{- end }}
  {{- with .values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  topologySpreadConstraints:
    {{- include "fhir-gateway.topologySpread" . | nindent 4 }}
  containers:
    - name: {{ .component }}
      image: {{ include "fhir-gateway.imageRef" (dict "image" $root.Values.image "defaultTag" $root.Chart.AppVersion) | quote }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      args:
        {{- toYaml .args | nindent 8 }}
      env:
        {{- include "fhir-gateway.env" $root | trim | nindent 8 }}
      {{- with .extra }}
      {{- . | nindent 6 }}
      {{- end }}
      resources:
        {{- toYaml .values.resources | nindent 8 }}
      securityContext:
        {{- include "fhir-gateway.containerSecurityContext" $uid | nindent 8 }}
      volumeMounts:
        {{- include "fhir-gateway.volumeMounts" . | nindent 8 }}
  volumes:
    {{- include "fhir-gateway.volumes" . | nindent 4 }}
{{- end }}

{{/* Egress rules every gateway pod needs: the cluster DNS and Redis. */}}
{{- define "fhir-gateway.baseEgress" -}}
- to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: {{ .Values.networkPolicy.dnsNamespace }}
      podSelector:
        matchLabels:
          {{- toYaml .Values.networkPolicy.dnsPodLabels | nindent 10 }}
    {{- range .Values.networkPolicy.dnsCidrs }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  ports:
    - protocol: UDP
      port: 53
    - protocol: TCP
      port: 53
{{- if .Values.redis.enabled }}
- to:
    - podSelector:
        matchLabels:
          {{- include "fhir-gateway.componentSelectorLabels" (dict "root" . "component" "redis") | nindent 10 }}
  ports:
    - protocol: TCP
      port: 6379
{{- else }}
{{- $e := include "fhir-gateway.redisEndpoint" . | fromYaml }}
- ports:
    - protocol: TCP
      port: {{ $e.port | int }}
  {{- with .Values.networkPolicy.externalRedisCidrs }}
  to:
    {{- range . }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  {{- end }}
{{- end }}
{{- end }}

{{/* Egress to the EHR FHIR endpoints (networkPolicy.ehrEgress), for worker and poller. */}}
{{- define "fhir-gateway.ehrEgress" -}}
{{- include "fhir-gateway.egressRules" .Values.networkPolicy.ehrEgress }}
{{- end }}

{{/* Egress of API pods to SMART clients' JWKS URLs. */}}
{{- define "fhir-gateway.jwksEgress" -}}
{{- include "fhir-gateway.egressRules" .Values.networkPolicy.jwksEgress }}
{{- end }}

{{/* Egress of worker pods to webhook receivers. */}}
{{- define "fhir-gateway.webhookEgress" -}}
{{- include "fhir-gateway.egressRules" .Values.networkPolicy.webhookEgress }}
{{- end }}

{{/* NetworkPolicy egress rules from a list of {cidrs, ports}. */}}
{{- define "fhir-gateway.egressRules" -}}
{{- range . }}
- to:
    {{- range .cidrs }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  ports:
    {{- range .ports }}
    - protocol: TCP
      port: {{ . }}
    {{- end }}
{{- end }}
{{- end }}
