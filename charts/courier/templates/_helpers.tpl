{{/* Names ------------------------------------------------------------------------------- */}}

{{- define "courier.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* <release> when it contains the chart name, else <release>-<chart>; 40 characters at most so
     every suffixed name (-broadcaster, -mongodb-headless, …) stays within 63. */}}
{{- define "courier.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The Courier resource's name: the operator names its objects <courier>-api, … */}}
{{- define "courier.courierName" -}}
{{- default (include "courier.fullname" .) .Values.courier.name -}}
{{- end -}}

{{- define "courier.operatorName" -}}{{ include "courier.fullname" . }}-operator{{- end -}}
{{- define "courier.operatorServiceAccount" -}}{{ default (include "courier.operatorName" .) .Values.operator.serviceAccount.name }}{{- end -}}
{{- define "courier.natsName" -}}{{ include "courier.fullname" . }}-nats{{- end -}}
{{- define "courier.mongodbName" -}}{{ include "courier.fullname" . }}-mongodb{{- end -}}
{{- define "courier.jwtSecretName" -}}{{ default (printf "%s-jwt" (include "courier.fullname" .)) .Values.jwt.existingSecret }}{{- end -}}
{{- define "courier.jwtSecretKey" -}}{{ if .Values.jwt.existingSecret }}{{ .Values.jwt.existingSecretKey }}{{ else }}secret{{ end }}{{- end -}}
{{- define "courier.jwtPrivateKeyKey" -}}{{ if .Values.jwt.existingSecret }}{{ .Values.jwt.existingSecretPrivateKeyKey }}{{ else }}private.pem{{ end }}{{- end -}}
{{- define "courier.jwtPublicKeyKey" -}}{{ if .Values.jwt.existingSecret }}{{ .Values.jwt.existingSecretPublicKeyKey }}{{ else }}public.pem{{ end }}{{- end -}}
{{- define "courier.natsAuthSecretName" -}}{{ default (printf "%s-nats-auth" (include "courier.fullname" .)) .Values.nats.auth.existingSecret }}{{- end -}}
{{/* The components with a NATS user courier-<component> (charts/courier/files/nats-auth.conf). */}}
{{- define "courier.natsUsers" -}}api broadcaster worker operator external{{- end -}}
{{- define "courier.mongodbUriSecretName" -}}{{ default (printf "%s-mongodb" (include "courier.fullname" .)) .Values.mongodb.existingSecret }}{{- end -}}
{{- define "courier.mongodbUriSecretKey" -}}{{ if .Values.mongodb.existingSecret }}{{ .Values.mongodb.existingSecretKey }}{{ else }}uri{{ end }}{{- end -}}
{{- define "courier.mongodbAuthSecretName" -}}{{ default (printf "%s-mongodb-auth" (include "courier.fullname" .)) .Values.mongodb.auth.existingSecret }}{{- end -}}

{{/* Labels -------------------------------------------------------------------------------- */}}

{{- define "courier.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every chart object; call with (dict "ctx" $ "component" "operator"). */}}
{{- define "courier.labels" -}}
helm.sh/chart: {{ include "courier.chart" .ctx }}
{{ include "courier.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: courier
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Immutable subset, for selectors. The name label is per dependency (courier-operator, nats,
     mongodb) so that it never matches the operator-managed Courier pods (name: courier). */}}
{{- define "courier.selectorLabels" -}}
app.kubernetes.io/name: {{ .name | default (printf "courier-%s" .component) }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Selector of the operator-managed pods of the Courier (labels set by courier-operator);
     call with (dict "ctx" $ "component" "api"). */}}
{{- define "courier.workloadSelector" -}}
app.kubernetes.io/name: courier
app.kubernetes.io/instance: {{ include "courier.courierName" .ctx }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end -}}

{{/* Images ------------------------------------------------------------------------------- */}}

{{- define "courier.imageTag" -}}{{ .Values.image.tag | default .Chart.AppVersion }}{{- end -}}

{{- define "courier.operatorImage" -}}
{{- $repo := .Values.operator.image.repository | default .Values.image.repository -}}
{{- $tag := .Values.operator.image.tag | default (include "courier.imageTag" .) -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}

{{/* COURIER_OPERATOR_ALLOWED_IMAGES: the chart's own repository plus operator.allowedImages. */}}
{{- define "courier.allowedImages" -}}
{{- prepend .Values.operator.allowedImages .Values.image.repository | uniq | join "," -}}
{{- end -}}

{{- define "courier.operatorPullPolicy" -}}{{ .Values.operator.image.pullPolicy | default .Values.image.pullPolicy }}{{- end -}}

{{/* Endpoints ----------------------------------------------------------------------------- */}}

{{- define "courier.natsUrl" -}}
{{- if .Values.nats.enabled -}}
nats://{{ include "courier.natsName" . }}.{{ .Release.Namespace }}.svc.{{ .Values.clusterDomain }}:4222
{{- else -}}
{{- required "nats.url is required when nats.enabled is false" .Values.nats.url -}}
{{- end -}}
{{- end -}}

{{/* Stable DNS name of the bundled MongoDB's only member (the replica set config names it). */}}
{{- define "courier.mongodbHost" -}}
{{ include "courier.mongodbName" . }}-0.{{ include "courier.mongodbName" . }}.{{ .Release.Namespace }}.svc.{{ .Values.clusterDomain }}:27017
{{- end -}}

{{- define "courier.streamReplicas" -}}
{{- if not (kindIs "invalid" .Values.courier.streamReplicas) -}}
{{- .Values.courier.streamReplicas -}}
{{- else if .Values.nats.enabled -}}
{{- min (int .Values.nats.replicas) 3 -}}
{{- else -}}
1
{{- end -}}
{{- end -}}

{{/* Bytes in a quantity such as 8Gi, 512Mi or 1.5G (binary multiples, as NATS reads them). */}}
{{- define "courier.bytes" -}}
{{- $q := toString . -}}
{{- $mult := 1 -}}
{{- range $suffix, $m := dict "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 "k" 1024 "M" 1048576 "G" 1073741824 "T" 1099511627776 -}}
{{- if hasSuffix $suffix $q -}}
{{- $q = trimSuffix $suffix $q -}}
{{- $mult = $m -}}
{{- end -}}
{{- end -}}
{{- printf "%.0f" (floor (mulf (float64 $q) $mult)) -}}
{{- end -}}

{{/* A stream's byte limit: the value given, else `percent` of the bundled NATS's file store,
     else empty (the services' default). Call with (dict "ctx" $ "value" V "percent" P). */}}
{{- define "courier.streamMaxBytes" -}}
{{- if not (kindIs "invalid" .value) -}}
{{- printf "%.0f" (float64 .value) -}}
{{- else if .ctx.Values.nats.enabled -}}
{{- $store := include "courier.bytes" .ctx.Values.nats.jetstream.maxFileStore -}}
{{- printf "%.0f" (floor (divf (mulf (float64 $store) .percent) 100)) -}}
{{- end -}}
{{- end -}}

{{/* Secrets ------------------------------------------------------------------------------- */}}

{{/* A value of an existing Secret (base64, as stored) or a new random one; keeps generated
     secrets stable across `helm upgrade`. Call with (dict "ctx" $ "name" N "key" K "length" L). */}}
{{- define "courier.secretValue" -}}
{{- $existing := lookup "v1" "Secret" .ctx.Release.Namespace .name -}}
{{- if and $existing $existing.data (hasKey $existing.data .key) -}}
{{- index $existing.data .key -}}
{{- else -}}
{{- randAlphaNum (int .length) | b64enc -}}
{{- end -}}
{{- end -}}

{{/* Pod hardening shared by the chart's own pods. */}}
{{- define "courier.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}
