# Installs Godel on an existing cluster: the namespace (labelled for NetworkPolicy
# selectors and Pod Security "restricted"), the Secrets every chart reads, and one
# Helm release per service — so each service can be upgraded on its own — from the
# per-service charts (or the umbrella chart when `per_service_releases` is false).

terraform {
  required_version = ">= 1.6"
  required_providers {
    kubernetes = {
      source  = "hashicorp/kubernetes"
      version = ">= 2.30"
    }
    helm = {
      source  = "hashicorp/helm"
      version = ">= 2.13, < 3.0"
    }
  }
}

locals {
  services = ["godel-auth", "godel-scheduler", "godel-orchestrator", "godel-audit", "godel-gateway"]
  # The umbrella's values minus its own keys: what each service chart takes is its
  # section plus `global`.
  service_values = {
    for s in local.services : s => merge(lookup(var.values, s, {}), { global = var.values.global })
  }
}

resource "kubernetes_namespace_v1" "godel" {
  metadata {
    name = var.namespace
    labels = {
      "kubernetes.io/metadata.name"        = var.namespace
      "pod-security.kubernetes.io/enforce" = "restricted"
      "pod-security.kubernetes.io/audit"   = "restricted"
    }
  }
}

resource "kubernetes_secret_v1" "service" {
  for_each = var.secrets

  metadata {
    name      = each.key
    namespace = kubernetes_namespace_v1.godel.metadata[0].name
    labels    = { "app.kubernetes.io/part-of" = "godel" }
  }
  data = each.value
  type = "Opaque"
}

# Secrets whose values are bytes (base64 in `binary_secrets`), such as the
# orchestrator's key-encryption key.
resource "kubernetes_secret_v1" "binary" {
  for_each = var.binary_secrets

  metadata {
    name      = each.key
    namespace = kubernetes_namespace_v1.godel.metadata[0].name
    labels    = { "app.kubernetes.io/part-of" = "godel" }
  }
  binary_data = each.value
  type        = "Opaque"
}

# Per-service releases, in dependency order: auth first (the gateway checks it),
# the gateway last.
resource "helm_release" "service" {
  for_each = var.per_service_releases ? toset(local.services) : toset([])

  name             = "godel-${trimprefix(each.key, "godel-")}"
  namespace        = kubernetes_namespace_v1.godel.metadata[0].name
  chart            = "${var.chart_repository}/${each.key}"
  version          = var.chart_version
  values           = [yamlencode(local.service_values[each.key])]
  atomic           = true
  cleanup_on_fail  = true
  wait             = true
  timeout          = var.timeout_seconds
  max_history      = 10
  create_namespace = false

  depends_on = [kubernetes_secret_v1.service, kubernetes_secret_v1.binary]
}

resource "helm_release" "umbrella" {
  count = var.per_service_releases ? 0 : 1

  name            = "godel"
  namespace       = kubernetes_namespace_v1.godel.metadata[0].name
  chart           = "${var.chart_repository}/godel"
  version         = var.chart_version
  values          = [yamlencode(var.values)]
  atomic          = true
  cleanup_on_fail = true
  wait            = true
  timeout         = var.timeout_seconds
  max_history     = 10

  depends_on = [kubernetes_secret_v1.service, kubernetes_secret_v1.binary]
}
