output "namespace" {
  description = "The namespace Godel runs in."
  value       = kubernetes_namespace_v1.godel.metadata[0].name
}

output "releases" {
  description = "Installed Helm releases and their revisions."
  value = merge(
    { for k, r in helm_release.service : r.name => r.metadata[0].revision },
    { for r in helm_release.umbrella : r.name => r.metadata[0].revision },
  )
}
