output "releases" {
  description = "Installed Helm releases and their revisions."
  value       = module.godel.releases
}

output "connections_secret_arn" {
  description = "Secrets Manager secret with the connection strings."
  value       = module.data.connections_secret_arn
}
