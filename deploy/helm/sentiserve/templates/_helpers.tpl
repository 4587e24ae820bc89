{{- define "sentiserve.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sentiserve.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "sentiserve.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sentiserve.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end -}}

{{- define "sentiserve.commonLabels" -}}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "sentiserve.labels" -}}
{{ include "sentiserve.selectorLabels" . }}
{{ include "sentiserve.commonLabels" . }}
{{- end -}}

{{/* Triton (mode=triton): its own component label, so no selector of the gateway matches it. */}}
{{- define "sentiserve.tritonName" -}}
{{- printf "%s-triton" (include "sentiserve.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sentiserve.tritonSelectorLabels" -}}
app.kubernetes.io/name: {{ include "sentiserve.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: triton
{{- end -}}

{{- define "sentiserve.tritonLabels" -}}
{{ include "sentiserve.tritonSelectorLabels" . }}
{{ include "sentiserve.commonLabels" . }}
{{- end -}}

{{- define "sentiserve.triton" -}}
{{- if not (has .Values.mode (list "embedded" "triton")) -}}
{{- fail "mode must be embedded or triton" -}}
{{- end -}}
{{- eq .Values.mode "triton" | ternary "true" "" -}}
{{- end -}}

{{/* Where the model repository is: the s3:// URL, or /models (the PVC) for either server. */}}
{{- define "sentiserve.modelRepository" -}}
{{- $source := .Values.model.source -}}
{{- if not (has $source (list "s3" "pvc")) -}}
{{- fail "model.source must be s3 or pvc" -}}
{{- end -}}
{{- if and (eq $source "pvc") (not .Values.model.pvc.claimName) -}}
{{- fail "model.source=pvc needs model.pvc.claimName" -}}
{{- end -}}
{{- if eq $source "s3" -}}
{{- required "model.s3Url is required with model.source=s3" .Values.model.s3Url -}}
{{- else -}}
/models
{{- end -}}
{{- end -}}

{{- define "sentiserve.pinned" -}}
{{- if or (not .tag) (eq (toString .tag) "latest") -}}
{{- fail (printf "%s must be a pinned version, not empty or \"latest\"" .what) -}}
{{- end -}}
{{- printf "%s:%s" .repository (toString .tag) -}}
{{- end -}}

{{- define "sentiserve.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "sentiserve.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "sentiserve.apiKeySecret" -}}
{{- default (printf "%s-api-key" (include "sentiserve.fullname" .)) .Values.apiKey.existingSecret -}}
{{- end -}}

{{- define "sentiserve.image" -}}
{{- include "sentiserve.pinned" (dict "repository" .Values.image.repository "tag" .Values.image.tag "what" "image.tag") -}}
{{- end -}}

{{- define "sentiserve.tritonImage" -}}
{{- include "sentiserve.pinned" (dict "repository" .Values.triton.image.repository "tag" .Values.triton.image.tag "what" "triton.image.tag") -}}
{{- end -}}
