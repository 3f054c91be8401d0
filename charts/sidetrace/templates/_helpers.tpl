{{/*
Helpers of the sidetrace chart.

Most helpers take a context dict (dict "v" VALUES "top" $) rather than $, because the library
templates (sidetrace.container, sidetrace.initContainer, sidetrace.volumes,
sidetrace.podAnnotations) also run inside a user's chart, where $ is the user's chart and this
chart's values sit under .Values.sidetrace. "sidetrace.values" picks the right map.
*/}}

{{/* The proxy version the default image tag points at: the chart's appVersion (checked by the
chart tests). A constant, because .Chart is the user's chart when a library template runs in it. */}}
{{- define "sidetrace.appVersion" -}}0.1.0{{- end }}

{{/* This chart's values as YAML, whether $ is this chart or a parent chart that depends on it
(the dependency must be named or aliased "sidetrace"). Use: $v := include "sidetrace.values" . | fromYaml */}}
{{- define "sidetrace.values" -}}
{{- if and (hasKey .Values "sidetrace") (kindIs "map" .Values.sidetrace) (hasKey .Values.sidetrace "sidetrace") -}}
{{- toYaml .Values.sidetrace -}}
{{- else if and (hasKey .Values "sidetrace") (kindIs "map" .Values.sidetrace) (hasKey .Values.sidetrace "image") -}}
{{- toYaml .Values -}}
{{- else -}}
{{- fail "sidetrace: this chart's values were not found; add the sidetrace chart as a dependency named \"sidetrace\" (see docs/kubernetes.md)" -}}
{{- end -}}
{{- end }}

{{/* Object name prefix: <release>-sidetrace unless the release name already says sidetrace. */}}
{{- define "sidetrace.fullname" -}}
{{- $v := .v -}}
{{- if $v.fullnameOverride -}}
{{- $v.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default "sidetrace" $v.nameOverride -}}
{{- if contains $name .top.Release.Name -}}
{{- .top.Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .top.Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end }}

{{/* Name of the ConfigMap holding sidetrace.yaml. */}}
{{- define "sidetrace.configMapName" -}}
{{- printf "%s-config" (include "sidetrace.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end }}

{{/* The service name: sidetrace.serviceName, else config.service.name, else the release name.
It is OTEL_SERVICE_NAME, service.name in the config and the `service` label of the SLO series. */}}
{{- define "sidetrace.serviceName" -}}
{{- $v := .v -}}
{{- $cfgService := (($v.sidetrace.config | default dict).service | default dict) -}}
{{- coalesce $v.sidetrace.serviceName $cfgService.name .top.Release.Name -}}
{{- end }}

{{/* Standard labels of this chart's own objects. */}}
{{- define "sidetrace.labels" -}}
helm.sh/chart: {{ printf "sidetrace-%s" (include "sidetrace.appVersion" .) }}
{{ include "sidetrace.selectorLabels" . }}
app.kubernetes.io/version: {{ include "sidetrace.appVersion" . | quote }}
app.kubernetes.io/managed-by: {{ .top.Release.Service }}
app.kubernetes.io/part-of: sidetrace
{{- with .v.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of the fronting pods. app.kubernetes.io/name is the fronted service's name,
so dashboards and kubectl show the service, not "sidetrace". */}}
{{- define "sidetrace.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sidetrace.serviceName" . | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .top.Release.Name }}
{{- end }}

{{/* Proxy image reference. */}}
{{- define "sidetrace.image" -}}
{{- $img := .v.sidetrace.image -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository (default (include "sidetrace.appVersion" .) $img.tag) -}}
{{- end -}}
{{- end }}

{{/* Where the proxy forwards inbound traffic. */}}
{{- define "sidetrace.upstream" -}}
{{- if .v.fronting.upstream -}}
{{- .v.fronting.upstream -}}
{{- else -}}
{{- printf "http://127.0.0.1:%d" (int .v.sidetrace.appPort) -}}
{{- end -}}
{{- end }}

{{/* The proxy config file: sidetrace.config plus what the chart knows (service name and
environment, upstream protocol, TLS file paths). Only the keys of docs/config.md. */}}
{{- define "sidetrace.configYaml" -}}
{{- $v := .v -}}
{{- $cfg := deepCopy ($v.sidetrace.config | default dict) -}}
{{- $svc := $cfg.service | default dict -}}
{{- $_ := set $svc "name" (include "sidetrace.serviceName" .) -}}
{{- if not $svc.environment }}{{ $_ := set $svc "environment" $v.environment }}{{ end -}}
{{- $_ := set $cfg "service" $svc -}}
{{- $inbound := $cfg.inbound | default dict -}}
{{- $_ := set $inbound "upstream_protocol" $v.sidetrace.upstreamProtocol -}}
{{- if $v.sidetrace.tls.secretName -}}
{{- $tls := dict "cert" "/etc/sidetrace-tls/tls.crt" "key" "/etc/sidetrace-tls/tls.key" -}}
{{- if $v.sidetrace.tls.clientCA }}{{ $_ := set $tls "client_ca" "/etc/sidetrace-tls/ca.crt" }}{{ end -}}
{{- $_ := set $inbound "tls" $tls -}}
{{- end -}}
{{- $_ := set $cfg "inbound" $inbound -}}
{{- if and $v.fronting.enabled (not $cfg.drain_timeout) -}}
{{- $_ := set $cfg "drain_timeout" (printf "%ds" (max 1 (sub (int $v.fronting.terminationGracePeriodSeconds) 5))) -}}
{{- end -}}
{{- toYaml $cfg -}}
{{- end }}

{{/* OTEL_RESOURCE_ATTRIBUTES: k8s.* from the Downward API variables defined before it. */}}
{{- define "sidetrace.resourceAttributes" -}}
{{- $attrs := list "k8s.pod.name=$(K8S_POD_NAME)" "k8s.namespace.name=$(K8S_NAMESPACE_NAME)" "k8s.node.name=$(K8S_NODE_NAME)" (printf "deployment.environment.name=%s" .v.environment) -}}
{{- $extra := .v.sidetrace.otel.resourceAttributes | default dict -}}
{{- range $k := keys $extra | sortAlpha -}}
{{- $attrs = append $attrs (printf "%s=%s" $k (index $extra $k)) -}}
{{- end -}}
{{- join "," $attrs -}}
{{- end }}

{{/* The proxy container, without the leading "- ". .native adds restartPolicy: Always
(Kubernetes native sidecar, an init container that keeps running). */}}
{{- define "sidetrace.containerSpec" -}}
{{- $v := .v -}}
{{- $st := $v.sidetrace -}}
{{- $otel := $st.otel -}}
name: {{ $st.containerName }}
image: {{ include "sidetrace.image" . | quote }}
imagePullPolicy: {{ $st.image.pullPolicy }}
{{- if .native }}
restartPolicy: Always
{{- end }}
args: ["run"]
ports:
  - name: st-inbound
    containerPort: {{ $st.ports.inbound }}
    protocol: TCP
  - name: st-admin
    containerPort: {{ $st.ports.admin }}
    protocol: TCP
env:
  - name: K8S_POD_NAME
    valueFrom:
      fieldRef:
        fieldPath: metadata.name
  - name: K8S_NAMESPACE_NAME
    valueFrom:
      fieldRef:
        fieldPath: metadata.namespace
  - name: K8S_NODE_NAME
    valueFrom:
      fieldRef:
        fieldPath: spec.nodeName
  - name: SIDETRACE_CONFIG
    value: /etc/sidetrace/sidetrace.yaml
  - name: SIDETRACE_INBOUND
    value: {{ printf "0.0.0.0:%d" (int $st.ports.inbound) | quote }}
  - name: SIDETRACE_UPSTREAM
    value: {{ include "sidetrace.upstream" . | quote }}
  {{- if gt (int $st.ports.outbound) 0 }}
  - name: SIDETRACE_OUTBOUND
    value: {{ printf "127.0.0.1:%d" (int $st.ports.outbound) | quote }}
  {{- end }}
  - name: SIDETRACE_ADMIN
    value: {{ printf "0.0.0.0:%d" (int $st.ports.admin) | quote }}
  - name: SIDETRACE_SERVICE_NAME
    value: {{ include "sidetrace.serviceName" . | quote }}
  - name: SIDETRACE_LOG_LEVEL
    value: {{ $st.log.level | quote }}
  - name: SIDETRACE_LOG_FORMAT
    value: {{ $st.log.format | quote }}
  - name: OTEL_SERVICE_NAME
    value: {{ include "sidetrace.serviceName" . | quote }}
  - name: OTEL_RESOURCE_ATTRIBUTES
    value: {{ include "sidetrace.resourceAttributes" . | quote }}
  {{- with $otel.endpoint }}
  - name: OTEL_EXPORTER_OTLP_ENDPOINT
    value: {{ . | quote }}
  {{- end }}
  {{- with $otel.tracesEndpoint }}
  - name: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
    value: {{ . | quote }}
  {{- end }}
  {{- with $otel.protocol }}
  - name: OTEL_EXPORTER_OTLP_PROTOCOL
    value: {{ . | quote }}
  {{- end }}
  {{- if $otel.headersSecret.name }}
  - name: OTEL_EXPORTER_OTLP_HEADERS
    valueFrom:
      secretKeyRef:
        name: {{ $otel.headersSecret.name }}
        key: {{ $otel.headersSecret.key }}
  {{- end }}
  {{- with $otel.tracesSampler }}
  - name: OTEL_TRACES_SAMPLER
    value: {{ . | quote }}
  {{- end }}
  {{- with $otel.tracesSamplerArg }}
  - name: OTEL_TRACES_SAMPLER_ARG
    value: {{ . | quote }}
  {{- end }}
  {{- with $otel.propagators }}
  - name: OTEL_PROPAGATORS
    value: {{ . | quote }}
  {{- end }}
  {{- with $st.extraEnv }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
startupProbe:
  httpGet:
    path: /live
    port: st-admin
  periodSeconds: {{ $st.probes.startup.periodSeconds }}
  failureThreshold: {{ $st.probes.startup.failureThreshold }}
livenessProbe:
  httpGet:
    path: /live
    port: st-admin
  periodSeconds: {{ $st.probes.liveness.periodSeconds }}
  failureThreshold: {{ $st.probes.liveness.failureThreshold }}
readinessProbe:
  httpGet:
    path: /ready
    port: st-admin
  periodSeconds: {{ $st.probes.readiness.periodSeconds }}
  failureThreshold: {{ $st.probes.readiness.failureThreshold }}
{{- with $st.resources }}
resources:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $st.securityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumeMounts:
  - name: sidetrace-config
    mountPath: /etc/sidetrace
    readOnly: true
  {{- if $st.tls.secretName }}
  - name: sidetrace-tls
    mountPath: /etc/sidetrace-tls
    readOnly: true
  {{- end }}
{{- end }}

{{/* ===== Library templates: include these in your own pod spec. ===== */}}

{{/* A regular sidecar container (a list item of `containers:`):
     containers:
       {{- include "sidetrace.container" . | nindent 8 }} */}}
{{- define "sidetrace.container" -}}
{{- $v := include "sidetrace.values" . | fromYaml -}}
- {{ include "sidetrace.containerSpec" (dict "v" $v "top" . "native" false) | indent 2 | trim }}
{{- end }}

{{/* The Kubernetes native sidecar (a list item of `initContainers:`): starts and becomes ready
before the app, keeps running, and does not keep a Job or CronJob pod from completing.
     initContainers:
       {{- include "sidetrace.initContainer" . | nindent 8 }} */}}
{{- define "sidetrace.initContainer" -}}
{{- $v := include "sidetrace.values" . | fromYaml -}}
- {{ include "sidetrace.containerSpec" (dict "v" $v "top" . "native" true) | indent 2 | trim }}
{{- end }}

{{/* The volumes the proxy mounts (list items of `volumes:`):
     volumes:
       {{- include "sidetrace.volumes" . | nindent 8 }} */}}
{{- define "sidetrace.volumes" -}}
{{- $v := include "sidetrace.values" . | fromYaml -}}
{{- $c := dict "v" $v "top" . -}}
- name: sidetrace-config
  configMap:
    name: {{ include "sidetrace.configMapName" $c }}
{{- if $v.sidetrace.tls.secretName }}
- name: sidetrace-tls
  secret:
    secretName: {{ $v.sidetrace.tls.secretName }}
{{- end }}
{{- end }}

{{/* prometheus.io/* scrape annotations for the pod (map entries of metadata.annotations). */}}
{{- define "sidetrace.podAnnotations" -}}
{{- $v := include "sidetrace.values" . | fromYaml -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ $v.sidetrace.ports.admin | quote }}
prometheus.io/path: /metrics
{{- end }}

{{/* ===== SLO rule helpers ===== */}}

{{/* Label matchers that scope the rules to this release's service. */}}
{{- define "sidetrace.sloSelector" -}}
namespace="{{ .top.Release.Namespace }}",service="{{ include "sidetrace.serviceName" . }}"
{{- end }}

{{/* Relabelings shared by the PodMonitor and the ServiceMonitor (prometheus-operator camelCase):
they put namespace, pod, service and environment on every series. */}}
{{- define "sidetrace.relabelings" -}}
- action: replace
  sourceLabels: [__meta_kubernetes_namespace]
  targetLabel: namespace
- action: replace
  sourceLabels: [__meta_kubernetes_pod_name]
  targetLabel: pod
- action: replace
  replacement: {{ include "sidetrace.serviceName" . | quote }}
  targetLabel: service
- action: replace
  replacement: {{ .v.environment | quote }}
  targetLabel: environment
{{- end }}
