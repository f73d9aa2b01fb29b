variable "image_registry" {
  description = "Registry (and path) holding the godel-* images."
  type        = string
}

variable "image_tag" {
  description = "Release version of every image, e.g. 0.1.0."
  type        = string
}

variable "hostname" {
  description = "Public host name of the API (the gateway's Ingress)."
  type        = string
}

variable "cluster_issuer" {
  description = "cert-manager ClusterIssuer for the gateway certificate; empty to bring your own TLS Secret."
  type        = string
  default     = ""
}

variable "nats_url" {
  description = "NATS JetStream URL reachable from the pods."
  type        = string
}

variable "nats_namespace" {
  description = "Namespace NATS runs in (the egress NetworkPolicy allows it)."
  type        = string
  default     = "nats"
}

variable "otlp_endpoint" {
  description = "OTLP/gRPC collector endpoint for traces; empty disables export."
  type        = string
  default     = ""
}

variable "trace_sample_ratio" {
  description = "Fraction of new traces sampled (0–1)."
  type        = number
  default     = 0.05
  validation {
    condition     = var.trace_sample_ratio >= 0 && var.trace_sample_ratio <= 1
    error_message = "trace_sample_ratio must lie between 0 and 1."
  }
}

variable "observability_namespace" {
  description = "Namespace of the OTLP collector."
  type        = string
  default     = "observability"
}

variable "monitoring_namespace" {
  description = "Namespace Prometheus scrapes from."
  type        = string
  default     = "monitoring"
}

variable "database_cidrs" {
  description = "CIDRs of the PostgreSQL endpoints (egress NetworkPolicy)."
  type        = list(string)
}

variable "redis_cidrs" {
  description = "CIDRs of the Redis endpoints (egress NetworkPolicy)."
  type        = list(string)
}

variable "idp_cidrs" {
  description = "CIDRs of the identity provider the auth service calls; empty allows none."
  type        = list(string)
  default     = []
}

variable "min_replicas" {
  description = "Minimum replicas of every service (HPA floor)."
  type        = number
  default     = 3
  validation {
    condition     = var.min_replicas >= 2
    error_message = "Run at least two replicas of each service so a rolling update or a node loss keeps it serving."
  }
}

variable "max_replicas" {
  description = "HPA ceiling per chart name (godel-scheduler, …); 10 when not listed."
  type        = map(number)
  default     = {}
}

variable "backup_destination" {
  description = "Object storage prefix the backup CronJob writes to, e.g. s3://bucket/godel."
  type        = string
}

variable "backup_service_account_annotations" {
  description = "Annotations of the backup ServiceAccount (e.g. the IAM role for S3 access)."
  type        = map(string)
  default     = {}
}

variable "service_values" {
  description = "Extra values per chart name, merged over the computed ones (shallow merge)."
  type        = any
  default     = {}
}
