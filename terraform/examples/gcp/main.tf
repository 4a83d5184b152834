# Example: HACS for a hospital group on Google Cloud (europe-west3), with Zilliz Cloud as
# the vector store instead of an in-cluster Milvus. Copy this directory, adjust the values,
# then:
#
#   export TF_VAR_zilliz_token=...             # from the hospital's secret store
#   terraform init
#   terraform apply -var install_hacs=false   # infrastructure, namespace, DB/Redis Secrets
#   # create hacs-signing-keys, hacs-operator-key, hacs-service-key (terraform/README.md)
#   terraform apply                           # installs the HACS chart
#
# Run it from a network in master_authorized_networks: the GKE endpoint is private.

terraform {
  required_version = ">= 1.6"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.20"
    }
    kubernetes = {
      source  = "hashicorp/kubernetes"
      version = "~> 2.35"
    }
    helm = {
      source  = "hashicorp/helm"
      version = "~> 2.17"
    }
  }

  # State holds the generated database password: keep it in an encrypted, access-controlled
  # backend, e.g.
  # backend "gcs" {
  #   bucket = "stmary-terraform-state"
  #   prefix = "hacs/prod"
  # }
}

variable "project_id" {
  type        = string
  description = "Google Cloud project of the deployment."
  default     = "stmary-hacs-prod"
}

variable "region" {
  type        = string
  description = "Region of the deployment."
  default     = "europe-west3"
}

variable "install_hacs" {
  type        = bool
  description = "Install the HACS chart (false on the very first apply, before the platform Secrets exist)."
  default     = true
}

variable "zilliz_token" {
  type        = string
  description = "Zilliz Cloud API key (TF_VAR_zilliz_token); never written in code."
  sensitive   = true
  default     = null
}

provider "google" {
  project = var.project_id
  region  = var.region
}

# Both talk to the private endpoint with the caller's short-lived Google access token.
data "google_client_config" "current" {}

provider "kubernetes" {
  host                   = module.hacs.cluster_endpoint
  cluster_ca_certificate = base64decode(module.hacs.cluster_ca_certificate)
  token                  = data.google_client_config.current.access_token
}

provider "helm" {
  kubernetes {
    host                   = module.hacs.cluster_endpoint
    cluster_ca_certificate = base64decode(module.hacs.cluster_ca_certificate)
    token                  = data.google_client_config.current.access_token
  }
}

module "hacs" {
  source = "../../modules/gcp"

  project_id = var.project_id
  region     = var.region
  name       = "stmary-prod"
  labels     = { cost_center = "clinical-ai", data_classification = "phi" }

  gke_security_group = "gke-security-groups@stmary.example.org"
  master_authorized_networks = [
    { cidr_block = "10.0.0.0/16", display_name = "hospital VPN" },
  ]

  system_machine_type = "n2-standard-8"
  gpu_enabled         = true
  gpu_machine_type    = "g2-standard-8"
  gpu_type            = "nvidia-l4"
  gpu_zones           = ["europe-west3-a", "europe-west3-b"]

  postgres_tier        = "db-custom-4-16384"
  redis_memory_size_gb = 5

  # Zilliz Cloud reached over Private Service Connect: its endpoint address in the VPC is
  # the only extra destination the pods' network policy allows.
  zilliz_uri        = "https://in03-0123456789abcdef.privatelink.gcp-eu-west3.cloud.zilliz.com:19530"
  zilliz_token      = var.zilliz_token
  extra_store_cidrs = ["10.50.15.250/32"]

  install_hacs     = var.install_hacs
  image_repository = "europe-west3-docker.pkg.dev/stmary-hacs-prod/hacs/hacs"
  image_tag        = "0.2.0"
  image_gpu_tag    = "0.2.0-cuda"
  # Transport between the pods (docs/deploy.md, "TLS and mTLS"): without Istio the pods
  # serve TLS with one certificate per component, here from cert-manager (installed, with
  # this issuer, before the chart). With Istio installed: istio_enabled = true instead.
  hacs_values = {
    tls = { certManager = { issuerRef = { name = "hospital-ca", kind = "ClusterIssuer" } } }
  }
}

output "cluster_name" {
  description = "GKE cluster name."
  value       = module.hacs.cluster_name
}

output "kubeconfig_command" {
  description = "Command that writes a kubeconfig entry for the cluster."
  value       = module.hacs.kubeconfig_command
}

output "database_host" {
  description = "Private IP of Cloud SQL."
  value       = module.hacs.database_host
}

output "redis_host" {
  description = "Private IP of Memorystore."
  value       = module.hacs.redis_host
}

output "backup_bucket" {
  description = "GCS bucket for backups."
  value       = module.hacs.backup_bucket
}
