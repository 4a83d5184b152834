# Terraform and provider versions for the Azure module. The module declares its providers
# but never configures them: the root module (terraform/examples/azure) configures azurerm,
# kubernetes and helm, the last two from this module's cluster outputs.
terraform {
  required_version = ">= 1.6"

  required_providers {
    # 4.65 renamed azurerm_federated_identity_credential.parent_id to
    # user_assigned_identity_id, used here.
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
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
  }
}
