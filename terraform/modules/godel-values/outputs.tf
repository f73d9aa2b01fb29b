output "values" {
  description = "Values of the godel umbrella chart, as an object."
  value       = local.values
}

output "values_yaml" {
  description = "The same values as YAML, for helm -f or a GitOps repository."
  value       = yamlencode(local.values)
}

output "secret_keys" {
  description = "Per chart, the Secret it reads and the keys it needs."
  value       = { for name, env in local.secret_env : name => sort(values(env)) }
}
