{{/*
The chart name, overridable with nameOverride.
*/}}
{{- define "creditd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the release's resources: fullnameOverride, or <release>-<name> (just the release
name when it already contains the chart name). Truncated to 63 characters (DNS label limit).
*/}}
{{- define "creditd.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "creditd.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "creditd.labels" -}}
helm.sh/chart: {{ include "creditd.chart" . }}
{{ include "creditd.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: creditd
{{- end }}

{{/*
Selector labels (name and instance).
*/}}
{{- define "creditd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "creditd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Selector labels of the server pods: the migration Job's pods carry component=migration, so
the Service, the PodDisruptionBudget and the NetworkPolicy never select them.
*/}}
{{- define "creditd.serverSelectorLabels" -}}
{{ include "creditd.selectorLabels" . }}
app.kubernetes.io/component: server
{{- end }}

{{/*
The ServiceAccount the server pods use.
*/}}
{{- define "creditd.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "creditd.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The container image reference: repository@digest, or repository:tag (tag defaults to appVersion).
*/}}
{{- define "creditd.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The Secret holding CREDITD_DATABASE_URL and CREDITD_API_KEYS, and the keys inside it.
*/}}
{{- define "creditd.secretName" -}}
{{- default (printf "%s-credentials" (include "creditd.fullname" .)) .Values.existingSecret }}
{{- end }}

{{- define "creditd.secretKeyDatabaseUrl" -}}
{{- if .Values.existingSecret }}{{ .Values.existingSecretKeys.databaseUrl }}{{ else }}CREDITD_DATABASE_URL{{ end }}
{{- end }}

{{- define "creditd.secretKeyApiKeys" -}}
{{- if .Values.existingSecret }}{{ .Values.existingSecretKeys.apiKeys }}{{ else }}CREDITD_API_KEYS{{ end }}
{{- end }}

{{/*
The chart-made Secret's data (also used by the migration hook's copy and the checksum).
*/}}
{{- define "creditd.secretData" -}}
CREDITD_DATABASE_URL: {{ .Values.database.url | b64enc | quote }}
{{- if .Values.apiKeys }}
CREDITD_API_KEYS: {{ join "," .Values.apiKeys | b64enc | quote }}
{{- end }}
{{- end }}

{{/*
A scalar as an environment variable's text: whole numbers without an exponent (YAML numbers
arrive as float64, and 1000000 would otherwise print as 1e+06).
*/}}
{{- define "creditd.scalar" -}}
{{- if and (kindIs "float64" .) (eq (float64 (int64 .)) .) }}{{ int64 . }}{{ else }}{{ toString . }}{{ end }}
{{- end }}

{{/*
The ConfigMap's data: every non-secret setting.
*/}}
{{- define "creditd.configData" -}}
CREDITD_LOG_FORMAT: {{ .Values.config.logFormat | quote }}
RUST_LOG: {{ .Values.config.logLevel | quote }}
CREDITD_DB_MAX_CONNECTIONS: {{ .Values.config.dbMaxConnections | int64 | toString | quote }}
CREDITD_DB_ACQUIRE_TIMEOUT_SECONDS: {{ .Values.config.dbAcquireTimeoutSeconds | int64 | toString | quote }}
CREDITD_EXPIRY_SWEEP_INTERVAL_SECONDS: {{ .Values.config.expirySweepIntervalSeconds | int64 | toString | quote }}
CREDITD_REQUEST_TIMEOUT_SECONDS: {{ .Values.config.requestTimeoutSeconds | int64 | toString | quote }}
CREDITD_MAX_BODY_BYTES: {{ .Values.config.maxBodyBytes | int64 | toString | quote }}
CREDITD_MAX_CONCURRENT_REQUESTS: {{ .Values.config.maxConcurrentRequests | int64 | toString | quote }}
CREDITD_RATE_LIMIT_PER_KEY: {{ .Values.config.rateLimitPerKey | int64 | toString | quote }}
CREDITD_SHUTDOWN_GRACE_SECONDS: {{ .Values.config.shutdownGraceSeconds | int64 | toString | quote }}
{{- with .Values.otel }}
{{- if .endpoint }}
OTEL_EXPORTER_OTLP_ENDPOINT: {{ .endpoint | quote }}
{{- end }}
{{- if .protocol }}
OTEL_EXPORTER_OTLP_PROTOCOL: {{ .protocol | quote }}
{{- end }}
{{- if .serviceName }}
OTEL_SERVICE_NAME: {{ .serviceName | quote }}
{{- else if .endpoint }}
OTEL_SERVICE_NAME: {{ include "creditd.name" $ | quote }}
{{- end }}
{{- if .tracesSampler }}
OTEL_TRACES_SAMPLER: {{ .tracesSampler | quote }}
{{- end }}
{{- if .tracesSamplerArg }}
OTEL_TRACES_SAMPLER_ARG: {{ include "creditd.scalar" .tracesSamplerArg | quote }}
{{- end }}
{{- end }}
{{- range .Values.extraEnv }}
{{- if hasKey . "value" }}
{{ .name }}: {{ include "creditd.scalar" .value | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/*
A checksum over the ConfigMap and the chart-made Secret: a change to either rolls the pods.
*/}}
{{- define "creditd.configChecksum" -}}
{{- $secret := "" }}
{{- if not .Values.existingSecret }}{{ $secret = include "creditd.secretData" . }}{{ end }}
{{- printf "%s\n---\n%s" (include "creditd.configData" .) $secret | sha256sum }}
{{- end }}

{{/*
OTEL_RESOURCE_ATTRIBUTES: the configured map plus the namespace and pod name (pod name through
the downward API, referenced as $(POD_NAME)).
*/}}
{{- define "creditd.otelResourceAttributes" -}}
{{- $attrs := list (printf "k8s.namespace.name=%s" .Release.Namespace) "k8s.pod.name=$(POD_NAME)" }}
{{- range $key, $value := .Values.otel.resourceAttributes }}
{{- $attrs = append $attrs (printf "%s=%v" $key $value) }}
{{- end }}
{{- join "," $attrs }}
{{- end }}

{{/*
The pod's termination grace: explicit, or shutdown grace + preStop sleep + 15 s. Rendering fails
when an explicit value would cut the shutdown grace short.
*/}}
{{- define "creditd.terminationGracePeriodSeconds" -}}
{{- $floor := add .Values.config.shutdownGraceSeconds .Values.preStopSleepSeconds }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add $floor 15 }}
{{- else if le (int .Values.terminationGracePeriodSeconds) (int $floor) }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must exceed config.shutdownGraceSeconds + preStopSleepSeconds (%v)" .Values.terminationGracePeriodSeconds $floor) }}
{{- else }}
{{- .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/*
A probe's handler (grpc or http) and timings. Called with (dict "probe" … "root" $).
*/}}
{{- define "creditd.probe" -}}
{{- $p := .probe }}
{{- $root := .root }}
{{- if eq $p.type "grpc" }}
grpc:
  port: {{ $root.Values.containerPorts.grpc }}
  {{- if $root.Values.probes.grpcService }}
  service: {{ $root.Values.probes.grpcService | quote }}
  {{- end }}
{{- else }}
httpGet:
  path: /healthz
  port: http
{{- end }}
initialDelaySeconds: {{ $p.initialDelaySeconds }}
periodSeconds: {{ $p.periodSeconds }}
timeoutSeconds: {{ $p.timeoutSeconds }}
failureThreshold: {{ $p.failureThreshold }}
successThreshold: {{ $p.successThreshold }}
{{- end }}
