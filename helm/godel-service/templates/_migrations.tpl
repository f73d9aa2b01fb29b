{{/*
Migration hook Job (pre-install, pre-upgrade). The service binaries apply their
pending migrations when they start, before their listeners open, under a PostgreSQL
advisory lock; there is no separate migrate command yet. The Job therefore runs the
new image once with its listeners on loopback and background work that could act on
the queue switched off (`migrations.env`), waits until `/livez` answers — which
happens only after the migrations committed — and stops it with SIGTERM (a clean stop
exits 0). A failed migration makes the binary exit non-zero before listening, which
fails the Job and so the `helm upgrade`, before any running pod is replaced.
The waiter is a second container sharing the process namespace.
*/}}
{{- define "godel-service.migrations" -}}
{{- if and .Values.migrations.enabled .Values.usesDatabase }}
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ include "godel-service.fullname" . }}-migrate
  namespace: {{ .Release.Namespace }}
  labels:
    app.kubernetes.io/name: {{ include "godel-service.name" . }}-migrate
    app.kubernetes.io/instance: {{ .Release.Name }}
    app.kubernetes.io/part-of: godel
    app.kubernetes.io/component: {{ .Values.component }}-migrate
    app.kubernetes.io/managed-by: {{ .Release.Service }}
  annotations:
    helm.sh/hook: pre-install,pre-upgrade
    helm.sh/hook-weight: "0"
    helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
    {{- include "godel-service.checkovSkips" . | nindent 4 }}
spec:
  backoffLimit: 1
  activeDeadlineSeconds: {{ .Values.migrations.timeoutSeconds }}
  ttlSecondsAfterFinished: 3600
  template:
    metadata:
      labels:
        app.kubernetes.io/name: {{ include "godel-service.name" . }}-migrate
        app.kubernetes.io/instance: {{ .Release.Name }}
        app.kubernetes.io/part-of: godel
    spec:
      restartPolicy: Never
      shareProcessNamespace: true
      automountServiceAccountToken: false
      securityContext:
        {{- include "godel-service.podSecurityContext" . | nindent 8 }}
      {{- with .Values.global.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: migrate
          image: {{ include "godel-service.image" . }}
          imagePullPolicy: {{ .Values.image.pullPolicy }}
          args: ["--config", "/etc/godel/config.toml"]
          env:
            {{- include "godel-service.env" . | nindent 12 }}
            - name: GODEL_SERVER__HTTP_ADDR
              value: "127.0.0.1:18080"
            - name: GODEL_SERVER__GRPC_ADDR
              value: "127.0.0.1:19090"
            - name: GODEL_SERVER__DRAIN_DELAY
              value: "0s"
            {{- range $name, $value := .Values.migrations.env }}
            - name: {{ $name }}
              value: {{ $value | quote }}
            {{- end }}
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
        - name: wait-and-stop
          image: {{ .Values.migrations.waiterImage }}
          imagePullPolicy: IfNotPresent
          command:
            - sh
            - -c
            - |
              # Live means migrated; a binary that is gone before that failed.
              seen=0; waited=0
              while ! wget -q -O /dev/null http://127.0.0.1:18080/livez 2>/dev/null; do
                if pidof {{ .Values.binary }} >/dev/null; then seen=1
                elif [ "$seen" = 1 ] || [ "$waited" -ge 60 ]; then
                  echo "{{ .Values.binary }} stopped (or never started) before it was live"; exit 1
                fi
                sleep 1; waited=$((waited + 1))
              done
              echo "migrations applied; stopping {{ .Values.binary }}"
              kill -TERM $(pidof {{ .Values.binary }})
          resources:
            requests: {cpu: 10m, memory: 16Mi}
            limits: {cpu: 100m, memory: 32Mi}
          securityContext:
            {{- include "godel-service.containerSecurityContext" . | nindent 12 }}
      volumes:
        - name: config
          configMap:
            name: {{ include "godel-service.fullname" . }}-migrate
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
        {{- with .Values.extraVolumes }}
        {{- tpl (toYaml .) $ | nindent 8 }}
        {{- end }}
---
# The migration pod talks to PostgreSQL, NATS, DNS and the collector; nothing talks to it.
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "godel-service.fullname" . }}-migrate
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "godel-service.labels" . | nindent 4 }}
  annotations:
    helm.sh/hook: pre-install,pre-upgrade
    helm.sh/hook-weight: "-1"
    helm.sh/hook-delete-policy: before-hook-creation
spec:
  podSelector:
    matchLabels:
      app.kubernetes.io/name: {{ include "godel-service.name" . }}-migrate
      app.kubernetes.io/instance: {{ .Release.Name }}
  policyTypes: ["Ingress", "Egress"]
  ingress: []
  egress:
    {{- include "godel-service.egressRules" (dict "root" . "external" (list "postgresql" "nats" "otlp")) | nindent 4 }}
---
# The Job runs before the release's own ConfigMap exists on first install, so it
# gets a hook-scoped copy.
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "godel-service.fullname" . }}-migrate
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "godel-service.labels" . | nindent 4 }}
  annotations:
    helm.sh/hook: pre-install,pre-upgrade
    helm.sh/hook-weight: "-1"
    helm.sh/hook-delete-policy: before-hook-creation
data:
  config.toml: |
    {{- include "godel-service.toml" .Values.config | nindent 4 }}
{{- end }}
{{- end -}}

{{/* Everything a service chart renders from this library. */}}
{{- define "godel-service.all" -}}
{{ include "godel-service.configmap" . }}
---
{{ include "godel-service.deployment" . }}
---
{{ include "godel-service.service" . }}
---
{{ include "godel-service.pdb" . }}
{{- with (include "godel-service.hpa" .) }}
---
{{ . }}
{{- end }}
{{- with (include "godel-service.serviceaccount" .) }}
---
{{ . }}
{{- end }}
{{- with (include "godel-service.servicemonitor" .) }}
---
{{ . }}
{{- end }}
{{- with (include "godel-service.networkpolicy" .) }}
---
{{ . }}
{{- end }}
{{- with (include "godel-service.externalsecret" .) }}
---
{{ . }}
{{- end }}
{{- with (include "godel-service.migrations" .) }}
---
{{ . }}
{{- end }}
{{- end -}}
