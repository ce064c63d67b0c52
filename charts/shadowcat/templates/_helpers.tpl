{{- define "shadowcat.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "shadowcat.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "shadowcat.labels" -}}
app.kubernetes.io/name: {{ include "shadowcat.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "shadowcat.selectorLabels" -}}
app.kubernetes.io/name: {{ include "shadowcat.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "shadowcat.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "shadowcat.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "shadowcat.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "shadowcat.sidecarImage" -}}
{{- printf "%s:%s" .Values.sidecar.image.repository (default .Chart.AppVersion .Values.sidecar.image.tag) -}}
{{- end -}}

{{- /* The Service the API server calls the webhook through. */ -}}
{{- define "shadowcat.webhookService" -}}
{{- printf "%s-webhook" (include "shadowcat.fullname" .) -}}
{{- end -}}

{{- /* Self-managed TLS: the Secret the operator keeps its CA and certificate in. */ -}}
{{- define "shadowcat.webhookTlsSecret" -}}
{{- printf "%s-webhook-tls" (include "shadowcat.fullname" .) -}}
{{- end -}}

{{- /* cert-manager TLS: the Secret cert-manager writes the serving certificate to. */ -}}
{{- define "shadowcat.webhookCertSecret" -}}
{{- printf "%s-webhook-cert" (include "shadowcat.fullname" .) -}}
{{- end -}}

{{- /* The names a serving certificate for the webhook Service must cover. */ -}}
{{- define "shadowcat.webhookDnsNames" -}}
{{- $svc := include "shadowcat.webhookService" . -}}
{{- $ns := .Release.Namespace -}}
{{- list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) | toYaml -}}
{{- end -}}

{{- /*
Refuses values that would render a chart that cannot work. Included once, by
the Deployment.
*/ -}}
{{- define "shadowcat.checks" -}}
{{- if eq (int .Values.webhook.port) (int .Values.metrics.port) -}}
{{- fail (printf "webhook.port and metrics.port are both %v; they must differ" .Values.webhook.port) -}}
{{- end -}}
{{- range .Values.watchNamespaces -}}
{{- if has . (list $.Release.Namespace "kube-system") -}}
{{- fail (printf "watchNamespaces lists %s, where the webhook never injects pods (it skips the release namespace and kube-system); run workloads elsewhere" .) -}}
{{- end -}}
{{- end -}}
{{- with .Values.sidecar.allowedImages -}}
{{- $image := include "shadowcat.sidecarImage" $ -}}
{{- $allowed := false -}}
{{- range . -}}
{{- if hasPrefix . $image -}}{{- $allowed = true -}}{{- end -}}
{{- end -}}
{{- if not $allowed -}}
{{- fail (printf "the default sidecar image %s starts with none of sidecar.allowedImages %s; the operator would refuse every McpProxy that does not name its own image" $image (toJson .)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
