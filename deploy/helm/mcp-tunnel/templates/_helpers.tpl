{{/* Names, labels, image reference and the values that several templates share. */}}

{{- define "mcp-tunnel.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release name alone when it already contains the chart name (mcp-tunnel -> mcp-tunnel). */}}
{{- define "mcp-tunnel.fullname" -}}
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

{{- define "mcp-tunnel.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mcp-tunnel.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "mcp-tunnel.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "mcp-tunnel.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* repository@digest when a digest is given, else repository:tag. */}}
{{- define "mcp-tunnel.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The one Secret the setup component writes: named after the release (SPEC §11). */}}
{{- define "mcp-tunnel.managedSecretName" -}}
{{- .Release.Name }}
{{- end }}

{{- define "mcp-tunnel.tokenSecretName" -}}
{{- if .Values.setup.enabled }}{{ include "mcp-tunnel.managedSecretName" . }}{{ else }}{{ .Values.external.tunnelTokenSecretName }}{{ end }}
{{- end }}

{{- define "mcp-tunnel.certSecretName" -}}
{{- if .Values.setup.enabled }}{{ include "mcp-tunnel.managedSecretName" . }}{{ else }}{{ .Values.external.serverCertSecretName }}{{ end }}
{{- end }}

{{/* A Go duration ("1m30s", "45s", "2h") in whole seconds, rounded up. */}}
{{- define "mcp-tunnel.durationSeconds" -}}
{{- $total := 0.0 }}
{{- range regexFindAll "[0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h)" . -1 }}
{{- $n := regexFind "^[0-9]+(\\.[0-9]+)?" . | float64 }}
{{- $unit := regexReplaceAll "^[0-9]+(\\.[0-9]+)?" . "" }}
{{- $scale := get (dict "ns" 0.000000001 "us" 0.000001 "µs" 0.000001 "ms" 0.001 "s" 1.0 "m" 60.0 "h" 3600.0) $unit }}
{{- $total = addf $total (mulf $n $scale) }}
{{- end }}
{{- ceil $total | int }}
{{- end }}

{{/*
terminationGracePeriodSeconds: the preStop sleep, then the longer of the proxy's
shutdown_timeout and the connector's grace period, plus 5 s so both processes exit on
their own before the kubelet's SIGKILL.
*/}}
{{- define "mcp-tunnel.terminationGrace" -}}
{{- $proxy := include "mcp-tunnel.durationSeconds" (default "30s" .Values.gateway.config.shutdown_timeout) | int }}
{{- $connector := include "mcp-tunnel.durationSeconds" .Values.connector.gracePeriod | int }}
{{- add (int .Values.gateway.preStopSleepSeconds) (max $proxy $connector) 5 }}
{{- end }}

{{/* Container security context shared by every container (restricted Pod Security Standard). */}}
{{- define "mcp-tunnel.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "mcp-tunnel.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}


{{/* The WIF audience: api.wif.audience, else the API URL's host without scheme. */}}
{{- define "mcp-tunnel.wifAudience" -}}
{{- default (urlParse .Values.api.url).host .Values.api.wif.audience }}
{{- end }}
