{{- define "extproc-router.name" -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "extproc-router.selectorLabels" -}}
app.kubernetes.io/name: extproc-router
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "extproc-router.labels" -}}
{{ include "extproc-router.selectorLabels" . }}
app.kubernetes.io/part-of: extproc-router
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{/*
The router's config: files/router.yaml with the signal values applied, then .Values.config
deep-merged over it. Keys Envoy's config is rendered from are refused: they would disagree
with files/envoy.yaml.
*/}}
{{- define "extproc-router.config" -}}
{{- range $key := list "server" "envoy" "pools" -}}
{{- if hasKey $.Values.config $key -}}
{{- fail (printf "config.%s: Envoy's config is rendered from it; edit files/router.yaml and run `extproc-router render-manifests`" $key) -}}
{{- end -}}
{{- end -}}
{{- $config := .Files.Get "files/router.yaml" | fromYaml -}}
{{- $routing := $config.routing -}}
{{- $signals := .Values.signals -}}
{{- $weights := dict -}}
{{- range $name, $signal := $signals -}}
{{- $_ := set $weights $name (ternary (index $.Values.weights $name) 0 $signal.enabled) -}}
{{- end -}}
{{- $_ := set $routing "weights" $weights -}}
{{- if not $signals.keyword.enabled -}}
{{- $_ := set $routing "keyword_rules" list -}}
{{- end -}}
{{- if not $signals.embedding.enabled -}}
{{- $_ := set $routing "embedding_routes" list -}}
{{- else if not (kindIs "invalid" $signals.embedding.threshold) -}}
{{- range $route := $routing.embedding_routes -}}
{{- $_ := set $route "threshold" $signals.embedding.threshold -}}
{{- end -}}
{{- end -}}
{{- if not $signals.domain.enabled -}}
{{- $_ := set $routing.domains "floor" 0 -}}
{{- end -}}
{{- $_ := set $routing.complexity "token_thresholds" $signals.complexity.token_thresholds -}}
{{- toYaml (mergeOverwrite $config (deepCopy .Values.config)) -}}
{{- end -}}
