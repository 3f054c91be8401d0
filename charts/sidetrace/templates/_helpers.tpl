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

{{/* <fullname>-<suffix>, never longer than 63 characters (or "max": a CronJob's limit is 52) and
never the same for two suffixes: the prefix is cut before the suffix is added, so the suffix stays
whole (cutting the joined name instead gave -config, -alertmanager and -admin the name of the
release's own objects at release names of 40-53 characters). `sidetrace inject` computes the
ConfigMap's name the same way (proxy/src/inject/values.rs).
Takes (dict "c" CONTEXT "suffix" SUFFIX ["max" N]). */}}
{{- define "sidetrace.suffixedName" -}}
{{- $max := int (default 63 .max) -}}
{{- $keep := int (max 1 (sub $max (add1 (len .suffix)))) -}}
{{- printf "%s-%s" (include "sidetrace.fullname" .c | trunc $keep | trimSuffix "-") .suffix | trunc $max | trimSuffix "-" -}}
{{- end }}

{{/* Name of the ConfigMap holding sidetrace.yaml. */}}
{{- define "sidetrace.configMapName" -}}
{{- include "sidetrace.suffixedName" (dict "c" . "suffix" "config") -}}
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
{{- $delay := int (default 0 $v.sidetrace.drainDelaySeconds) -}}
{{- $_ := set $cfg "drain_delay" (printf "%ds" $delay) -}}
{{- if and $v.fronting.enabled (not $cfg.drain_timeout) -}}
{{- $grace := int $v.fronting.terminationGracePeriodSeconds -}}
{{- if lt $grace (add $delay 2) -}}
{{- fail (printf "fronting.terminationGracePeriodSeconds (%d) leaves no time to drain after sidetrace.drainDelaySeconds (%d): raise the grace period or lower the delay" $grace $delay) -}}
{{- end -}}
{{- $_ := set $cfg "drain_timeout" (printf "%ds" (max 1 (sub (sub $grace $delay) 5))) -}}
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

{{/* Refuses an OTLP endpoint whose well-known port contradicts the protocol the proxy would use:
4317 is OTLP/gRPC, 4318 OTLP/HTTP, and the proxy's default is http/protobuf, so `:4317` with no
protocol fails every export (spans dropped, SidetraceSpansDropped firing). The effective values are
the proxy's: the OTEL_* variables (sidetrace.otel) win over config.tracing.export. */}}
{{- define "sidetrace.checkOtlp" -}}
{{- $otel := .v.sidetrace.otel | default dict -}}
{{- $export := ((.v.sidetrace.config | default dict).tracing | default dict).export | default dict -}}
{{- $endpoint := coalesce $otel.tracesEndpoint $otel.endpoint $export.endpoint | default "" -}}
{{- $protocol := coalesce $otel.protocol $export.protocol | default "" -}}
{{- $port := regexFind ":(4317|4318)(/.*)?$" $endpoint | regexFind "431[78]" -}}
{{- if and (eq $port "4317") (ne $protocol "grpc") -}}
{{- fail (printf "sidetrace.otel: the endpoint %s is the OTLP/gRPC port 4317, but the protocol is %s; every export would fail. Set sidetrace.otel.protocol: grpc, or use the collector's OTLP/HTTP port 4318" $endpoint (ternary (printf "%q" $protocol) "not set (the proxy's default is http/protobuf)" (ne $protocol ""))) -}}
{{- else if and (eq $port "4318") (eq $protocol "grpc") -}}
{{- fail (printf "sidetrace.otel: the endpoint %s is the OTLP/HTTP port 4318, but the protocol is \"grpc\"; every export would fail. Set sidetrace.otel.protocol: http/protobuf (or leave it empty), or use the collector's OTLP/gRPC port 4317" $endpoint) -}}
{{- end -}}
{{- end }}

{{/* The dot of the shared sidecar definition (templates/_sidecar.tpl), as JSON (read it back with
fromJson): what that file documents, from the values the way the chart computes them. Takes the
context dict; .native true for the native-sidecar form. */}}
{{- define "sidetrace.sidecarContext" -}}
{{- include "sidetrace.checkOtlp" . -}}
{{- $st := .v.sidetrace -}}
{{- $ctx := dict "sidetrace" $st "native" (default false .native) -}}
{{- $_ := set $ctx "image" (include "sidetrace.image" .) -}}
{{- $_ := set $ctx "upstream" (include "sidetrace.upstream" .) -}}
{{- $_ := set $ctx "serviceName" (include "sidetrace.serviceName" .) -}}
{{- $_ := set $ctx "resourceAttributes" (include "sidetrace.resourceAttributes" .) -}}
{{- $_ := set $ctx "configMapName" (include "sidetrace.configMapName" .) -}}
{{- $_ := set $ctx "sampler" ($st.otel.tracesSampler | default "") -}}
{{- $_ := set $ctx "samplerArg" ($st.otel.tracesSamplerArg | default "") -}}
{{- toJson $ctx -}}
{{- end }}

{{/* The proxy container, without the leading "- ": the shared definition. .native adds
restartPolicy: Always (Kubernetes native sidecar, an init container that keeps running). */}}
{{- define "sidetrace.containerSpec" -}}
{{- include "sidetrace.sidecar.container" (include "sidetrace.sidecarContext" . | fromJson) -}}
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
{{- include "sidetrace.sidecar.volumes" (include "sidetrace.sidecarContext" (dict "v" $v "top" .) | fromJson) -}}
{{- end }}

{{/* Whether pods carry the prometheus.io/* annotations: monitoring.annotations, unless a
PodMonitor or ServiceMonitor scrapes them already (annotation discovery would count every series
twice). `sidetrace inject` decides the same way (proxy/src/inject/values.rs). "true" or "". */}}
{{- define "sidetrace.scrapeAnnotations" -}}
{{- $m := .monitoring -}}
{{- if and $m.annotations (not $m.podMonitor.enabled) (not $m.serviceMonitor.enabled) -}}true{{- end -}}
{{- end }}

{{/* prometheus.io/* scrape annotations for the pod (map entries of metadata.annotations); none
when a PodMonitor or ServiceMonitor is enabled. */}}
{{- define "sidetrace.podAnnotations" -}}
{{- $v := include "sidetrace.values" . | fromYaml -}}
{{- if include "sidetrace.scrapeAnnotations" $v -}}
{{- include "sidetrace.sidecar.annotations" (include "sidetrace.sidecarContext" (dict "v" $v "top" .) | fromJson) -}}
{{- end -}}
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
