{{- define "orion.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "orion.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "orion.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "orion.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "orion.secretName" -}}
{{- .Values.existingSecret | default (printf "%s-secrets" (include "orion.fullname" .)) -}}
{{- end -}}

{{- define "orion.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "orion.fullname" .) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{/* The environment every Orion process shares: the config file, the data directory, the
bus. Secrets are wired per process in the helpers below: each gets only those it uses. */}}
{{- define "orion.env.common" -}}
- name: ORION_CONFIG
  value: /etc/orion/orion.toml
- name: ORION__DATA_DIR
  value: /var/lib/orion
- name: ORION__BUS__PREFIX
  value: {{ .Values.nats.prefix | quote }}
- name: ORION__BUS__REPLICAS
  value: {{ .Values.nats.replicas | default 1 | quote }}
- name: ORION__BUS__URL
  valueFrom:
    secretKeyRef: { name: {{ include "orion.secretName" . }}, key: nats-url }
{{- end -}}

{{/* The database (its URL may hold a password). */}}
{{- define "orion.env.database" -}}
- name: ORION__DATABASE__URL
  valueFrom:
    secretKeyRef: { name: {{ include "orion.secretName" . }}, key: database-url }
{{- end -}}

{{/* The model's key and its response cache: agents that ask a model. */}}
{{- define "orion.env.model" -}}
- name: ORION__REDIS__URL
  valueFrom:
    secretKeyRef: { name: {{ include "orion.secretName" . }}, key: redis-url, optional: true }
- name: ORION__LLM__API_KEY
  valueFrom:
    secretKeyRef: { name: {{ include "orion.secretName" . }}, key: llm-api-key, optional: true }
{{- end -}}

{{/* The key that seals and opens repository credentials: the gateway (which seals them) and
the agents that clone and push private remotes; and each forge's token and webhook secret. */}}
{{- define "orion.env.credentials" -}}
- name: ORION__SECRETS__CREDENTIALS_KEY
  valueFrom:
    secretKeyRef: { name: {{ include "orion.secretName" . }}, key: credentials-key, optional: true }
{{- range $name, $forge := .Values.secrets.forges }}
- name: ORION__FORGES__{{ upper $name }}__TOKEN
  valueFrom:
    secretKeyRef: { name: {{ include "orion.secretName" $ }}, key: forge-{{ $name }}-token, optional: true }
- name: ORION__FORGES__{{ upper $name }}__WEBHOOK_SECRET
  valueFrom:
    secretKeyRef: { name: {{ include "orion.secretName" $ }}, key: forge-{{ $name }}-webhook-secret, optional: true }
{{- end }}
{{- end -}}

{{/* Token verification: the gateway only. */}}
{{- define "orion.env.auth" -}}
- name: ORION__AUTH__MODE
  value: jwt
- name: ORION__AUTH__JWT__SECRET
  valueFrom:
    secretKeyRef: { name: {{ include "orion.secretName" . }}, key: jwt-secret }
{{- with .Values.auth.issuer }}
- name: ORION__AUTH__JWT__ISSUER
  value: {{ . | quote }}
{{- end }}
{{- with .Values.auth.audience }}
- name: ORION__AUTH__JWT__AUDIENCE
  value: {{ . | quote }}
{{- end }}
{{- end -}}

{{/* Writable places under a read-only root filesystem, and the config file. */}}
{{- define "orion.volumeMounts" -}}
- name: config
  mountPath: /etc/orion
  readOnly: true
- name: data
  mountPath: /var/lib/orion
- name: tmp
  mountPath: /tmp
{{- end -}}

{{- define "orion.volumes" -}}
- name: config
  configMap:
    name: {{ include "orion.fullname" . }}-config
- name: data
  emptyDir: {}
- name: tmp
  emptyDir: {}
{{- end -}}

{{- define "orion.podSpecCommon" -}}
serviceAccountName: {{ include "orion.serviceAccountName" . }}
securityContext: {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity: {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
