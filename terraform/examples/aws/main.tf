# Example: Godel on an existing EKS cluster with RDS PostgreSQL and ElastiCache Redis.
#   terraform init && terraform apply -var-file=production.tfvars
# The cluster, its VPC, NATS, cert-manager, ingress-nginx, the Prometheus operator and
# an OTLP collector are assumed to exist.

terraform {
  required_version = ">= 1.6"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.40"
    }
    kubernetes = {
      source  = "hashicorp/kubernetes"
      version = ">= 2.30"
    }
    helm = {
      source  = "hashicorp/helm"
      version = ">= 2.13, < 3.0"
    }
    random = {
      source  = "hashicorp/random"
      version = ">= 3.6"
    }
  }
}

provider "aws" {
  region = var.region
}

data "aws_eks_cluster" "this" {
  name = var.cluster_name
}

data "aws_eks_cluster_auth" "this" {
  name = var.cluster_name
}

provider "kubernetes" {
  host                   = data.aws_eks_cluster.this.endpoint
  cluster_ca_certificate = base64decode(data.aws_eks_cluster.this.certificate_authority[0].data)
  token                  = data.aws_eks_cluster_auth.this.token
}

provider "helm" {
  kubernetes {
    host                   = data.aws_eks_cluster.this.endpoint
    cluster_ca_certificate = base64decode(data.aws_eks_cluster.this.certificate_authority[0].data)
    token                  = data.aws_eks_cluster_auth.this.token
  }
}

module "data" {
  source = "../../modules/aws-data"

  name         = "godel-${var.environment}"
  vpc_id       = data.aws_eks_cluster.this.vpc_config[0].vpc_id
  subnet_ids   = var.private_subnet_ids
  client_cidrs = var.cluster_cidrs
  tags         = { project = "godel", environment = var.environment }
}

module "values" {
  source = "../../modules/godel-values"

  image_registry     = var.image_registry
  image_tag          = var.godel_version
  hostname           = var.hostname
  cluster_issuer     = "letsencrypt-production"
  nats_url           = "nats://nats.nats.svc:4222"
  otlp_endpoint      = "http://otel-collector.observability.svc:4317"
  database_cidrs     = var.private_subnet_cidrs
  redis_cidrs        = var.private_subnet_cidrs
  backup_destination = "s3://${var.backup_bucket}/godel/${var.environment}"
  backup_service_account_annotations = {
    "eks.amazonaws.com/role-arn" = var.backup_role_arn
  }
  max_replicas = { "godel-orchestrator" = 30, "godel-gateway" = 20 }
}

resource "random_bytes" "signing_key_encryption_key" {
  length = 32
}

resource "random_bytes" "kek" {
  length = 32
}

resource "random_bytes" "redaction_key" {
  length = 32
}

module "godel" {
  source = "../../modules/godel-kubernetes"

  namespace        = "godel"
  chart_repository = var.chart_repository
  chart_version    = var.godel_version
  values           = module.values.values
  secrets = {
    "godel-scheduler"    = { "database-url" = module.data.database_url }
    "godel-orchestrator" = { "database-url" = module.data.database_url }
    "godel-auth" = {
      "database-url"               = module.data.database_url
      "signing-key-encryption-key" = random_bytes.signing_key_encryption_key.base64
    }
    "godel-audit" = {
      "database-url"  = module.data.database_url
      "redaction-key" = random_bytes.redaction_key.hex
    }
    "godel-gateway" = { "redis-url" = module.data.redis_url }
    "godel-backup"  = { "database-url" = module.data.database_url }
  }
  # The orchestrator's key-encryption key (32 random bytes); keep a copy outside the
  # cluster: without it stored provider keys cannot be opened.
  binary_secrets = {
    "godel-orchestrator-kek" = { "kek" = random_bytes.kek.base64 }
  }
}
