variable "name" {
  description = "Prefix of every resource name, e.g. godel-production."
  type        = string
}

variable "vpc_id" {
  description = "VPC of the Kubernetes cluster."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets (two or more availability zones) for RDS and ElastiCache."
  type        = list(string)
  validation {
    condition     = length(var.subnet_ids) >= 2
    error_message = "Multi-AZ needs subnets in at least two availability zones."
  }
}

variable "client_cidrs" {
  description = "CIDRs allowed to connect (the cluster's node or pod subnets)."
  type        = list(string)
}

variable "postgres_version" {
  description = "RDS PostgreSQL engine version."
  type        = string
  default     = "17.5"
}

variable "postgres_instance_class" {
  description = "RDS instance class."
  type        = string
  default     = "db.r6g.large"
}

variable "postgres_storage_gb" {
  description = "Initial storage; autoscaling goes up to four times this."
  type        = number
  default     = 100
}

variable "redis_version" {
  description = "ElastiCache Redis engine version."
  type        = string
  default     = "7.1"
}

variable "redis_node_type" {
  description = "ElastiCache node type."
  type        = string
  default     = "cache.r6g.large"
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default     = {}
}
