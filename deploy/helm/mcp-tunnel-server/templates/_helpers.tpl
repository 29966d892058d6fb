{{/* Names, labels, image references and the checks several templates share. */}}

{{- define "mts.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mts.fullname" -}}
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

{{- define "mts.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mts.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "mts.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "mts.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* repository@digest when a digest is given, else repository:tag. Argument: dict image, default tag. */}}
{{- define "mts.imageRef" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (default .defaultTag .image.tag) }}
{{- end }}
{{- end }}

{{- define "mts.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "mts.validate" -}}
{{- $v := .Values }}
{{- if not $v.server.baseDomain }}{{ fail "server.baseDomain is required (tunnel domains are <id>.<baseDomain>)" }}{{ end }}
{{- if not $v.server.edgeAddress }}{{ fail "server.edgeAddress is required (host:port connectors dial; written into tokens)" }}{{ end }}
{{- if not $v.tls.edgeSecretName }}{{ fail "tls.edgeSecretName is required (Secret with tls.crt and tls.key for the edge listeners)" }}{{ end }}
{{- if not $v.masterKey.secretName }}{{ fail "masterKey.secretName is required (Secret with key master-key)" }}{{ end }}
{{- if $v.postgresql.enabled }}
{{- if $v.database.existingSecret }}{{ fail "database.existingSecret and postgresql.enabled are mutually exclusive" }}{{ end }}
{{- if not $v.postgresql.auth.existingSecret }}{{ fail "postgresql.enabled needs postgresql.auth.existingSecret (Secret with key password)" }}{{ end }}
{{- else if not $v.database.existingSecret }}
{{- fail "set database.existingSecret (Secret with the PostgreSQL URL) or postgresql.enabled" }}
{{- end }}
{{- if and $v.ingress.enabled (not (and $v.ingress.host $v.ingress.tlsSecretName)) }}
{{- fail "ingress.enabled needs ingress.host and ingress.tlsSecretName (the API is served over https only)" }}
{{- end }}
{{- end }}
