{{/*
Templates here use only: if/else/end, include, toYaml, nindent, indent, quote, default and
.Values/.Release/.Chart fields. crates/operator/tests/rbac.rs renders the chart with a small
renderer of exactly that subset (there is no helm binary in CI) and compares the result with
deploy/operator.yaml; keep to it, or extend the renderer.

Object names are fixed (kredis-operator): the operator's Lease name is fixed too, and the CRD
is cluster-wide, so one release per cluster.
*/}}

{{/* Labels of every object: the plain manifests' plus Helm's bookkeeping. */}}
{{- define "kredis.labels" -}}
app.kubernetes.io/name: kredis-operator
app.kubernetes.io/part-of: kredis
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end }}

{{/* The pod selector. Selectors are immutable: never add to it. */}}
{{- define "kredis.selectorLabels" -}}
app.kubernetes.io/name: kredis-operator
{{- end }}
