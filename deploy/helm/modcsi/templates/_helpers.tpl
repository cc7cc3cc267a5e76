{{/*
Names. The fullname is the release name when it already holds the chart's name
(`modcsi-rds` → `modcsi-rds-controller`, `modcsi-rds-node`), else `<release>-modcsi`. It is cut to
52 characters so that every object name (`<fullname>-<suffix>`) stays within 63.
*/}}
{{- define "modcsi.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 52 | trimSuffix "-" -}}
{{- end -}}

{{- define "modcsi.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "modcsi.driverName" -}}
{{- required "driverName is required (the CSI driver name, e.g. rds.csi.srvlab.io)" .Values.driverName -}}
{{- end -}}

{{/* Labels on every object; no Helm-only labels, so the rendered plain manifests read the same. */}}
{{- define "modcsi.labels" -}}
app.kubernetes.io/name: {{ include "modcsi.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: modcsi
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "controller") */}}
{{- define "modcsi.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modcsi.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "modcsi.componentLabels" -}}
{{ include "modcsi.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "modcsi.controllerServiceAccount" -}}
{{- include "modcsi.fullname" . -}}-controller
{{- end -}}

{{- define "modcsi.nodeServiceAccount" -}}
{{- include "modcsi.fullname" . -}}-node
{{- end -}}

{{/* An image reference: (dict "image" .Values.x.image "default" "<tag when empty>") */}}
{{- define "modcsi.image" -}}
{{- $tag := default .default .image.tag -}}
{{- printf "%s:%s" (required "an image repository is required" .image.repository) (required "an image tag is required" $tag) -}}
{{- end -}}

{{/*
The backend configuration: `backend.config.common` overlaid with the component's own table
(`backend.config.controller` or `backend.config.node`), as a TOML document. Empty when both are.
(dict "root" $ "component" "controller")
*/}}
{{- define "modcsi.backendConfig" -}}
{{- $config := .root.Values.backend.config -}}
{{- $merged := mustMergeOverwrite (deepCopy (default (dict) $config.common)) (deepCopy (default (dict) (get $config .component))) -}}
{{- if $merged -}}
{{- include "modcsi.toml" $merged | trim -}}
{{- end -}}
{{- end -}}

{{/*
TOML from a map, for `--backend-config`. A map that is exactly `{secret-file: PATH}` is written
inline, `{ secret-file = "PATH" }`: the host's secret reference. Other maps become tables, keys
sorted. Whole numbers are written as integers (Helm reads every YAML number as a float, and the
host reads `22.0` as the string "22.0", not a port).
*/}}
{{- define "modcsi.toml" -}}
{{- include "modcsi.tomlTable" (dict "table" . "path" "") -}}
{{- end -}}

{{- define "modcsi.tomlTable" -}}
{{- $table := .table -}}
{{- $path := .path -}}
{{- range $k := keys $table | sortAlpha -}}
{{- $v := get $table $k -}}
{{- if or (not (kindIs "map" $v)) (include "modcsi.isSecretRef" $v) }}
{{ include "modcsi.tomlKey" $k }} = {{ include "modcsi.tomlValue" $v }}
{{- end -}}
{{- end -}}
{{- range $k := keys $table | sortAlpha -}}
{{- $v := get $table $k -}}
{{- if and (kindIs "map" $v) (not (include "modcsi.isSecretRef" $v)) -}}
{{- $sub := include "modcsi.tomlKey" $k -}}
{{- if $path -}}{{- $sub = printf "%s.%s" $path $sub -}}{{- end -}}
{{- $leaves := false -}}
{{- range $vv := values $v -}}
{{- if or (not (kindIs "map" $vv)) (include "modcsi.isSecretRef" $vv) -}}{{- $leaves = true -}}{{- end -}}
{{- end -}}
{{- if $leaves }}

[{{ $sub }}]
{{- end -}}
{{- include "modcsi.tomlTable" (dict "table" $v "path" $sub) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "modcsi.isSecretRef" -}}
{{- if and (kindIs "map" .) (eq (len .) 1) (hasKey . "secret-file") -}}true{{- end -}}
{{- end -}}

{{- define "modcsi.tomlKey" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . -}}{{ . }}{{- else -}}{{ toJson . }}{{- end -}}
{{- end -}}

{{- define "modcsi.tomlValue" -}}
{{- if kindIs "string" . -}}
{{- toJson . -}}
{{- else if kindIs "bool" . -}}
{{- ternary "true" "false" . -}}
{{- else if or (kindIs "float64" .) (kindIs "float32" .) -}}
{{- if eq (float64 .) (floor .) -}}{{- int64 . -}}{{- else -}}{{- . -}}{{- end -}}
{{- else if or (kindIs "int" .) (kindIs "int64" .) (kindIs "int32" .) -}}
{{- . -}}
{{- else if kindIs "slice" . -}}
{{- $items := list -}}
{{- range $item := . -}}{{- $items = append $items (include "modcsi.tomlValue" $item) -}}{{- end -}}
[{{ join ", " $items }}]
{{- else if include "modcsi.isSecretRef" . -}}
{ secret-file = {{ toJson (get . "secret-file") }} }
{{- else -}}
{{- fail (printf "backend.config: a value of kind %s cannot be written as TOML here" (kindOf .)) -}}
{{- end -}}
{{- end -}}

{{/*
Where the backend component is, inside the modcsi container.
  image:         the modcsi image's own copy, <backend.imageDir>/<backend.file>
  initContainer: copied by an init container from another image into an emptyDir
  hostPath:      a directory of the node, mounted read-only
  oci:           an OCI reference the host pulls, verifies by digest and caches itself
*/}}
{{- define "modcsi.backendPath" -}}
{{- $b := .Values.backend -}}
{{- if eq $b.source "oci" -}}
{{- $ref := required "backend.oci.reference is required (oci://registry/repository@sha256:...)" $b.oci.reference -}}
{{- if not (hasPrefix "oci://" $ref) -}}
{{- fail (printf "backend.oci.reference %q must start with oci://" $ref) -}}
{{- end -}}
{{- $ref -}}
{{- else -}}
{{- $file := required "backend.file is required (e.g. rds.wasm)" $b.file -}}
{{- if eq $b.source "image" -}}
{{- printf "%s/%s" $b.imageDir $file -}}
{{- else if eq $b.source "initContainer" -}}
{{- printf "/opt/modcsi/delivered/%s" $file -}}
{{- else if eq $b.source "hostPath" -}}
{{- printf "/opt/modcsi/host/%s" $file -}}
{{- else -}}
{{- fail (printf "backend.source %q: use image, initContainer, hostPath or oci" $b.source) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "modcsi.backendInitContainers" -}}
{{- $b := .Values.backend -}}
{{- if eq $b.source "initContainer" }}
- name: backend
  image: {{ include "modcsi.image" (dict "image" $b.initContainer.image "default" "") }}
  imagePullPolicy: {{ $b.initContainer.image.pullPolicy }}
  {{- if $b.initContainer.command }}
  command: {{- toYaml $b.initContainer.command | nindent 4 }}
  {{- else }}
  command:
    - cp
    - {{ required "backend.initContainer.path is required (the .wasm inside that image)" $b.initContainer.path }}
    - /opt/modcsi/delivered/{{ $b.file }}
  {{- end }}
  securityContext:
    allowPrivilegeEscalation: false
    readOnlyRootFilesystem: true
    capabilities: {drop: [ALL]}
  volumeMounts:
    - {name: backend, mountPath: /opt/modcsi/delivered}
{{- end -}}
{{- end -}}

{{- define "modcsi.backendVolumeMount" -}}
{{- $b := .Values.backend -}}
{{- if eq $b.source "initContainer" }}
- {name: backend, mountPath: /opt/modcsi/delivered, readOnly: true}
{{- else if eq $b.source "hostPath" }}
- {name: backend, mountPath: /opt/modcsi/host, readOnly: true}
{{- end -}}
{{- end -}}

{{- define "modcsi.backendVolume" -}}
{{- $b := .Values.backend -}}
{{- if eq $b.source "initContainer" }}
- name: backend
  emptyDir: {}
{{- else if eq $b.source "hostPath" }}
- name: backend
  hostPath: {path: {{ required "backend.hostPath.dir is required" $b.hostPath.dir }}, type: Directory}
{{- end -}}
{{- end -}}

{{/* The secret files (backend.secret), mounted where the configuration's secret-file paths point. */}}
{{- define "modcsi.secretName" -}}
{{- default (printf "%s-backend-secrets" (include "modcsi.fullname" .)) .Values.backend.secret.name -}}
{{- end -}}

{{- define "modcsi.secretMounted" -}}
{{- if get .root.Values.backend.secret .component -}}true{{- end -}}
{{- end -}}

{{/*
`modcsi serve` arguments both components share: (dict "root" $ "component" "controller")
*/}}
{{- define "modcsi.serveArgs" -}}
{{- $v := .root.Values -}}
- serve
- --mode={{ .component }}
- --driver-name={{ include "modcsi.driverName" .root }}
- --backend={{ include "modcsi.backendPath" .root }}
{{- if and (eq $v.backend.source "oci") $v.backend.oci.insecureRegistries }}
- --insecure-registry={{ join "," $v.backend.oci.insecureRegistries }}
{{- end }}
- --endpoint=unix:///csi/csi.sock
- --log-format={{ $v.host.logFormat }}
- --call-timeout={{ $v.host.callTimeout }}
- --backend-memory-mib={{ int64 $v.host.backendMemoryMiB }}
- --max-concurrent-calls={{ int64 $v.host.maxConcurrentCalls }}
{{- if include "modcsi.backendConfig" . }}
- --backend-config=/etc/modcsi/config/{{ .component }}.toml
{{- end }}
{{- if $v.metrics.enabled }}
{{- $port := get (get $v .component).ports "metrics" }}
{{- if contains ":" $v.metrics.address }}
- --metrics-address=[{{ $v.metrics.address }}]:{{ int64 $port }}
{{- else }}
- --metrics-address={{ $v.metrics.address }}:{{ int64 $port }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Environment of the modcsi containers. */}}
{{- define "modcsi.serveEnv" -}}
- name: NODE_ID
  valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
- name: POD_NAMESPACE
  valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
- name: RUST_LOG
  value: {{ .Values.host.logLevel | quote }}
{{- end -}}

{{/* Probes of a modcsi container: (dict "root" $ "component" "node") */}}
{{- define "modcsi.probes" -}}
{{- $v := .root.Values -}}
{{- $c := get $v .component -}}
{{- $p := $v.probes -}}
{{- if $c.livenessprobe }}
livenessProbe:
  httpGet: {path: /healthz, port: healthz}
  initialDelaySeconds: {{ $p.liveness.initialDelaySeconds }}
  periodSeconds: {{ $p.liveness.periodSeconds }}
  timeoutSeconds: {{ $p.liveness.timeoutSeconds }}
  failureThreshold: {{ $p.liveness.failureThreshold }}
{{- else if $v.metrics.enabled }}
livenessProbe:
  httpGet: {path: /healthz, port: metrics}
  initialDelaySeconds: {{ $p.liveness.initialDelaySeconds }}
  periodSeconds: {{ $p.liveness.periodSeconds }}
  timeoutSeconds: {{ $p.liveness.timeoutSeconds }}
  failureThreshold: {{ $p.liveness.failureThreshold }}
{{- end }}
{{- if $v.metrics.enabled }}
readinessProbe:
  httpGet: {path: /healthz, port: metrics}
  periodSeconds: {{ $p.readiness.periodSeconds }}
  timeoutSeconds: {{ $p.readiness.timeoutSeconds }}
  failureThreshold: {{ $p.readiness.failureThreshold }}
{{- end }}
{{- end -}}

{{/* The livenessprobe sidecar: (dict "root" $ "component" "node") */}}
{{- define "modcsi.livenessprobeSidecar" -}}
{{- $v := .root.Values -}}
{{- $s := $v.sidecars.livenessprobe -}}
{{- $c := get $v .component -}}
- name: livenessprobe
  image: {{ include "modcsi.image" (dict "image" $s.image "default" "") }}
  imagePullPolicy: {{ $s.image.pullPolicy }}
  args:
    - --csi-address=/csi/csi.sock
    - --http-endpoint=:{{ int64 $c.ports.healthz }}
    - --probe-timeout={{ $s.probeTimeout }}
  securityContext:
    allowPrivilegeEscalation: false
    readOnlyRootFilesystem: true
    capabilities: {drop: [ALL]}
  resources: {{- toYaml $s.resources | nindent 4 }}
  volumeMounts:
    - {name: socket-dir, mountPath: /csi}
{{- end -}}

{{- define "modcsi.sidecarSecurityContext" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities: {drop: [ALL]}
{{- end -}}

{{/*
Ports of a modcsi container: metrics, and healthz, served by the livenessprobe sidecar but
declared here, because a probe's named port is looked up in the probed container.
(dict "root" $ "component" "node")
*/}}
{{- define "modcsi.ports" -}}
{{- $v := .root.Values -}}
{{- $c := get $v .component -}}
{{- if $v.metrics.enabled }}
- {name: metrics, containerPort: {{ int64 $c.ports.metrics }}, protocol: TCP}
{{- end }}
{{- if $c.livenessprobe }}
- {name: healthz, containerPort: {{ int64 $c.ports.healthz }}, protocol: TCP}
{{- end }}
{{- end -}}

{{/* Pod annotations: the configuration's checksum (a changed one rolls the pods), and the
component's own. (dict "root" $ "component" "node") */}}
{{- define "modcsi.podAnnotations" -}}
{{- $annotations := dict -}}
{{- with include "modcsi.backendConfig" . -}}
{{- $_ := set $annotations "checksum/backend-config" (sha256sum .) -}}
{{- end -}}
{{- $annotations = mustMergeOverwrite $annotations (default (dict) (get .root.Values .component).podAnnotations) -}}
{{- if $annotations -}}
{{- toYaml $annotations -}}
{{- end -}}
{{- end -}}

{{/*
Relabelings of a ServiceMonitor or PodMonitor endpoint: the target labels the alert rules and
the dashboard read (job="modcsi", driver, component, node), then metrics.serviceMonitor.relabelings.
(dict "root" $ "component" "node" "driver" "<driver name>")
*/}}
{{- define "modcsi.monitorRelabelings" -}}
- {action: replace, targetLabel: job, replacement: modcsi}
- {action: replace, targetLabel: driver, replacement: {{ .driver | quote }}}
- {action: replace, targetLabel: component, replacement: {{ .component }}}
- {action: replace, sourceLabels: [__meta_kubernetes_pod_node_name], targetLabel: node}
{{- with .root.Values.metrics.serviceMonitor.relabelings }}
{{ toYaml . }}
{{- end }}
{{- end -}}
