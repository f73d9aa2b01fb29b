variable "namespace" {
  description = "Namespace Godel runs in (created by this module)."
  type        = string
  default     = "godel"
}

variable "chart_repository" {
  description = "Where the charts are: an OCI repository (oci://registry.example.com/godel/charts) or a local directory (the repository's helm/)."
  type        = string
}

variable "chart_version" {
  description = "Chart version to install (ignored for local directories)."
  type        = string
}

variable "values" {
  description = "Values of the umbrella chart, e.g. module.godel_values.values."
  type        = any
}

variable "secrets" {
  description = "Secret name → data (plain text; the provider encodes it). Names match each chart's secrets.existingSecret."
  type        = map(map(string))
  sensitive   = true
}

variable "binary_secrets" {
  description = "Secret name → data whose values are base64-encoded bytes (e.g. godel-orchestrator-kek = { kek = <32 random bytes, base64> })."
  type        = map(map(string))
  sensitive   = true
  default     = {}
}

variable "per_service_releases" {
  description = "One Helm release per service (true) or one release of the umbrella chart."
  type        = bool
  default     = true
}

variable "timeout_seconds" {
  description = "How long a release may take to become ready (migrations included)."
  type        = number
  default     = 900
}
