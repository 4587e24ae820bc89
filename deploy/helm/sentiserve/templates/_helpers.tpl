{{- define "sentiserve.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sentiserve.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
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

{{/* Pod template labels: the selector labels only. No chart or app version: an upgrade that
changes nothing in the pods must not roll them (a Triton rollout needs a free GPU); the
image tag changes the template when the software does. */}}
{{- define "sentiserve.podLabels" -}}
{{ include "sentiserve.selectorLabels" . }}
{{- end -}}

{{- define "sentiserve.tritonPodLabels" -}}
{{ include "sentiserve.tritonSelectorLabels" . }}
{{- end -}}

{{/* The Prometheus Operator's CRDs must be installed for ServiceMonitor and PrometheusRule. */}}
{{- define "sentiserve.requireMonitoringCRDs" -}}
{{- if not (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1") -}}
{{- fail "serviceMonitor/prometheusRule need the Prometheus Operator's CRDs (monitoring.coreos.com/v1): install kube-prometheus-stack first (docs/aws.md), or disable them" -}}
{{- end -}}
{{- end -}}

{{/* Labels kube-prometheus-stack selects ServiceMonitors and PrometheusRules by. */}}
{{- define "sentiserve.monitoringLabels" -}}
{{- with .Values.monitoring.releaseLabel }}
release: {{ . | quote }}
{{- end }}
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

{{/* An image reference: repository@digest when a digest is set, else repository:tag with
the tag pinned (never empty or "latest"). */}}
{{- define "sentiserve.pinned" -}}
{{- if .digest -}}
{{- printf "%s@%s" .repository .digest -}}
{{- else -}}
{{- if or (not .tag) (eq (toString .tag) "latest") -}}
{{- fail (printf "%s must be a pinned version, not empty or \"latest\"" .what) -}}
{{- end -}}
{{- printf "%s:%s" .repository (toString .tag) -}}
{{- end -}}
{{- end -}}

{{- define "sentiserve.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "sentiserve.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "sentiserve.apiKeyEnabled" -}}
{{- if or .Values.apiKey.value .Values.apiKey.existingSecret }}true{{ end -}}
{{- end -}}

{{- define "sentiserve.apiKeyDir" -}}/etc/sentiserve/api-key{{- end -}}

{{- define "sentiserve.apiKeyPath" -}}{{ include "sentiserve.apiKeyDir" . }}/api-key{{- end -}}

{{/* The API key Secret as a read-only volume (key `api-key`). */}}
{{- define "sentiserve.apiKeyVolume" -}}
- name: api-key
  secret:
    secretName: {{ include "sentiserve.apiKeySecret" . }}
    defaultMode: 0440
    items:
      - key: api-key
        path: api-key
{{- end -}}

{{- define "sentiserve.apiKeySecret" -}}
{{- default (printf "%s-api-key" (include "sentiserve.fullname" .)) .Values.apiKey.existingSecret -}}
{{- end -}}

{{- define "sentiserve.image" -}}
{{- include "sentiserve.pinned" (dict "repository" .Values.image.repository "tag" .Values.image.tag "digest" .Values.image.digest "what" "image.tag") -}}
{{- end -}}

{{- define "sentiserve.tritonImage" -}}
{{- include "sentiserve.pinned" (dict "repository" .Values.triton.image.repository "tag" .Values.triton.image.tag "digest" .Values.triton.image.digest "what" "triton.image.tag") -}}
{{- end -}}

{{/* Environment of whatever reads S3: the region under both names (boto3 reads AWS_REGION,
Triton's S3 client AWS_DEFAULT_REGION), then model.s3Env. */}}
{{- define "sentiserve.s3Env" -}}
{{- with .Values.model.region }}
- name: AWS_REGION
  value: {{ . | quote }}
- name: AWS_DEFAULT_REGION
  value: {{ . | quote }}
{{- end }}
{{- range $name, $value := .Values.model.s3Env }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}
