{{/*
The sidecar: the one definition of the proxy container, its volumes and the pod annotations it
needs. Three readers render this file: the library templates of this chart (_helpers.tpl:
sidetrace.container, sidetrace.initContainer, sidetrace.volumes, sidetrace.podAnnotations),
`sidetrace inject` and `sidetrace webhook`, which embed it and render it with a small reader of
their own. Keep to what that reader understands: {{ .a.b }}, {{ .a.b | toJson }}, {{ $.a.b }},
if / else / end, range over a list, define, comments and the trim markers; anything else fails
the binary's unit tests. Quote strings with toJson (its output is valid YAML), never quote.

The dot holds:
  .sidetrace           this chart's `sidetrace:` values
  .native              true for the native sidecar (an init container with restartPolicy: Always)
  .image               the image reference (repository:tag or repository@digest)
  .upstream            where the proxy forwards (http://127.0.0.1:<app port>)
  .serviceName         OTEL_SERVICE_NAME
  .resourceAttributes  OTEL_RESOURCE_ATTRIBUTES
  .configMapName       the ConfigMap holding sidetrace.yaml
  .sampler, .samplerArg  OTEL_TRACES_SAMPLER and its argument; empty: not set
*/}}

{{- define "sidetrace.sidecar.container" -}}
name: {{ .sidetrace.containerName | toJson }}
image: {{ .image | toJson }}
imagePullPolicy: {{ .sidetrace.image.pullPolicy | toJson }}
{{- if .native }}
restartPolicy: Always
{{- end }}
args: ["run"]
ports:
  - name: st-inbound
    containerPort: {{ .sidetrace.ports.inbound }}
    protocol: TCP
  - name: st-admin
    containerPort: {{ .sidetrace.ports.admin }}
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
  # 0.0.0.0 takes IPv4 only; [::] (sidetrace.dualStack) takes IPv6 and, mapped, IPv4.
  - name: SIDETRACE_INBOUND
    value: "{{ if .sidetrace.dualStack }}[::]{{ else }}0.0.0.0{{ end }}:{{ .sidetrace.ports.inbound }}"
  - name: SIDETRACE_UPSTREAM
    value: {{ .upstream | toJson }}
  {{- if .sidetrace.ports.outbound }}
  - name: SIDETRACE_OUTBOUND
    value: "127.0.0.1:{{ .sidetrace.ports.outbound }}"
  {{- end }}
  - name: SIDETRACE_ADMIN
    value: "{{ if .sidetrace.dualStack }}[::]{{ else }}0.0.0.0{{ end }}:{{ .sidetrace.ports.admin }}"
  {{- if .native }}
  # A native sidecar gets SIGTERM after the app has exited and the pod has left the endpoints:
  # a delay would take clients for an app that is gone. The app's preStop covers the delay.
  - name: SIDETRACE_DRAIN_DELAY
    value: "0s"
  {{- end }}
  - name: SIDETRACE_SERVICE_NAME
    value: {{ .serviceName | toJson }}
  - name: SIDETRACE_WORKER_THREADS
    value: "{{ .sidetrace.workerThreads }}"
  - name: SIDETRACE_LOG_LEVEL
    value: {{ .sidetrace.log.level | toJson }}
  - name: SIDETRACE_LOG_FORMAT
    value: {{ .sidetrace.log.format | toJson }}
  - name: OTEL_SERVICE_NAME
    value: {{ .serviceName | toJson }}
  # $(VAR) expands only variables defined above it.
  - name: OTEL_RESOURCE_ATTRIBUTES
    value: {{ .resourceAttributes | toJson }}
  {{- if .sidetrace.otel.endpoint }}
  - name: OTEL_EXPORTER_OTLP_ENDPOINT
    value: {{ .sidetrace.otel.endpoint | toJson }}
  {{- end }}
  {{- if .sidetrace.otel.tracesEndpoint }}
  - name: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
    value: {{ .sidetrace.otel.tracesEndpoint | toJson }}
  {{- end }}
  {{- if .sidetrace.otel.protocol }}
  - name: OTEL_EXPORTER_OTLP_PROTOCOL
    value: {{ .sidetrace.otel.protocol | toJson }}
  {{- end }}
  {{- if .sidetrace.otel.headersSecret.name }}
  - name: OTEL_EXPORTER_OTLP_HEADERS
    valueFrom:
      secretKeyRef:
        name: {{ .sidetrace.otel.headersSecret.name | toJson }}
        key: {{ .sidetrace.otel.headersSecret.key | toJson }}
  {{- end }}
  {{- if .sampler }}
  - name: OTEL_TRACES_SAMPLER
    value: {{ .sampler | toJson }}
  {{- end }}
  {{- if .samplerArg }}
  - name: OTEL_TRACES_SAMPLER_ARG
    value: {{ .samplerArg | toJson }}
  {{- end }}
  {{- if .sidetrace.otel.propagators }}
  - name: OTEL_PROPAGATORS
    value: {{ .sidetrace.otel.propagators | toJson }}
  {{- end }}
  {{- range .sidetrace.extraEnv }}
  - {{ . | toJson }}
  {{- end }}
startupProbe:
  httpGet:
    path: /live
    port: st-admin
  periodSeconds: {{ .sidetrace.probes.startup.periodSeconds }}
  failureThreshold: {{ .sidetrace.probes.startup.failureThreshold }}
livenessProbe:
  httpGet:
    path: /live
    port: st-admin
  periodSeconds: {{ .sidetrace.probes.liveness.periodSeconds }}
  failureThreshold: {{ .sidetrace.probes.liveness.failureThreshold }}
readinessProbe:
  httpGet:
    path: /ready
    port: st-admin
  periodSeconds: {{ .sidetrace.probes.readiness.periodSeconds }}
  failureThreshold: {{ .sidetrace.probes.readiness.failureThreshold }}
{{- if .sidetrace.resources }}
resources: {{ .sidetrace.resources | toJson }}
{{- end }}
{{- if .native }}
{{- else }}
{{- if .sidetrace.waitBeforeExitSeconds }}
# A regular container gets SIGTERM with the app: the sleep keeps the proxy up (inbound, outbound)
# while the app shuts down. A native sidecar is stopped after the app already.
lifecycle:
  preStop:
    sleep:
      seconds: {{ .sidetrace.waitBeforeExitSeconds }}
{{- end }}
{{- end }}
{{- if .sidetrace.securityContext }}
securityContext: {{ .sidetrace.securityContext | toJson }}
{{- end }}
volumeMounts:
  - name: sidetrace-config
    mountPath: /etc/sidetrace
    readOnly: true
  {{- if .sidetrace.tls.secretName }}
  - name: sidetrace-tls
    mountPath: /etc/sidetrace-tls
    readOnly: true
  {{- end }}
{{- end }}

{{- define "sidetrace.sidecar.volumes" -}}
- name: sidetrace-config
  configMap:
    name: {{ .configMapName | toJson }}
{{- if .sidetrace.tls.secretName }}
- name: sidetrace-tls
  secret:
    secretName: {{ .sidetrace.tls.secretName | toJson }}
{{- end }}
{{- end }}

{{- define "sidetrace.sidecar.annotations" -}}
prometheus.io/scrape: "true"
prometheus.io/port: "{{ .sidetrace.ports.admin }}"
prometheus.io/path: /metrics
{{- end }}
