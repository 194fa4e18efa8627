{{- define "patchwarden.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The ClusterKopfPeering the replicas meet in (values.yaml: settings.peeringName). */}}
{{- define "patchwarden.peeringName" -}}
{{- if .Values.settings.peeringName -}}
{{- .Values.settings.peeringName -}}
{{- else if .Values.watchNamespaces -}}
{{- printf "%s-%s" (include "patchwarden.fullname" .) .Release.Namespace | trunc 253 | trimSuffix "-" -}}
{{- else -}}
patchwarden
{{- end -}}
{{- end -}}

{{- define "patchwarden.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "patchwarden.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "patchwarden.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "patchwarden.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The operator's rules on the objects of the namespaces it serves. */}}
{{- define "patchwarden.namespacedRules" -}}
- apiGroups: [patchwarden.io]
  resources: [managedsystems, updaterequests]
  verbs: [get, list, watch, patch]
- apiGroups: [patchwarden.io]
  resources: [updateruns]
  verbs: [get, list, watch, patch, create, delete]
- apiGroups: [patchwarden.io]
  resources: [managedsystems/status, updaterequests/status, updateruns/status]
  verbs: [patch]
- apiGroups: ["", events.k8s.io]
  resources: [events]
  verbs: [create]
- apiGroups: [apps]
  resources: [deployments, statefulsets]
  verbs: [get, list, watch, update, patch]  # watch: the inventory; patch: apply of images
- apiGroups: [apps]
  resources: [deployments/scale, statefulsets/scale]
  verbs: [patch]
- apiGroups: [""]
  resources: [pods]
  verbs: [list, delete]  # delete: a rolled-back run's own update Job pods
- apiGroups: [""]
  resources: [pods/exec]
  verbs: [get, create]  # exec hooks (docs/hooks.md); the websocket upgrade is a GET
- apiGroups: [""]
  resources: [persistentvolumeclaims]
  verbs: [get, list, watch, create, delete, patch]  # patch: the label a group snapshot selects
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, patch]
- apiGroups: [snapshot.storage.k8s.io]
  resources: [volumesnapshots]
  verbs: [get, list, watch, create, delete]
- apiGroups: [groupsnapshot.storage.k8s.io]
  resources: [volumegroupsnapshots]
  verbs: [get, list, create, delete]  # backup.consistency: Group
- apiGroups: [""]
  resources: [secrets]
  resourceNames: [patchwarden-notifications]  # a namespace's own webhook (docs/notifications.md)
  verbs: [get]
{{- end -}}
