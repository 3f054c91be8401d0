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

{{/* Selector labels of the fronting pods: the chart's name and the release, and nothing a value
change could touch. A Deployment's selector is immutable: a label that followed the service name
(or any other value) would make `helm upgrade` fail with "field is immutable" when it changes. The
service name is in the `service` label the monitors add, and in OTEL_SERVICE_NAME. */}}
{{- define "sidetrace.selectorLabels" -}}
app.kubernetes.io/name: {{ default "sidetrace" .v.nameOverride | trunc 63 | trimSuffix "-" }}
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
{{- if $v.fronting.upstream -}}
{{- /* A regular container: its preStop sleep (waitBeforeExitSeconds), SIGTERM, the delay, then
the drain. */ -}}
{{- $wait := int (default 0 $v.sidetrace.waitBeforeExitSeconds) -}}
{{- if lt $grace (add $wait $delay 2) -}}
{{- fail (printf "fronting.terminationGracePeriodSeconds (%d) leaves no time to drain after sidetrace.waitBeforeExitSeconds (%d) and sidetrace.drainDelaySeconds (%d): raise the grace period or lower the delay" $grace $wait $delay) -}}
{{- end -}}
{{- $_ := set $cfg "drain_timeout" (printf "%ds" (max 1 (sub (sub (sub $grace $wait) $delay) 5))) -}}
{{- else -}}
{{- /* A native sidecar gets SIGTERM only once the app has exited: after the app's preStop (the
delay) and its own shutdown (fronting.app.shutdownSeconds), inside the same grace period. Its own
delay is 0 (SIDETRACE_DRAIN_DELAY in _sidecar.tpl); what is left, less 2s, is its drain. */ -}}
{{- $app := int $v.fronting.app.shutdownSeconds -}}
{{- $left := sub (sub (sub $grace $delay) $app) 2 -}}
{{- if lt $left 1 -}}
{{- fail (printf "fronting.terminationGracePeriodSeconds (%d) leaves the proxy no time to drain: the app's preStop (sidetrace.drainDelaySeconds, %d) and shutdown (fronting.app.shutdownSeconds, %d) come first; raise the grace period" $grace $delay $app) -}}
{{- end -}}
{{- $_ := set $cfg "drain_timeout" (printf "%ds" $left) -}}
{{- end -}}
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

{{/* The settings of one workload (JSON; read it back with fromJson): workloads.<name> of the
values, {} for none. Takes (dict "v" VALUES "name" NAME). */}}
{{- define "sidetrace.workload" -}}
{{- if .name -}}
{{- $all := .v.workloads | default dict -}}
{{- if not (hasKey $all .name) -}}
{{- fail (printf "sidetrace: workload %q is not in the values' workloads (it has: %s)" .name (keys $all | sortAlpha | join ", " | default "none")) -}}
{{- end -}}
{{- toJson (index $all .name | default dict) -}}
{{- else -}}
{}
{{- end -}}
{{- end }}

{{/* The dot of the shared sidecar definition (templates/_sidecar.tpl), as JSON (read it back with
fromJson): what that file documents, from the values the way the chart computes them, with the
workload's settings (.w, from sidetrace.workload) over them as `sidetrace inject` puts a pod's
sidetrace.io/* annotations over them (proxy/src/inject/pod.rs). Takes the context dict; .native
true for the native-sidecar form. */}}
{{- define "sidetrace.sidecarContext" -}}
{{- include "sidetrace.checkOtlp" . -}}
{{- $w := .w | default dict -}}
{{- $st := .v.sidetrace -}}
{{- if $w.resources -}}
{{- $st = deepCopy .v.sidetrace -}}
{{- $_ := set $st "resources" (mergeOverwrite (deepCopy ($st.resources | default dict)) (deepCopy $w.resources)) -}}
{{- end -}}
{{- $ctx := dict "sidetrace" $st "native" (default false .native) -}}
{{- $_ := set $ctx "image" (include "sidetrace.image" .) -}}
{{- $upstream := include "sidetrace.upstream" . -}}
{{- if and $w.appPort (not .v.fronting.upstream) -}}
{{- $upstream = printf "http://127.0.0.1:%d" (int $w.appPort) -}}
{{- end -}}
{{- $_ := set $ctx "upstream" $upstream -}}
{{- $_ := set $ctx "serviceName" (coalesce $w.serviceName (include "sidetrace.serviceName" .)) -}}
{{- $_ := set $ctx "resourceAttributes" (include "sidetrace.resourceAttributes" .) -}}
{{- $_ := set $ctx "configMapName" (include "sidetrace.configMapName" .) -}}
{{- $sampler := $st.otel.tracesSampler | default "" -}}
{{- $samplerArg := $st.otel.tracesSamplerArg | default "" -}}
{{- if hasKey $w "samplingRatio" -}}
{{- /* A plain ratio sampler stays one; any other becomes the parent-based ratio. */ -}}
{{- $sampler = ternary "traceidratio" "parentbased_traceidratio" (eq $sampler "traceidratio") -}}
{{- $samplerArg = toString $w.samplingRatio -}}
{{- end -}}
{{- $_ := set $ctx "sampler" $sampler -}}
{{- $_ := set $ctx "samplerArg" $samplerArg -}}
{{- toJson $ctx -}}
{{- end }}

{{/* The proxy container, without the leading "- ": the shared definition, with
sidetrace.extraContainerFields merged over it (maps key by key, anything else replaced). .native
adds restartPolicy: Always (Kubernetes native sidecar, an init container that keeps running). */}}
{{- define "sidetrace.containerSpec" -}}
{{- $text := include "sidetrace.sidecar.container" (include "sidetrace.sidecarContext" . | fromJson) -}}
{{- with .v.sidetrace.extraContainerFields -}}
{{- /* The escape hatch, merged last as `sidetrace inject` merges it (proxy/src/inject/sidecar.rs). */ -}}
{{- $text = mergeOverwrite ($text | fromYaml) (deepCopy .) | toYaml | trim -}}
{{- end -}}
{{- $text -}}
{{- end }}

{{/* "top" when a library template was called with (dict "top" . "workload" NAME) rather than
with the chart's $ (which holds .Values). */}}
{{- define "sidetrace.callTop" -}}
{{- if and (kindIs "map" .) (hasKey . "top") (not (hasKey . "Values")) -}}top{{- end -}}
{{- end }}

{{/* ===== Library templates: include these in your own pod spec. =====
Each takes the chart's $ (.), or (dict "top" . "workload" NAME) for a workload that shares the
release with its own settings: workloads.NAME in the values (serviceName, appPort, samplingRatio,
resources, appContainer), the same settings that sidetrace.io/* annotations give injected pods. */}}

{{/* A regular sidecar container (a list item of `containers:`):
     containers:
       {{- include "sidetrace.container" . | nindent 8 }}
       {{- include "sidetrace.container" (dict "top" . "workload" "worker") | nindent 8 }} */}}
{{- define "sidetrace.container" -}}
{{- $top := ternary .top . (eq (include "sidetrace.callTop" .) "top") -}}
{{- $v := include "sidetrace.values" $top | fromYaml -}}
{{- $w := include "sidetrace.workload" (dict "v" $v "name" (ternary .workload "" (eq (include "sidetrace.callTop" .) "top"))) | fromJson -}}
- {{ include "sidetrace.containerSpec" (dict "v" $v "top" $top "native" false "w" $w) | indent 2 | trim }}
{{- end }}

{{/* The Kubernetes native sidecar (a list item of `initContainers:`): starts and becomes ready
before the app, keeps running, and does not keep a Job or CronJob pod from completing.
     initContainers:
       {{- include "sidetrace.initContainer" . | nindent 8 }} */}}
{{- define "sidetrace.initContainer" -}}
{{- $top := ternary .top . (eq (include "sidetrace.callTop" .) "top") -}}
{{- $v := include "sidetrace.values" $top | fromYaml -}}
{{- $w := include "sidetrace.workload" (dict "v" $v "name" (ternary .workload "" (eq (include "sidetrace.callTop" .) "top"))) | fromJson -}}
- {{ include "sidetrace.containerSpec" (dict "v" $v "top" $top "native" true "w" $w) | indent 2 | trim }}
{{- end }}

{{/* The volumes the proxy mounts (list items of `volumes:`):
     volumes:
       {{- include "sidetrace.volumes" . | nindent 8 }} */}}
{{- define "sidetrace.volumes" -}}
{{- $top := ternary .top . (eq (include "sidetrace.callTop" .) "top") -}}
{{- $v := include "sidetrace.values" $top | fromYaml -}}
{{- include "sidetrace.sidecar.volumes" (include "sidetrace.sidecarContext" (dict "v" $v "top" $top) | fromJson) -}}
{{- end }}

{{/* Whether pods carry the prometheus.io/* annotations: monitoring.annotations, unless a
PodMonitor or ServiceMonitor scrapes them already (annotation discovery would count every series
twice). `sidetrace inject` decides the same way (proxy/src/inject/values.rs). "true" or "". */}}
{{- define "sidetrace.scrapeAnnotations" -}}
{{- $m := .monitoring -}}
{{- if and $m.annotations (not $m.podMonitor.enabled) (not $m.serviceMonitor.enabled) -}}true{{- end -}}
{{- end }}

{{/* Pod annotations (map entries of metadata.annotations): sidetrace.io/service-name (which the
monitors' relabelings put in the `service` label; injection writes it too), prometheus.io/*
scrape annotations, none when a PodMonitor or ServiceMonitor is enabled, and for a workload
with an appContainer kubectl.kubernetes.io/default-container. */}}
{{- define "sidetrace.podAnnotations" -}}
{{- $top := ternary .top . (eq (include "sidetrace.callTop" .) "top") -}}
{{- $v := include "sidetrace.values" $top | fromYaml -}}
{{- $w := include "sidetrace.workload" (dict "v" $v "name" (ternary .workload "" (eq (include "sidetrace.callTop" .) "top"))) | fromJson -}}
{{- $lines := list -}}
{{- with $w.appContainer }}{{ $lines = append $lines (printf "kubectl.kubernetes.io/default-container: %s" (toJson .)) }}{{ end -}}
{{- $service := coalesce $w.serviceName (include "sidetrace.serviceName" (dict "v" $v "top" $top)) -}}
{{- $lines = append $lines (printf "sidetrace.io/service-name: %s" (toJson $service)) -}}
{{- if include "sidetrace.scrapeAnnotations" $v -}}
{{- $lines = append $lines (include "sidetrace.sidecar.annotations" (include "sidetrace.sidecarContext" (dict "v" $v "top" $top) | fromJson)) -}}
{{- end -}}
{{- join "\n" $lines -}}
{{- end }}

{{/* ===== SLO rule helpers ===== */}}

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
# A workload with its own service name (sidetrace.io/service-name on the pod) keeps it.
- action: replace
  sourceLabels: [__meta_kubernetes_pod_annotation_sidetrace_io_service_name]
  regex: (.+)
  targetLabel: service
- action: replace
  replacement: {{ .v.environment | quote }}
  targetLabel: environment
{{- end }}
