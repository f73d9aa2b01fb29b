{{/*
NetworkPolicy following the flows of DESIGN.md §2: only the components listed in
`networkPolicy.ingressFromComponents` reach the gRPC port; Prometheus (the
monitoring namespace) reaches the HTTP port for /metrics; egress goes to the
listed Godel components, DNS, and the external dependencies named in
`networkPolicy.egressToExternal` (peers and ports from `global.networkPolicy.external`).
*/}}
{{- define "godel-service.networkpolicy" -}}
{{- if .Values.networkPolicy.enabled }}
{{- $root := . }}
{{- $np := .Values.global.networkPolicy }}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "godel-service.fullname" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "godel-service.labels" . | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "godel-service.selectorLabels" . | nindent 6 }}
  policyTypes: ["Ingress", "Egress"]
  ingress:
    - from:
        - namespaceSelector:
            {{- toYaml $np.monitoringNamespaceSelector | nindent 12 }}
      ports:
        - port: http
          protocol: TCP
    {{- if .Values.networkPolicy.ingressFromComponents }}
    - from:
        {{- range .Values.networkPolicy.ingressFromComponents }}
        - podSelector:
            matchLabels:
              {{- include "godel-service.peerSelector" (dict "component" . "root" $root) | nindent 14 }}
        {{- end }}
      ports:
        - port: grpc
          protocol: TCP
    {{- end }}
    {{- with .Values.networkPolicy.extraIngress }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  egress:
    {{- include "godel-service.dnsEgress" . | nindent 4 }}
    {{- if .Values.networkPolicy.egressToComponents }}
    - to:
        {{- range .Values.networkPolicy.egressToComponents }}
        - podSelector:
            matchLabels:
              {{- include "godel-service.peerSelector" (dict "component" . "root" $root) | nindent 14 }}
        {{- end }}
      ports:
        - port: {{ .Values.ports.grpc }}
          protocol: TCP
    {{- end }}
    {{- include "godel-service.externalEgress" (dict "root" . "external" .Values.networkPolicy.egressToExternal) | nindent 4 }}
    {{- with .Values.networkPolicy.extraEgress }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}
{{- end -}}

{{/* Egress to the cluster DNS. */}}
{{- define "godel-service.dnsEgress" -}}
- to:
    - namespaceSelector: {}
      podSelector:
        matchLabels:
          k8s-app: kube-dns
  ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- end -}}

{{/* Egress to the named external dependencies (`global.networkPolicy.external`). */}}
{{- define "godel-service.externalEgress" -}}
{{- $np := .root.Values.global.networkPolicy }}
{{- range .external }}
{{- $dep := index $np.external . }}
{{- if $dep.to }}
# {{ . }}
- to:
    {{- toYaml $dep.to | nindent 4 }}
  ports:
    {{- range $dep.ports }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* DNS plus the named external dependencies: the egress of a Job's pod. */}}
{{- define "godel-service.egressRules" -}}
{{ include "godel-service.dnsEgress" .root }}
{{ include "godel-service.externalEgress" . }}
{{- end -}}
