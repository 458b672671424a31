{{/* Egress rules shared by the NetworkPolicies (networkpolicy.yaml). */}}

{{- define "courier.np.dns" -}}
- to:
    {{- toYaml .Values.networkPolicy.dns | nindent 4 }}
  ports:
    - {port: 53, protocol: UDP}
    - {port: 53, protocol: TCP}
{{- end }}
{{/* Egress to NATS: the bundled servers by label, else the external address. */}}
{{- define "courier.np.toNats" -}}
{{- if .Values.nats.enabled }}
- to:
    - podSelector:
        matchLabels:
          {{- include "courier.selectorLabels" (dict "ctx" $ "component" "messaging" "name" "nats") | nindent 10 }}
  ports:
    - {port: 4222, protocol: TCP}
{{- else }}
- ports:
    - {port: {{ .Values.networkPolicy.externalNats.port }}, protocol: TCP}
  {{- with .Values.networkPolicy.externalNats.cidrs }}
  to:
    {{- range . }}
    - ipBlock: {cidr: {{ . }}}
    {{- end }}
  {{- end }}
{{- end }}
{{- end }}
{{- define "courier.np.toMongodb" -}}
{{- if .Values.mongodb.enabled }}
- to:
    - podSelector:
        matchLabels:
          {{- include "courier.selectorLabels" (dict "ctx" $ "component" "database" "name" "mongodb") | nindent 10 }}
  ports:
    - {port: 27017, protocol: TCP}
{{- else }}
- ports:
    - {port: {{ .Values.networkPolicy.externalMongodb.port }}, protocol: TCP}
  {{- with .Values.networkPolicy.externalMongodb.cidrs }}
  to:
    {{- range . }}
    - ipBlock: {cidr: {{ . }}}
    {{- end }}
  {{- end }}
{{- end }}
{{- end }}
