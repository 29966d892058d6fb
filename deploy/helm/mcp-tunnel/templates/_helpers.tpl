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

{{/* The rules the ConfigMap and the schema cannot express alone; fail with the field path. */}}
{{- define "mcp-tunnel.validate" -}}
{{- $cfg := .Values.gateway.config }}
{{- range $field := list "listen_addr" "admin_addr" }}
{{- if hasKey $cfg $field }}
{{- fail (printf "gateway.config.%s is set by the chart; remove it" $field) }}
{{- end }}
{{- end }}
{{- if and (hasKey $cfg "tls") (or (hasKey $cfg.tls "cert_file") (hasKey $cfg.tls "key_file")) }}
{{- fail "gateway.config.tls.cert_file and key_file are set by the chart (from the server certificate Secret); remove them" }}
{{- end }}
{{- if .Values.setup.enabled }}
{{- if not .Values.api.url }}
{{- fail "api.url is required when setup.enabled is true (the Tunnels API the setup Job calls)" }}
{{- end }}
{{- $wif := and .Values.api.wif.federationRuleId .Values.api.wif.organizationId }}
{{- if and (not $wif) (not .Values.api.apiKeySecret.name) }}
{{- fail "setup.enabled needs credentials: api.wif.federationRuleId and api.wif.organizationId, or api.apiKeySecret.name" }}
{{- end }}
{{- if and $wif .Values.api.apiKeySecret.name }}
{{- fail "api.wif.* and api.apiKeySecret.name are mutually exclusive: choose one way to authenticate the setup Job" }}
{{- end }}
{{- else }}
{{- if not (and .Values.external.tunnelTokenSecretName .Values.external.serverCertSecretName) }}
{{- fail "setup.enabled is false: set external.tunnelTokenSecretName (key tunnel-token) and external.serverCertSecretName (keys tls.crt, tls.key)" }}
{{- end }}
{{- if not $cfg.tunnel_domain }}
{{- fail "setup.enabled is false: set gateway.config.tunnel_domain to the tunnel's domain" }}
{{- end }}
{{- end }}
{{- if and .Values.networkPolicy.enabled .Values.networkPolicy.egress.enabled (not .Values.networkPolicy.egress.edge.cidrs) }}
{{- fail "networkPolicy.egress.enabled needs networkPolicy.egress.edge.cidrs (where the connector reaches the edge)" }}
{{- end }}
{{- end }}

{{/* The WIF audience: api.wif.audience, else the API URL's host without scheme. */}}
{{- define "mcp-tunnel.wifAudience" -}}
{{- default (urlParse .Values.api.url).host .Values.api.wif.audience }}
{{- end }}
