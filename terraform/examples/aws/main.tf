# Example: HACS for a hospital group on AWS (eu-central-1), with the in-cluster Milvus and
# the GPU embedding pool. Copy this directory, adjust the values, then:
#
#   terraform init
#   terraform apply -var install_hacs=false   # infrastructure, namespace, DB/Redis Secrets
#   # create hacs-signing-keys, hacs-operator-key, hacs-service-key (terraform/README.md)
#   terraform apply                           # installs the HACS chart
#
# Run it from inside the VPC or over the VPN in api_access_cidrs: the EKS API endpoint is
# private, and the kubernetes/helm providers below talk to it.

terraform {
  required_version = ">= 1.6"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.80"
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

  # State holds the generated database password and Redis token: keep it in an encrypted,
  # locked, access-controlled backend, e.g.
  # backend "s3" {
  #   bucket         = "stmary-terraform-state"
  #   key            = "hacs/prod.tfstate"
  #   region         = "eu-central-1"
  #   encrypt        = true
  #   kms_key_id     = "alias/terraform-state"
  #   dynamodb_table = "terraform-locks"
  # }
}

variable "region" {
  type        = string
  description = "AWS region of the deployment."
  default     = "eu-central-1"
}

variable "install_hacs" {
  type        = bool
  description = "Install the HACS chart (false on the very first apply, before the platform Secrets exist)."
  default     = true
}

provider "aws" {
  region = var.region
  default_tags {
    tags = {
      environment           = "production"
      "data-classification" = "phi"
      owner                 = "clinical-platform"
    }
  }
}

# Both talk to the private API endpoint with a short-lived token from the AWS CLI.
provider "kubernetes" {
  host                   = module.hacs.cluster_endpoint
  cluster_ca_certificate = base64decode(module.hacs.cluster_ca_certificate)
  exec {
    api_version = "client.authentication.k8s.io/v1beta1"
    command     = "aws"
    args        = ["eks", "get-token", "--cluster-name", module.hacs.cluster_name, "--region", var.region]
  }
}

provider "helm" {
  kubernetes {
    host                   = module.hacs.cluster_endpoint
    cluster_ca_certificate = base64decode(module.hacs.cluster_ca_certificate)
    exec {
      api_version = "client.authentication.k8s.io/v1beta1"
      command     = "aws"
      args        = ["eks", "get-token", "--cluster-name", module.hacs.cluster_name, "--region", var.region]
    }
  }
}

module "hacs" {
  source = "../../modules/aws"

  name               = "stmary-prod"
  availability_zones = ["eu-central-1a", "eu-central-1b", "eu-central-1c"]
  vpc_cidr           = "10.40.0.0/16"
  tags               = { "cost-center" = "clinical-ai" }

  kubernetes_version      = "1.33"
  api_access_cidrs        = ["10.0.0.0/16"] # the hospital VPN
  cluster_admin_role_arns = ["arn:aws:iam::123456789012:role/platform-admins"]

  system_instance_types = ["m6i.2xlarge"]
  system_node_count     = { min = 3, desired = 3, max = 12 }
  gpu_enabled           = true
  gpu_instance_types    = ["g5.xlarge"]
  gpu_node_count        = { min = 1, desired = 1, max = 4 }

  postgres_instance_class = "db.r6g.xlarge"
  redis_node_type         = "cache.r7g.large"

  install_hacs     = var.install_hacs
  image_repository = "123456789012.dkr.ecr.eu-central-1.amazonaws.com/hacs"
  image_tag        = "0.2.0"
  image_gpu_tag    = "0.2.0-cuda"
  hacs_config = {
    HACS_LOG_LEVEL = "INFO"
  }
  # Transport between the pods (docs/deploy.md, "TLS and mTLS"): without Istio the pods
  # serve TLS with one certificate per component, here from cert-manager (installed, with
  # this issuer, before the chart). With Istio installed: istio_enabled = true instead.
  hacs_values = {
    tls = { certManager = { issuerRef = { name = "hospital-ca", kind = "ClusterIssuer" } } }
  }
}

output "cluster_name" {
  description = "EKS cluster name."
  value       = module.hacs.cluster_name
}

output "kubeconfig_command" {
  description = "Command that writes a kubeconfig entry for the cluster."
  value       = module.hacs.kubeconfig_command
}

output "database_host" {
  description = "RDS PostgreSQL endpoint (private)."
  value       = module.hacs.database_host
}

output "redis_host" {
  description = "ElastiCache primary endpoint (private, TLS)."
  value       = module.hacs.redis_host
}

output "backup_bucket" {
  description = "S3 bucket for backups."
  value       = module.hacs.backup_bucket
}
