{{/*
Shared pieces of the templates. lab/tests/helm.rs reads these as text: an
`include` of a block stands alone on its line, and every setting reaches a
binary as an environment variable named exactly as in its `--help`.
*/}}

{{/*
Prefix of every resource name: `<release>-<region>`, or the release name alone
when it already names the region. Relay ids are pod names, so the region in
them keeps relay ids unique across regions.
*/}}
{{- define "rallypoint.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else if contains .Values.region .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Values.region | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "rallypoint.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "rallypoint.labels" -}}
{{ include "rallypoint.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
rallypoint/region: {{ .Values.region | quote }}
{{- end -}}

{{/*
Logging and OpenTelemetry: read by every binary through rallypoint-service
(service/src/observability.rs), not by clap, so not in any `--help`.
*/}}
{{- define "rallypoint.observabilityEnv" -}}
- name: RUST_LOG
  value: {{ .Values.logFilter | quote }}
{{- if .Values.otel.endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ .Values.otel.endpoint | quote }}
{{- end }}
{{- end -}}

{{/*
Probes on the HTTP listener (the container port named `http`; for a relay its
admin listener, the public one is named `public`): alive while the
process serves /healthz, ready while /readyz says so (for a relay: NATS
connected, not draining, below its connection limit). Three missed liveness
probes take 30 s, longer than a relay's drain, during which /healthz is gone.
*/}}
{{- define "rallypoint.probes" -}}
startupProbe:
  httpGet:
    path: /healthz
    port: http
  periodSeconds: 2
  failureThreshold: 30
livenessProbe:
  httpGet:
    path: /healthz
    port: http
  periodSeconds: 10
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: /readyz
    port: http
  periodSeconds: 5
  failureThreshold: 2
{{- end -}}

{{/*
Annotations for a Prometheus that discovers pods by annotation
(metrics.podAnnotations); the context is the port /metrics is served on.
*/}}
{{- define "rallypoint.scrapeAnnotations" -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ . | quote }}
prometheus.io/path: /metrics
{{- end -}}

{{/* What the WebSocket and the WebTransport relays share. */}}
{{- define "rallypoint.relayEnv" -}}
- name: RALLYPOINT_REGION
  value: {{ required "region is required, e.g. us-east" .Values.region | quote }}
# Pod names are unique, and carry the region (rallypoint.fullname).
- name: RALLYPOINT_RELAY_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{ include "rallypoint.natsEnv" . }}
- name: RALLYPOINT_ADMIN_LISTEN
  value: "0.0.0.0:{{ .Values.relay.adminPort }}"
- name: RALLYPOINT_DRAIN_GRACE
  value: {{ .Values.relay.drainGrace | quote }}
- name: RALLYPOINT_MAX_CONNECTIONS
  value: {{ .Values.relay.maxConnections | quote }}
{{- if .Values.relay.publishAllMedia }}
- name: RALLYPOINT_PUBLISH_ALL_MEDIA
  value: "true"
{{- end }}
{{- if eq .Values.jwt.algorithm "hs256" }}
- name: RALLYPOINT_JWT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ required "jwt.secretRef.name is required: the Secret holding the token key" .Values.jwt.secretRef.name }}
      key: {{ .Values.jwt.secretRef.key }}
{{- else }}
- name: RALLYPOINT_JWT_PUBLIC_KEY
  value: /etc/rallypoint/jwt/public.pem
{{- end }}
{{- if .Values.jwt.issuer }}
- name: RALLYPOINT_JWT_ISSUER
  value: {{ .Values.jwt.issuer | quote }}
{{- end }}
{{- if .Values.relay.trustedProxies }}
- name: RALLYPOINT_TRUSTED_PROXIES
  value: {{ join "," .Values.relay.trustedProxies | quote }}
{{- end }}
{{- with .Values.relay.reportAddressKey.secretRef }}
{{- if .name }}
- name: RALLYPOINT_REPORT_ADDRESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .name }}
      key: {{ .key }}
{{- end }}
{{- end }}
{{- if .Values.candidates.regions }}
# Every region the clients' candidate lists name: reports naming any other
# region are refused.
- name: RALLYPOINT_KNOWN_REGIONS
  value: {{ include "rallypoint.candidateRegions" . | quote }}
{{- end }}
{{- if .Values.relay.geoip.claimName }}
- name: RALLYPOINT_GEOIP_DB
  value: "/var/lib/rallypoint/geoip/{{ .Values.relay.geoip.file }}"
{{- end }}
{{ include "rallypoint.observabilityEnv" . }}
{{- end -}}

{{/*
NATS over TLS with an NKey: URLs, the CA and the seed, as files from Secrets
mounted by rallypoint.natsVolumeMounts.
*/}}
{{- define "rallypoint.natsEnv" -}}
- name: RALLYPOINT_NATS_URLS
  value: {{ join "," .Values.nats.urls | quote }}
- name: RALLYPOINT_NATS_CA
  value: /etc/rallypoint/nats-ca/ca.crt
- name: RALLYPOINT_NATS_NKEY_FILE
  value: /etc/rallypoint/nats-user/seed
{{- end -}}

{{- define "rallypoint.natsVolumeMounts" -}}
- name: nats-ca
  mountPath: /etc/rallypoint/nats-ca
  readOnly: true
- name: nats-user
  mountPath: /etc/rallypoint/nats-user
  readOnly: true
{{- end -}}

{{/* The CA that signed the NATS servers; each pod adds its own role's seed as `nats-user`. */}}
{{- define "rallypoint.natsCaVolume" -}}
- name: nats-ca
  secret:
    secretName: {{ required "nats.ca.secretName is required: the Secret with the NATS CA" .Values.nats.ca.secretName }}
    items:
      - key: ca.crt
        path: ca.crt
{{- end -}}

{{/* Files the relays read: the Ed25519 public key, the GeoIP database. */}}
{{- define "rallypoint.relayVolumeMounts" -}}
{{ include "rallypoint.natsVolumeMounts" . }}
{{- if ne .Values.jwt.algorithm "hs256" }}
- name: jwt
  mountPath: /etc/rallypoint/jwt
  readOnly: true
{{- end }}
{{- if .Values.relay.geoip.claimName }}
- name: geoip
  mountPath: /var/lib/rallypoint/geoip
  readOnly: true
{{- end }}
{{- end -}}

{{- define "rallypoint.relayVolumes" -}}
{{ include "rallypoint.natsCaVolume" . }}
- name: nats-user
  secret:
    secretName: {{ required "nats.users.relay.secretName is required" .Values.nats.users.relay.secretName }}
    defaultMode: 0400
    items:
      - key: seed
        path: seed
{{- if ne .Values.jwt.algorithm "hs256" }}
- name: jwt
  secret:
    secretName: {{ required "jwt.secretRef.name is required: the Secret holding the token key" .Values.jwt.secretRef.name }}
    items:
      - key: {{ .Values.jwt.secretRef.key }}
        path: public.pem
{{- end }}
{{- if .Values.relay.geoip.claimName }}
- name: geoip
  persistentVolumeClaim:
    claimName: {{ .Values.relay.geoip.claimName }}
    readOnly: true
{{- end }}
{{- end -}}

{{/* ClickHouse, for the collector and the dashboard. */}}
{{- define "rallypoint.clickhouseEnv" -}}
- name: RALLYPOINT_CLICKHOUSE_URL
  value: {{ .Values.clickhouse.url | quote }}
- name: RALLYPOINT_CLICKHOUSE_DATABASE
  value: {{ .Values.clickhouse.database | quote }}
{{- if .Values.clickhouse.cluster }}
- name: RALLYPOINT_CLICKHOUSE_CLUSTER
  value: {{ .Values.clickhouse.cluster | quote }}
{{- end }}
{{- if .Values.clickhouse.ca.secretName }}
- name: RALLYPOINT_CLICKHOUSE_CA
  value: /etc/rallypoint/clickhouse-ca/ca.crt
{{- end }}
{{ include "rallypoint.observabilityEnv" . }}
{{- end -}}

{{/* The CA that signed ClickHouse's certificate, where clickhouse.ca names one. */}}
{{- define "rallypoint.clickhouseCaVolumeMount" -}}
{{- if .Values.clickhouse.ca.secretName }}
- name: clickhouse-ca
  mountPath: /etc/rallypoint/clickhouse-ca
  readOnly: true
{{- end }}
{{- end -}}

{{- define "rallypoint.clickhouseCaVolume" -}}
{{- if .Values.clickhouse.ca.secretName }}
- name: clickhouse-ca
  secret:
    secretName: {{ .Values.clickhouse.ca.secretName }}
    items:
      - key: ca.crt
        path: ca.crt
{{- end }}
{{- end -}}

{{/* `us-east:3,singapore:1`, the collector's --regions. */}}
{{- define "rallypoint.telemetryRegions" -}}
{{- range $i, $r := .Values.collector.regions -}}
{{- if $i }},{{ end }}{{ $r.name }}:{{ $r.replicas }}
{{- end -}}
{{- end -}}

{{/* `us-east,singapore`: the names of candidates.regions, the relays' --known-regions. */}}
{{- define "rallypoint.candidateRegions" -}}
{{- range $i, $r := .Values.candidates.regions -}}
{{- if $i }},{{ end }}{{ $r.name }}
{{- end -}}
{{- end -}}

{{/*
The candidate list as JSON: for each region of candidates.regions, its
WebSocket and its WebTransport relay Service, `relay_id` being the Service's
name. Another region's Services are `<release>-<region>-relay-*` only if its
release has this one's name (README: `rallypoint` everywhere), so a release
named otherwise may list only itself. Fails unless this region is listed and,
in the central region, the regions are exactly collector.regions: relays,
telemetry and candidates name the same regions.
*/}}
{{- define "rallypoint.candidates" -}}
{{- $own := include "rallypoint.fullname" . -}}
{{- $sameNaming := eq $own (printf "%s-%s" .Release.Name .Values.region | trunc 40 | trimSuffix "-") -}}
{{- $names := list -}}
{{- $list := list -}}
{{- range .Values.candidates.regions -}}
{{- if has .name $names -}}
{{- fail (printf "candidates.regions lists %s twice" .name) -}}
{{- end -}}
{{- $names = append $names .name -}}
{{- $prefix := printf "%s-%s" $.Release.Name .name | trunc 40 | trimSuffix "-" -}}
{{- if eq .name $.Values.region -}}
{{- $prefix = $own -}}
{{- else if not $sameNaming -}}
{{- fail (printf "candidates.regions lists %s, whose relay Services are named <release>-%s-relay-*: give every region's release the same name, without the region in it or fullnameOverride" .name .name) -}}
{{- end -}}
{{- $ws := dict "region" .name "relay_id" (printf "%s-relay-ws" $prefix) "transport" "websocket" "url" .websocket -}}
{{- $wt := dict "region" .name "relay_id" (printf "%s-relay-wt" $prefix) "transport" "webtransport" "url" .webtransport -}}
{{- if .shadow -}}
{{- $_ := set $ws "shadow" true -}}
{{- $_ := set $wt "shadow" true -}}
{{- end -}}
{{- $list = append (append $list $ws) $wt -}}
{{- end -}}
{{- if not (has .Values.region $names) -}}
{{- fail (printf "candidates.regions must list this region, %s" .Values.region) -}}
{{- end -}}
{{- if .Values.central.enabled -}}
{{- $telemetry := list -}}
{{- range .Values.collector.regions -}}
{{- $telemetry = append $telemetry .name -}}
{{- end -}}
{{- if ne (sortAlpha $names | join ",") (sortAlpha $telemetry | join ",") -}}
{{- fail (printf "candidates.regions (%s) and collector.regions (%s) must name the same regions" (sortAlpha $names | join ", ") (sortAlpha $telemetry | join ", ")) -}}
{{- end -}}
{{- end -}}
{{- dict "candidates" $list | toPrettyJson -}}
{{- end -}}

{{/* Egress every part needs: DNS, and the OTLP collector when export is on. */}}
{{- define "rallypoint.commonEgress" -}}
- ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- if .Values.otel.endpoint }}
- ports:
    - port: {{ .Values.networkPolicy.otlpPort }}
      protocol: TCP
{{- end }}
{{- end -}}

{{/* Egress to ClickHouse: its pods (in this namespace, or in the one namespaceLabels names), or an address block outside. */}}
{{- define "rallypoint.clickhouseEgress" -}}
- to:
    {{- if .Values.networkPolicy.clickhouse.cidr }}
    - ipBlock:
        cidr: {{ .Values.networkPolicy.clickhouse.cidr }}
    {{- else }}
    - podSelector:
        matchLabels:
          {{- required "networkPolicy.clickhouse.podLabels or .cidr is required in the central region" .Values.networkPolicy.clickhouse.podLabels | toYaml | nindent 10 }}
      {{- with .Values.networkPolicy.clickhouse.namespaceLabels }}
      namespaceSelector:
        matchLabels:
          {{- toYaml . | nindent 10 }}
      {{- end }}
    {{- end }}
  ports:
    - port: {{ .Values.networkPolicy.clickhouse.port }}
      protocol: TCP
{{- end -}}

{{/*
The pod of `rallypoint-collector setup` with the administrators' credentials:
the post-install/upgrade Job's and the daily CronJob's (collector-setup.yaml).
*/}}
{{- define "rallypoint.collectorSetupPod" -}}
metadata:
  labels:
    {{- include "rallypoint.selectorLabels" . | nindent 4 }}
    app.kubernetes.io/component: collector-setup
spec:
  restartPolicy: OnFailure
  automountServiceAccountToken: false
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  containers:
    - name: setup
      image: "{{ .Values.image.registry }}/rallypoint-collector:{{ .Values.image.tag | default .Chart.AppVersion }}"
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args: ["setup"]
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      env:
        {{- include "rallypoint.natsEnv" . | nindent 8 }}
        - name: RALLYPOINT_TELEMETRY_REGIONS
          value: {{ include "rallypoint.telemetryRegions" . | quote }}
        - name: RALLYPOINT_CENTRAL_REGION
          value: {{ required "region is required, e.g. us-east" .Values.region | quote }}
        - name: RALLYPOINT_CENTRAL_REPLICAS
          value: {{ .Values.collector.centralReplicas | quote }}
        - name: RALLYPOINT_CONSUMER
          value: {{ .Values.collector.consumer | quote }}
        - name: RALLYPOINT_RETENTION_DAYS
          value: {{ .Values.collector.retentionDays | quote }}
        {{- include "rallypoint.clickhouseEnv" . | nindent 8 }}
        - name: RALLYPOINT_CLICKHOUSE_USER
          value: {{ .Values.clickhouse.users.admin.name | quote }}
        {{- if .Values.clickhouse.users.admin.passwordSecretRef.name }}
        - name: RALLYPOINT_CLICKHOUSE_PASSWORD
          valueFrom:
            secretKeyRef:
              name: {{ .Values.clickhouse.users.admin.passwordSecretRef.name }}
              key: {{ .Values.clickhouse.users.admin.passwordSecretRef.key }}
        {{- end }}
      resources:
        requests:
          cpu: 50m
          memory: 32Mi
        limits:
          memory: 64Mi
      volumeMounts:
        {{- include "rallypoint.natsVolumeMounts" . | nindent 8 }}
        {{- include "rallypoint.clickhouseCaVolumeMount" . | nindent 8 }}
  volumes:
    {{- include "rallypoint.natsCaVolume" . | nindent 4 }}
    {{- include "rallypoint.clickhouseCaVolume" . | nindent 4 }}
    - name: nats-user
      secret:
        secretName: {{ required "nats.users.admin.secretName is required" .Values.nats.users.admin.secretName }}
        defaultMode: 0400
        items:
          - key: seed
            path: seed
{{- end -}}
