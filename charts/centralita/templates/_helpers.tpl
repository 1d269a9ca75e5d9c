{{/*
Helpers shared by every template. Most take a component context built by
"centralita.ctx": (dict "root" $ "name" "<component>" "c" <its values> "t" <its traits>).
*/}}

{{- define "centralita.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "centralita.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "centralita.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
What each component's binary needs, fixed by the code and the architecture rather than by
deployment choice:
  postgres / redis: reads CENTRALITA_DATABASE_URL / CENTRALITA_REDIS_URL
  frontend:         frontends and the ingress reach its gRPC port
  stream:           a Kafka stream processor (KEDA-scalable)
  grpc / jwt:       serves gRPC with caller JWTs
  operator:         the Tenant controller (Kubernetes API, RBAC, one replica)
  binary:           the binary it runs, /usr/local/bin/centralita-<binary> (default: its
                    name); media's two roles are two components of one binary: `media`
                    (voice) and `digital` (web chat, SMS, email, ConversationService)
*/}}
{{- define "centralita.traits" -}}
sessions:  {grpc: true, jwt: true, postgres: false, redis: true,  frontend: true,  stream: true,  operator: false}
routing:   {grpc: true, jwt: true, postgres: false, redis: true,  frontend: false, stream: true,  operator: false}
media:     {grpc: true, jwt: true, postgres: false, redis: true,  frontend: true,  stream: false, operator: false}
digital:   {grpc: true, jwt: true, postgres: true,  redis: false, frontend: true,  stream: false, operator: false, binary: media}
crm:       {grpc: true, jwt: true, postgres: true,  redis: false, frontend: true,  stream: false, operator: false}
recording: {grpc: true, jwt: true, postgres: true,  redis: false, frontend: true,  stream: false, operator: false}
reporting: {grpc: true, jwt: true, postgres: true,  redis: true,  frontend: true,  stream: true,  operator: false}
operator:  {grpc: true,  jwt: true,  postgres: false, redis: false, frontend: false, stream: false, operator: true}
{{- end -}}

{{/* Names of the enabled components (JSON list): the gRPC services in name order, then the operator. */}}
{{- define "centralita.componentNames" -}}
{{- $names := list -}}
{{- range $name, $svc := .Values.services -}}
{{- if $svc.enabled -}}{{- $names = append $names $name -}}{{- end -}}
{{- end -}}
{{- if .Values.operator.enabled -}}{{- $names = append $names "operator" -}}{{- end -}}
{{- toJson $names -}}
{{- end -}}

{{/*
Fills a component context in place: (dict "root" $ "name" "<name>") gains "c" (its values)
and "t" (its traits). Templates iterate with:
  range $name := include "centralita.componentNames" $ | fromJsonArray
    $ctx := dict "root" $ "name" $name; include "centralita.ctx" $ctx
*/}}
{{- define "centralita.ctx" -}}
{{- $traits := index (include "centralita.traits" .root | fromYaml) .name -}}
{{- $c := ternary .root.Values.operator (index .root.Values.services .name | default dict) (eq .name "operator") -}}
{{- $_ := set . "c" $c -}}
{{- $_ := set . "t" $traits -}}
{{- end -}}

{{- define "centralita.componentName" -}}
{{- printf "%s-%s" (include "centralita.fullname" .root) .name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object of the release; with a component context, of that component. */}}
{{- define "centralita.labels" -}}
helm.sh/chart: {{ include "centralita.chart" .root }}
{{ include "centralita.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Values.image.tag | default .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: centralita
{{- end -}}

{{- define "centralita.releaseSelectorLabels" -}}
app.kubernetes.io/name: {{ include "centralita.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "centralita.selectorLabels" -}}
{{ include "centralita.releaseSelectorLabels" .root }}
{{- if .name }}
app.kubernetes.io/component: {{ .name }}
{{- end }}
{{- end -}}

{{- define "centralita.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* Whether an HPA (not KEDA) scales the component: "true" or "". */}}
{{- define "centralita.hpaEnabled" -}}
{{- if and (not .t.operator) .c.autoscaling.enabled (not (and .c.keda .c.keda.enabled)) -}}true{{- end -}}
{{- end -}}

{{- define "centralita.kedaEnabled" -}}
{{- if and .t.stream .c.keda .c.keda.enabled -}}true{{- end -}}
{{- end -}}

{{/* Checks across values that the JSON schema cannot express; fails the render. */}}
{{- define "centralita.validate" -}}
{{- $c := .c -}}
{{- $drain := add $c.preStopSleepSeconds $c.shutdownTimeoutSeconds -}}
{{- if ge (int $drain) (int $c.terminationGracePeriodSeconds) -}}
{{- fail (printf "%s: preStopSleepSeconds (%v) + shutdownTimeoutSeconds (%v) must be below terminationGracePeriodSeconds (%v), or the kubelet kills the pod mid-drain" .name $c.preStopSleepSeconds $c.shutdownTimeoutSeconds $c.terminationGracePeriodSeconds) -}}
{{- end -}}
{{- if not .t.operator -}}
{{- if and $c.autoscaling.enabled $c.keda $c.keda.enabled -}}
{{- fail (printf "services.%s: autoscaling.enabled and keda.enabled are mutually exclusive (KEDA makes its own HPA); disable one" .name) -}}
{{- end -}}
{{- if and $c.autoscaling.enabled (gt (int $c.autoscaling.minReplicas) (int $c.autoscaling.maxReplicas)) -}}
{{- fail (printf "services.%s.autoscaling: minReplicas (%v) is above maxReplicas (%v)" .name $c.autoscaling.minReplicas $c.autoscaling.maxReplicas) -}}
{{- end -}}
{{- if and $c.keda $c.keda.enabled (gt (int $c.keda.minReplicas) (int $c.keda.maxReplicas)) -}}
{{- fail (printf "services.%s.keda: minReplicas (%v) is above maxReplicas (%v)" .name $c.keda.minReplicas $c.keda.maxReplicas) -}}
{{- end -}}
{{- if and $c.autoscaling.enabled (not (and $c.resources.requests $c.resources.requests.cpu $c.resources.requests.memory)) -}}
{{- fail (printf "services.%s: the HPA's utilization targets need resources.requests.cpu and .memory" .name) -}}
{{- end -}}
{{- if and (eq .name "media") (gt (int $c.voice.rtpPortStart) (int $c.voice.rtpPortEnd)) -}}
{{- fail "services.media.voice: rtpPortStart is above rtpPortEnd" -}}
{{- end -}}
{{- if and (eq .name "media") (gt (add (int $c.voice.drainSeconds) 10) (int $c.shutdownTimeoutSeconds)) -}}
{{- fail (printf "services.media.voice.drainSeconds (%v) must leave at least 10 s of shutdownTimeoutSeconds (%v) to end the calls left" $c.voice.drainSeconds $c.shutdownTimeoutSeconds) -}}
{{- end -}}
{{- if eq .name "digital" -}}
{{- if and $c.http.ingress.enabled (not $c.http.ingress.host) -}}
{{- fail "services.digital.http.ingress.enabled needs services.digital.http.ingress.host (the customers' host for web chat and the SMS webhooks, e.g. chat.bpo.example)" -}}
{{- end -}}
{{- if has (int $c.http.port) (list (int $c.grpcPort) (int $c.adminPort)) -}}
{{- fail (printf "services.digital.http.port (%v) must differ from its grpcPort and adminPort" $c.http.port) -}}
{{- end -}}
{{- if and $c.smtp.enabled (has (int $c.smtp.port) (list (int $c.grpcPort) (int $c.adminPort) (int $c.http.port))) -}}
{{- fail (printf "services.digital.smtp.port (%v) must differ from its grpcPort, adminPort and http.port" $c.smtp.port) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* CENTRALITA_* environment of a component. */}}
{{- define "centralita.env" -}}
{{- $v := .root.Values -}}
{{- $cfg := $v.config -}}
{{- if .t.grpc }}
- name: CENTRALITA_GRPC_ADDR
  value: {{ printf "%s:%v" $cfg.listenAddress .c.grpcPort | quote }}
{{- end }}
- name: CENTRALITA_ADMIN_ADDR
  value: {{ printf "%s:%v" $cfg.listenAddress .c.adminPort | quote }}
- name: CENTRALITA_SHUTDOWN_TIMEOUT
  value: {{ printf "%vs" .c.shutdownTimeoutSeconds | quote }}
- name: CENTRALITA_LOG
  value: {{ $cfg.log | quote }}
- name: CENTRALITA_TRACE
  value: {{ $cfg.trace | quote }}
- name: CENTRALITA_LOG_FORMAT
  value: {{ $cfg.logFormat | quote }}
- name: CENTRALITA_KAFKA_BROKERS
  value: {{ $cfg.kafka.brokers | quote }}
- name: CENTRALITA_KAFKA_TOPIC_PREFIX
  value: {{ $cfg.kafka.topicPrefix | quote }}
- name: CENTRALITA_KAFKA_PARTITIONS
  value: {{ $cfg.kafka.partitions | quote }}
- name: CENTRALITA_KAFKA_REPLICATION_FACTOR
  value: {{ $cfg.kafka.replicationFactor | quote }}
- name: CENTRALITA_KAFKA_FETCH_WAIT_LOW_LATENCY_MS
  value: {{ $cfg.kafka.fetchWaitLowLatencyMs | quote }}
- name: CENTRALITA_KAFKA_RETENTION
  value: {{ $cfg.kafka.retention | quote }}
{{- if and .t.stream .c.staticMembership }}
- name: CENTRALITA_KAFKA_GROUP_INSTANCE_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- end }}
{{- if .t.jwt }}
- name: CENTRALITA_JWT_PUBLIC_KEY_FILE
  value: {{ printf "/etc/centralita/jwt/%s" $cfg.jwt.publicKeySecret.key | quote }}
- name: CENTRALITA_JWT_ISSUER
  value: {{ $cfg.jwt.issuer | quote }}
- name: CENTRALITA_JWT_AUDIENCE
  value: {{ $cfg.jwt.audience | quote }}
{{- with $cfg.jwt.idp }}
{{- if .jwksUrl }}
- name: CENTRALITA_JWT_JWKS_URL
  value: {{ .jwksUrl | quote }}
- name: CENTRALITA_JWT_IDP_ISSUER
  value: {{ required "config.jwt.idp.issuer is required with config.jwt.idp.jwksUrl" .issuer | quote }}
{{- if .audience }}
- name: CENTRALITA_JWT_IDP_AUDIENCE
  value: {{ .audience | quote }}
{{- end }}
- name: CENTRALITA_JWT_JWKS_REFRESH
  value: {{ .refresh | default "5m" | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- if and (include "centralita.signs" .) $cfg.jwt.privateKeySecret.name }}
- name: CENTRALITA_JWT_PRIVATE_KEY_FILE
  value: {{ printf "/etc/centralita/signing/%s" $cfg.jwt.privateKeySecret.key | quote }}
{{- end }}
{{- if .t.postgres }}
- name: CENTRALITA_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $cfg.database.urlSecret.name | quote }}
      key: {{ $cfg.database.urlSecret.key | quote }}
- name: CENTRALITA_DATABASE_POOL_SIZE
  value: {{ $cfg.database.poolSize | quote }}
{{- end }}
{{- if eq .name "media" }}
{{- /* The `media` component is media's voice role; its digital role is the `digital`
       component (same binary). */}}
- name: CENTRALITA_MEDIA_ROLES
  value: "voice"
- name: CENTRALITA_SIP_DRAIN
  value: {{ printf "%vs" .c.voice.drainSeconds | quote }}
{{- if .c.voice.promptsDir }}
- name: CENTRALITA_PROMPTS_DIR
  value: {{ .c.voice.promptsDir | quote }}
{{- end }}
{{- /* SIP on the pod's own address (the sip Service forwards to it; the Contact and Via
       media writes name it), RTP on the same address over the chart's range: a wildcard
       bind would put 0.0.0.0 in SDP and Contact. */}}
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
- name: CENTRALITA_SIP_ADDR
  value: {{ printf "$(POD_IP):%v" .c.voice.sipPort | quote }}
{{- if .c.voice.tls.secretName }}
- name: CENTRALITA_SIP_TLS_ADDR
  value: {{ printf "$(POD_IP):%v" .c.voice.tls.port | quote }}
- name: CENTRALITA_SIP_TLS_CERT_FILE
  value: "/etc/centralita/sip-tls/tls.crt"
- name: CENTRALITA_SIP_TLS_KEY_FILE
  value: "/etc/centralita/sip-tls/tls.key"
{{- end }}
- name: CENTRALITA_RTP_PORTS
  value: {{ printf "%v-%v" .c.voice.rtpPortStart .c.voice.rtpPortEnd | quote }}
{{- if or .c.voice.registrarSecrets .c.voice.trunkSecrets }}
- name: CENTRALITA_SIP_SECRETS_DIR
  value: "/etc/centralita/sip"
{{- end }}
{{- end }}
{{- if eq .name "digital" }}
{{- /* media's digital role: web chat (HTTP and WebSocket) and the SMS providers' webhooks on
       the http port, inbound email on the SMTP port when enabled, ConversationService on
       gRPC, the conversations in PostgreSQL (schema `media`). */}}
- name: CENTRALITA_MEDIA_ROLES
  value: "digital"
- name: CENTRALITA_WEBCHAT_ADDR
  value: {{ printf "%s:%v" $cfg.listenAddress .c.http.port | quote }}
{{- with .c.http.publicUrl }}
- name: CENTRALITA_SMS_PUBLIC_URL
  value: {{ . | quote }}
{{- end }}
{{- if .c.smtp.enabled }}
- name: CENTRALITA_SMTP_ADDR
  value: {{ printf "%s:%v" $cfg.listenAddress .c.smtp.port | quote }}
{{- with .c.smtp.hostname }}
- name: CENTRALITA_SMTP_HOSTNAME
  value: {{ . | quote }}
{{- end }}
- name: CENTRALITA_SMTP_MAX_MESSAGE_BYTES
  value: {{ .c.smtp.maxMessageBytes | int64 | quote }}
{{- end }}
{{- if .c.smsSecrets }}
- name: CENTRALITA_SMS_SECRETS_DIR
  value: "/etc/centralita/sms"
{{- end }}
{{- if .c.emailSecrets }}
- name: CENTRALITA_EMAIL_SECRETS_DIR
  value: "/etc/centralita/email"
{{- end }}
{{- if .c.whatsappSecrets }}
- name: CENTRALITA_WHATSAPP_SECRETS_DIR
  value: "/etc/centralita/whatsapp"
{{- end }}
{{- if .c.telegramSecrets }}
- name: CENTRALITA_TELEGRAM_SECRETS_DIR
  value: "/etc/centralita/telegram"
{{- end }}
{{- if .c.messengerSecrets }}
- name: CENTRALITA_MESSENGER_SECRETS_DIR
  value: "/etc/centralita/messenger"
{{- end }}
{{- end }}
{{- /* The release's services a component calls, at their Services, when enabled, as
       (variable's peer name, component): media (voice) sessions for contacts and recording
       for recorded calls; digital sessions for contacts, crm for SMS opt-outs and recording
       for transcripts of closed digital contacts; crm
       sessions, media and recording for the subject access export, where media's
       ConversationService is the digital role's. */}}
{{- $peers := dict
  "media" (list (list "sessions" "sessions") (list "recording" "recording"))
  "digital" (list (list "sessions" "sessions") (list "crm" "crm") (list "recording" "recording"))
  "crm" (list (list "sessions" "sessions") (list "media" "digital") (list "recording" "recording")) }}
{{- $root := .root }}
{{- range $peer := (get $peers .name | default list) }}
{{- $target := index $peer 1 }}
{{- $pc := index $v.services $target }}
{{- if $pc.enabled }}
- name: {{ printf "CENTRALITA_%s_ENDPOINT" (upper (index $peer 0)) }}
  value: {{ printf "%s://%s:%v" (ternary "https" "http" $v.tls.enabled) (include "centralita.componentName" (dict "root" $root "name" $target)) $pc.grpcPort | quote }}
{{- end }}
{{- end }}
{{- if and .t.grpc $v.tls.enabled }}
{{- /* Mutual TLS on the gRPC port and to the other services: the component's Secret (see
       values `tls`), mounted whole at /etc/centralita/tls so a renewal reaches the pod. */}}
- name: CENTRALITA_TLS_CERT_FILE
  value: /etc/centralita/tls/tls.crt
- name: CENTRALITA_TLS_KEY_FILE
  value: /etc/centralita/tls/tls.key
- name: CENTRALITA_TLS_CA_FILE
  value: /etc/centralita/tls/ca.crt
- name: CENTRALITA_TLS_RELOAD_INTERVAL
  value: {{ $v.tls.reloadInterval | quote }}
{{- end }}
{{- if and .t.frontend $v.console.enabled }}
{{- /* The browser reaches the frontend services through the console's Ingress, on its origin. */}}
- name: CENTRALITA_GRPC_WEB_ORIGINS
  value: {{ $v.console.publicUrl | quote }}
{{- end }}
{{- if .t.redis }}
- name: CENTRALITA_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ $cfg.redis.urlSecret.name | quote }}
      key: {{ $cfg.redis.urlSecret.key | quote }}
{{- end }}
{{- if .t.operator }}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- if eq $v.operator.rbac.scope "namespace" }}
- name: CENTRALITA_WATCH_NAMESPACE
  value: {{ .root.Release.Namespace | quote }}
{{- end }}
{{- end }}
{{- if $cfg.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ $cfg.otlpEndpoint | quote }}
{{- end }}
{{- with $cfg.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- with .c.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Whether a component gets the platform's signing key (config.jwt.privateKeySecret): the
services that call others in a tenant's name. "true" or "". */}}
{{- define "centralita.signs" -}}
{{- if has .name (list "media" "digital" "crm") -}}true{{- end -}}
{{- end -}}

{{/* Secret volumes of a component's list of Secret names, mounted whole (no subPath) and
optional, so a Secret created later or rotated reaches running pods without a restart:
(list "<volume prefix>" "<mount dir>" <names>). "volumes" and "mounts" are separate calls. */}}
{{- define "centralita.secretVolumes" -}}
{{- $prefix := index . 0 -}}
{{- range $i, $secret := index . 2 }}
- name: {{ printf "%s-%d" $prefix $i }}
  secret:
    secretName: {{ $secret | quote }}
    defaultMode: 0440
    optional: true
{{- end -}}
{{- end -}}

{{- define "centralita.secretMounts" -}}
{{- $prefix := index . 0 -}}
{{- $dir := index . 1 -}}
{{- range $i, $secret := index . 2 }}
- name: {{ printf "%s-%d" $prefix $i }}
  mountPath: {{ printf "%s/%s" $dir $secret | quote }}
  readOnly: true
{{- end -}}
{{- end -}}

{{/* NetworkPolicy peers of a list of CIDRs; fails on an empty list (no peer = everyone). */}}
{{- define "centralita.cidrPeers" -}}
{{- $what := index . 0 -}}
{{- $cidrs := index . 1 -}}
{{- if not $cidrs -}}
{{- fail (printf "networkPolicy: %s has no CIDR; a rule without peers would allow every address" $what) -}}
{{- end -}}
{{- range $cidrs }}
- ipBlock:
    cidr: {{ . | quote }}
{{- end -}}
{{- end -}}

{{/* An egress rule to CIDRs on TCP ports: (list "<what>" {cidrs, ports}). */}}
{{- define "centralita.egressTo" -}}
{{- $what := index . 0 -}}
{{- $dest := index . 1 -}}
- to:
{{- include "centralita.cidrPeers" (list $what $dest.cidrs) | trim | nindent 4 }}
  ports:
{{- range $dest.ports }}
    - protocol: TCP
      port: {{ . }}
{{- end }}
{{- end -}}

{{/* SIP and RTP ports of media (NetworkPolicyPort list). */}}
{{- define "centralita.voicePorts" -}}
- protocol: UDP
  port: {{ .sipPort }}
- protocol: TCP
  port: {{ .sipPort }}
{{- if .tls.secretName }}
- protocol: TCP
  port: {{ .tls.port }}
{{- end }}
- protocol: UDP
  port: {{ .rtpPortStart }}
  endPort: {{ .rtpPortEnd }}
{{- end -}}

{{/* The TLS Secret of component `.name` (values `tls.secretName`, `{component}` replaced). */}}
{{- define "centralita.tlsSecret" -}}
{{- .root.Values.tls.secretName | replace "{component}" (include "centralita.componentName" .) -}}
{{- end -}}
