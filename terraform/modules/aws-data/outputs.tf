output "database_url" {
  description = "PostgreSQL connection string (TLS required) for the services' database-url key."
  value       = local.database_url
  sensitive   = true
}

output "redis_url" {
  description = "Redis connection string (TLS, AUTH) for the gateway's redis-url key."
  value       = local.redis_url
  sensitive   = true
}

output "database_cidr" {
  description = "Where PostgreSQL lives, for the egress NetworkPolicy: the private subnets' CIDRs are the caller's to pass; this is the endpoint host."
  value       = aws_db_instance.postgres.address
}

output "connections_secret_arn" {
  description = "Secrets Manager secret holding both connection strings (for External Secrets)."
  value       = aws_secretsmanager_secret.connections.arn
}
