{{/* What both entries of the MutatingWebhookConfiguration share. The webhook never blocks the
cluster: failurePolicy Ignore (a pod is created without the sidecar when the webhook does not
answer within timeoutSeconds), and it has no side effects (dry-run requests are fine). Takes
(dict "w" .Values.webhook "name" <webhook Service name> "top" $). */}}
{{- define "sidetrace.webhookCommon" -}}
admissionReviewVersions: [v1]
sideEffects: None
failurePolicy: Ignore
timeoutSeconds: {{ .w.timeoutSeconds }}
reinvocationPolicy: Never
matchPolicy: Equivalent
clientConfig:
  service:
    name: {{ .name }}
    namespace: {{ .top.Release.Namespace }}
    path: /mutate
    port: 443
  {{- if not .w.certManager }}
  caBundle: {{ .w.caBundle }}
  {{- end }}
rules:
  - operations: [CREATE]
    apiGroups: [""]
    apiVersions: [v1]
    resources: [pods]
    scope: Namespaced
{{- end }}
