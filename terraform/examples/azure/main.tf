# Example: HACS for a hospital group on Azure (Germany West Central), with the in-cluster
# Milvus and the GPU embedding pool. Copy this directory, adjust the values, then:
#
#   az login && export ARM_SUBSCRIPTION_ID=...
#   terraform init
#   terraform apply -var install_hacs=false   # infrastructure, namespace, DB/Redis Secrets
#   # create hacs-signing-keys, hacs-operator-key, hacs-service-key (terraform/README.md)
#   terraform apply                           # installs the HACS chart
#
# Run it from the hub VNet peered with the deployment (admin_cidrs): the AKS API, the Key
# Vault and the stores are private. kubelogin must be on PATH (Entra ID login).

terraform {
  required_version = ">= 1.6"

  required_providers {
    azurerm = {
      source  = "hashicorp/azurerm"
      version = "~> 4.65"
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

  # State holds the generated database password and Redis key: keep it in an encrypted,
  # access-controlled backend, e.g.
  # backend "azurerm" {
  #   resource_group_name  = "stmary-terraform"
  #   storage_account_name = "stmarytfstate"
  #   container_name       = "tfstate"
  #   key                  = "hacs/prod.tfstate"
  #   use_azuread_auth     = true
  # }
}

variable "install_hacs" {
  type        = bool
  description = "Install the HACS chart (false on the very first apply, before the platform Secrets exist)."
  default     = true
}

provider "azurerm" {
  # The backup storage account has shared keys disabled: use Entra ID for data-plane calls.
  storage_use_azuread = true
  features {
    key_vault {
      purge_soft_delete_on_destroy = false
    }
    resource_group {
      prevent_deletion_if_contains_resources = true
    }
  }
}

# Local accounts are disabled on the cluster: both authenticate with Entra ID via kubelogin
# (6dae42f8-... is the AKS AAD server application, the same in every tenant).
provider "kubernetes" {
  host                   = module.hacs.cluster_endpoint
  cluster_ca_certificate = base64decode(module.hacs.cluster_ca_certificate)
  exec {
    api_version = "client.authentication.k8s.io/v1beta1"
    command     = "kubelogin"
    args        = ["get-token", "--login", "azurecli", "--server-id", "6dae42f8-4368-4678-94ff-3960e28e3630"]
  }
}

provider "helm" {
  kubernetes {
    host                   = module.hacs.cluster_endpoint
    cluster_ca_certificate = base64decode(module.hacs.cluster_ca_certificate)
    exec {
      api_version = "client.authentication.k8s.io/v1beta1"
      command     = "kubelogin"
      args        = ["get-token", "--login", "azurecli", "--server-id", "6dae42f8-4368-4678-94ff-3960e28e3630"]
    }
  }
}

module "hacs" {
  source = "../../modules/azure"

  name     = "stmary"
  location = "germanywestcentral"
  tags     = { environment = "production", "data-classification" = "phi", "cost-center" = "clinical-ai" }

  vnet_cidr   = "10.60.0.0/16"
  admin_cidrs = ["10.0.0.0/16"] # the hub VNet with the CI runners and the VPN gateway

  aks_admin_group_object_ids = ["00000000-0000-0000-0000-000000000000"] # "AKS Admins" group
  apps_vm_size               = "Standard_D8ds_v5"
  gpu_enabled                = true
  gpu_vm_size                = "Standard_NC4as_T4_v3"
  gpu_zones                  = ["1"]

  postgres_sku_name = "GP_Standard_D4ds_v5"
  redis_capacity    = 1

  install_hacs     = var.install_hacs
  image_repository = "stmaryacr.azurecr.io/hacs"
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
  description = "AKS cluster name."
  value       = module.hacs.cluster_name
}

output "kubeconfig_command" {
  description = "Commands that write a kubeconfig entry for the cluster."
  value       = module.hacs.kubeconfig_command
}

output "database_host" {
  description = "PostgreSQL Flexible Server FQDN (private endpoint)."
  value       = module.hacs.database_host
}

output "redis_host" {
  description = "Azure Cache for Redis host (private endpoint)."
  value       = module.hacs.redis_host
}

output "backup_bucket" {
  description = "Backup storage account/container."
  value       = module.hacs.backup_bucket
}
