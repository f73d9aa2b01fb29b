# Turns a few deployment facts into the values of the `godel` umbrella Helm chart.
# No providers: it only computes, so `terraform validate` checks it offline, and
# both the Kubernetes module and a GitOps pipeline (which would write the YAML to a
# repository) can use the same values.

terraform {
  required_version = ">= 1.6"
}

locals {
  secret_env = {
    "godel-scheduler"    = { GODEL_DATABASE__URL = "database-url" }
    "godel-orchestrator" = { GODEL_DATABASE__URL = "database-url" }
    "godel-auth" = {
      GODEL_DATABASE__URL                      = "database-url"
      GODEL_TOKENS__SIGNING_KEY_ENCRYPTION_KEY = "signing-key-encryption-key"
    }
    "godel-audit" = {
      GODEL_DATABASE__URL  = "database-url"
      GODEL_REDACTION__KEY = "redaction-key"
    }
    "godel-gateway" = { GODEL_CACHE__URL = "redis-url" }
  }

  services = {
    for name, env in local.secret_env : name => merge(
      {
        secrets = {
          existingSecret = name
          env            = env
        }
        autoscaling = {
          enabled     = true
          minReplicas = var.min_replicas
          maxReplicas = lookup(var.max_replicas, name, 10)
        }
      },
      lookup(var.service_values, name, {}),
    )
  }

  values = merge(
    {
      global = {
        imageRegistry = var.image_registry
        imageTag      = var.image_tag
        otlp = {
          endpoint    = var.otlp_endpoint
          sampleRatio = var.trace_sample_ratio
        }
        nats = { url = var.nats_url }
        networkPolicy = {
          monitoringNamespaceSelector = {
            matchLabels = { "kubernetes.io/metadata.name" = var.monitoring_namespace }
          }
          external = {
            postgresql = { ports = [5432], to = [for c in var.database_cidrs : { ipBlock = { cidr = c } }] }
            redis      = { ports = [6379], to = [for c in var.redis_cidrs : { ipBlock = { cidr = c } }] }
            nats = { ports = [4222], to = [{
              namespaceSelector = { matchLabels = { "kubernetes.io/metadata.name" = var.nats_namespace } }
            }] }
            otlp = { ports = [4317], to = [{
              namespaceSelector = { matchLabels = { "kubernetes.io/metadata.name" = var.observability_namespace } }
            }] }
            idp           = { ports = [443], to = [for c in var.idp_cidrs : { ipBlock = { cidr = c } }] }
            llmProviders  = { ports = [443], to = [{ ipBlock = { cidr = "0.0.0.0/0", except = local.private } }] }
            git           = { ports = [443, 22], to = [{ ipBlock = { cidr = "0.0.0.0/0", except = local.private } }] }
            objectStorage = { ports = [443], to = [{ ipBlock = { cidr = "0.0.0.0/0", except = local.private } }] }
          }
        }
      }
      backup = {
        enabled        = true
        existingSecret = "godel-backup"
        destination    = var.backup_destination
        serviceAccount = { annotations = var.backup_service_account_annotations }
      }
    },
    { for name, v in local.services : name => merge(v, name == "godel-gateway" ? {
      ingress = {
        enabled       = true
        host          = var.hostname
        tlsSecretName = "godel-gateway-tls"
        certManager   = { enabled = var.cluster_issuer != "", clusterIssuer = var.cluster_issuer }
      }
    } : {}) },
  )

  private = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"]
}
