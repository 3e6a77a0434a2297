{{- define "kyverno-policies.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kyverno-policies.labels" -}}
app.kubernetes.io/component: kyverno
app.kubernetes.io/instance: {{ .Release.Name | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/name: {{ include "kyverno-policies.name" . }}
app.kubernetes.io/part-of: {{ include "kyverno-policies.name" . }}
app.kubernetes.io/version: {{ .Chart.Version | replace "+" "_" | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- with .Values.customLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The Pod Security policies of kyverno-policies 3.0.0 (templates/baseline/ and
templates/restricted/ upstream). */}}
{{- define "kyverno-policies.baselinePolicies" -}}
disallow-capabilities disallow-host-namespaces disallow-host-path disallow-host-ports disallow-host-process disallow-privileged-containers disallow-proc-mount disallow-selinux restrict-apparmor-profiles restrict-seccomp restrict-sysctls
{{- end -}}

{{- define "kyverno-policies.restrictedPolicies" -}}
disallow-capabilities-strict disallow-privilege-escalation require-run-as-non-root-user require-run-as-nonroot restrict-seccomp-strict restrict-volume-types
{{- end -}}

{{- define "kyverno-policies.otherPolicies" -}}
require-non-root-groups
{{- end -}}
