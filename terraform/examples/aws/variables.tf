variable "region" {
  description = "AWS region."
  type        = string
}

variable "environment" {
  description = "Environment name, e.g. production."
  type        = string
}

variable "cluster_name" {
  description = "Existing EKS cluster."
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets for RDS and ElastiCache."
  type        = list(string)
}

variable "private_subnet_cidrs" {
  description = "CIDRs of those subnets (the pods' egress NetworkPolicy allows them)."
  type        = list(string)
}

variable "cluster_cidrs" {
  description = "CIDRs the pods connect from (node or pod subnets)."
  type        = list(string)
}

variable "hostname" {
  description = "Public host name of the API."
  type        = string
}

variable "image_registry" {
  description = "Registry holding the godel-* images."
  type        = string
}

variable "chart_repository" {
  description = "OCI repository of the charts, e.g. oci://ghcr.io/godel-dev/charts."
  type        = string
}

variable "godel_version" {
  description = "Godel release (image tag and chart version)."
  type        = string
}

variable "backup_bucket" {
  description = "S3 bucket for PostgreSQL dumps."
  type        = string
}

variable "backup_role_arn" {
  description = "IAM role (IRSA) allowed to write to the backup bucket."
  type        = string
}
