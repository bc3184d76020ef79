{{/* The chart name. */}}
{{- define "keyhook.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The full name: also the Service name keyhook serves under (--service-name). */}}
{{- define "keyhook.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels on every object. `part-of: keyhook` is also how keyhook finds the
objects whose caBundle it manages or checks. */}}
{{- define "keyhook.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "keyhook.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: keyhook
{{- end }}

{{- define "keyhook.selectorLabels" -}}
app.kubernetes.io/name: {{ include "keyhook.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "keyhook.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "keyhook.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "keyhook.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* "true" when running on OpenShift: asked for, implied by the openshift
certificate mode, or the cluster serves SCCs. */}}
{{- define "keyhook.openshift" -}}
{{- if or .Values.openshift.enabled (eq .Values.certs.mode "openshift") (.Capabilities.APIVersions.Has "security.openshift.io/v1") }}true{{ end }}
{{- end }}

{{/* The Secret holding the serving certificate; checks the mode's settings
once, with messages that say what to set. */}}
{{- define "keyhook.certSecret" -}}
{{- $mode := .Values.certs.mode }}
{{- if eq $mode "external" }}
{{- if not .Values.certs.secretName }}
{{- fail "certs.mode=external needs certs.secretName: the Secret (tls.crt, tls.key) you provide in the release namespace" }}
{{- end }}
{{- .Values.certs.secretName }}
{{- else }}
{{- default (printf "%s-tls" (include "keyhook.fullname" .)) .Values.certs.secretName }}
{{- end }}
{{- end }}

{{/* The name of the cert-manager Certificate for the serving certificate. */}}
{{- define "keyhook.certificateName" -}}
{{- include "keyhook.fullname" . }}
{{- end }}

{{/* The --cert-mode keyhook runs with for certs.mode. */}}
{{- define "keyhook.certModeFlag" -}}
{{- $modes := dict "self-managed" "self-managed" "openshift" "openshift" "cert-manager" "external" "external" "external" }}
{{- $flag := get $modes .Values.certs.mode }}
{{- if not $flag }}
{{- fail (printf "certs.mode must be one of self-managed, openshift, cert-manager, external; got %q" .Values.certs.mode) }}
{{- end }}
{{- $flag }}
{{- end }}

{{/* Where a mounted serving certificate is read from. */}}
{{- define "keyhook.certDir" -}}/var/run/keyhook/certs{{- end }}

{{/* The Service's DNS names, the SANs every serving certificate must carry. */}}
{{- define "keyhook.dnsNames" -}}
{{- $svc := include "keyhook.fullname" . }}
{{- $ns := .Release.Namespace }}
- {{ $svc }}
- {{ $svc }}.{{ $ns }}
- {{ $svc }}.{{ $ns }}.svc
- {{ $svc }}.{{ $ns }}.svc.{{ .Values.certs.clusterDomain }}
{{- range .Values.certs.extraSANs }}
{{- if not (regexMatch "^[0-9.]+$|:" .) }}
- {{ . }}
{{- end }}
{{- end }}
{{- end }}

{{/* Annotations that ask the mode's injector to set the caBundle of an
object calling keyhook; empty when keyhook injects it itself. */}}
{{- define "keyhook.injectAnnotations" -}}
{{- if eq .Values.certs.mode "openshift" }}
service.beta.openshift.io/inject-cabundle: "true"
{{- else if eq .Values.certs.mode "cert-manager" }}
cert-manager.io/inject-ca-from: {{ .Release.Namespace }}/{{ include "keyhook.certificateName" . }}
{{- end }}
{{- end }}

{{/* The caBundle field of a client config, when the chart knows it (external mode). */}}
{{- define "keyhook.caBundle" -}}
{{- if eq .Values.certs.mode "external" }}
{{- $_ := include "keyhook.certSecret" . }}
{{- if not .Values.certs.external.caBundle }}
{{- fail "certs.mode=external needs certs.external.caBundle: the base64-encoded PEM of the CA that signed certs.secretName" }}
{{- end }}
caBundle: {{ .Values.certs.external.caBundle }}
{{- end }}
{{- end }}

{{/* A clientConfig calling keyhook's Service at `path`. */}}
{{- define "keyhook.clientConfig" -}}
service:
  name: {{ include "keyhook.fullname" .root }}
  namespace: {{ .root.Release.Namespace }}
  path: {{ .path }}
  port: 443
{{- with include "keyhook.caBundle" .root }}
{{ . }}
{{- end }}
{{- end }}

{{/* The ConfigMap holding the CA of a mounted certificate (openshift and
external modes), and its key. */}}
{{- define "keyhook.caConfigMap" -}}
{{- include "keyhook.fullname" . }}-ca
{{- end }}

{{- define "keyhook.caConfigMapKey" -}}
{{- if eq .Values.certs.mode "openshift" }}service-ca.crt{{ else }}ca.crt{{ end }}
{{- end }}
