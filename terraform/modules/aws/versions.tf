# Terraform and provider versions for the AWS module. The module declares its providers
# but never configures them: the root module (terraform/examples/aws) configures aws,
# kubernetes and helm, the last two from this module's cluster outputs.
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
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
    # Reads the EKS OIDC issuer's certificate thumbprint for IRSA.
    tls = {
      source  = "hashicorp/tls"
      version = "~> 4.0"
    }
  }
}
