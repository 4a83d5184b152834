# HACS on Azure: a private AKS cluster with a GPU node pool, PostgreSQL Flexible Server,
# Azure Cache for Redis and a Blob storage account for backups, all behind private
# endpoints, a Key Vault (HSM-backed key) for customer-managed encryption, and the HACS and
# Milvus Helm releases. terraform/README.md walks through what gets created and why.
#
# Files: network.tf (VNet, NSGs, private DNS), keyvault.tf, aks.tf, database.tf, redis.tf,
# backup.tf (storage + workload identity), kubernetes.tf (namespace, Secrets, Helm
# releases), outputs.tf.

data "azurerm_client_config" "current" {}

# Globally unique names (Key Vault, storage account) get a stable random suffix.
resource "random_string" "suffix" {
  length  = 6
  lower   = true
  upper   = false
  numeric = true
  special = false
}

locals {
  cluster_name = "${var.name}-hacs"
  suffix       = random_string.suffix.result
  tags = merge(var.tags, {
    "app.kubernetes.io/part-of" = "hacs"
    "hacs-deployment"           = var.name
  })
}

resource "azurerm_resource_group" "this" {
  name     = "${var.name}-hacs"
  location = var.location
  tags     = local.tags
}

# Container insights, AKS control-plane audit logs and storage logs land here.
resource "azurerm_log_analytics_workspace" "this" {
  name                = "${var.name}-hacs"
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  sku                 = "PerGB2018"
  retention_in_days   = var.log_retention_days
  tags                = local.tags
}
