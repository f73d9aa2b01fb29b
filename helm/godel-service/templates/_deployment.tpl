{{/* Environment every container of the service gets: listeners, drain timing, shared endpoints, secrets. */}}
{{- define "godel-service.env" -}}
- name: GODEL_SERVER__HTTP_ADDR
  value: "0.0.0.0:{{ .Values.ports.http }}"
- name: GODEL_SERVER__GRPC_ADDR
  value: "0.0.0.0:{{ .Values.ports.grpc }}"
- name: GODEL_SERVER__SHUTDOWN_GRACE
  value: "{{ .Values.server.shutdownGraceSeconds }}s"
- name: GODEL_SERVER__DRAIN_DELAY
  value: "{{ .Values.server.drainDelaySeconds }}s"
- name: GODEL_TELEMETRY__LOG_FORMAT
  value: json
{{- with .Values.global.otlp.endpoint }}
- name: GODEL_TELEMETRY__OTLP_ENDPOINT
  value: {{ . | quote }}
- name: GODEL_TELEMETRY__SAMPLE_RATIO
  value: {{ $.Values.global.otlp.sampleRatio | quote }}
{{- end }}
{{- if and .Values.usesBus .Values.global.nats.url }}
- name: GODEL_BUS__URL
  value: {{ .Values.global.nats.url | quote }}
{{- end }}
{{- $secret := include "godel-service.secretName" . }}
{{- if $secret }}
{{- range $name, $key := .Values.secrets.env }}
- name: {{ $name }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $key }}
{{- end }}
{{- end }}
{{- range $name, $value := .Values.extraEnvTpl }}
- name: {{ $name }}
  value: {{ tpl $value $ | quote }}
{{- end }}
{{- range $name, $value := .Values.extraEnv }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- with .Values.extraEnvRaw }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The Secret holding the service's credentials: an existing one, or the one the ExternalSecret creates. */}}
{{- define "godel-service.secretName" -}}
{{- if .Values.secrets.existingSecret -}}
{{- .Values.secrets.existingSecret -}}
{{- else if .Values.externalSecret.enabled -}}
{{- include "godel-service.fullname" . -}}
{{- end -}}
{{- end -}}

{{- define "godel-service.deployment" -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "godel-service.fullname" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "godel-service.labels" . | nindent 4 }}
  annotations:
    {{- include "godel-service.checkovSkips" . | nindent 4 }}
spec:
  {{- if not .Values.autoscaling.enabled }}
  replicas: {{ .Values.replicaCount }}
  {{- end }}
  revisionHistoryLimit: 5
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxUnavailable: 0
      maxSurge: {{ .Values.rollingUpdate.maxSurge }}
  selector:
    matchLabels:
      {{- include "godel-service.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "godel-service.labels" . | nindent 8 }}
      annotations:
        checksum/config: {{ include "godel-service.toml" .Values.config | sha256sum }}
        {{- with .Values.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "godel-service.serviceAccountName" . }}
      automountServiceAccountToken: {{ .Values.serviceAccount.automountToken }}
      terminationGracePeriodSeconds: {{ include "godel-service.terminationGrace" . }}
      {{- with .Values.global.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- include "godel-service.podSecurityContext" . | nindent 8 }}
      {{- with .Values.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      topologySpreadConstraints:
        - maxSkew: 1
          topologyKey: topology.kubernetes.io/zone
          whenUnsatisfiable: ScheduleAnyway
          labelSelector:
            matchLabels:
              {{- include "godel-service.selectorLabels" . | nindent 14 }}
        - maxSkew: 1
          topologyKey: kubernetes.io/hostname
          whenUnsatisfiable: ScheduleAnyway
          labelSelector:
            matchLabels:
              {{- include "godel-service.selectorLabels" . | nindent 14 }}
      {{- with .Values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ .Values.component }}
          image: {{ include "godel-service.image" . }}
          imagePullPolicy: {{ .Values.image.pullPolicy }}
          args: ["--config", "/etc/godel/config.toml"]
          env:
            {{- include "godel-service.env" . | nindent 12 }}
          ports:
            - name: http
              containerPort: {{ .Values.ports.http }}
              protocol: TCP
            - name: grpc
              containerPort: {{ .Values.ports.grpc }}
              protocol: TCP
          startupProbe:
            httpGet:
              path: /livez
              port: http
            periodSeconds: 2
            failureThreshold: {{ .Values.probes.startupFailureThreshold }}
          livenessProbe:
            httpGet:
              path: /livez
              port: http
            periodSeconds: 10
            timeoutSeconds: 3
            failureThreshold: 3
          readinessProbe:
            httpGet:
              path: /readyz
              port: http
            periodSeconds: {{ .Values.probes.readinessPeriodSeconds }}
            timeoutSeconds: 6
            failureThreshold: 2
          lifecycle:
            preStop:
              sleep:
                seconds: {{ .Values.lifecycle.preStopSleepSeconds }}
          resources:
            {{- toYaml .Values.resources | nindent 12 }}
          securityContext:
            {{- include "godel-service.containerSecurityContext" . | nindent 12 }}
          volumeMounts:
            - name: config
              mountPath: /etc/godel
              readOnly: true
            - name: tmp
              mountPath: /tmp
            {{- with .Values.extraVolumeMounts }}
            {{- tpl (toYaml .) $ | nindent 12 }}
            {{- end }}
      volumes:
        - name: config
          configMap:
            name: {{ include "godel-service.fullname" . }}
        - name: tmp
          emptyDir:
            sizeLimit: 256Mi
        {{- with .Values.extraVolumes }}
        {{- tpl (toYaml .) $ | nindent 8 }}
        {{- end }}
{{- end -}}

{{- define "godel-service.configmap" -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "godel-service.fullname" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "godel-service.labels" . | nindent 4 }}
data:
  config.toml: |
    # Rendered from the chart's `config` values; GODEL_* environment variables
    # (listeners, endpoints, secrets) override it.
    {{- include "godel-service.toml" .Values.config | nindent 4 }}
{{- end -}}

{{/* `toToml`, with whole numbers written as integers: Helm reads every YAML number
as a float, and the services' integer settings reject `1000.0`. */}}
{{- define "godel-service.toml" -}}
{{- regexReplaceAll "(?m)= (-?[0-9]+)\\.0$" (toToml .) "= ${1}" -}}
{{- end -}}
