# The backup storage account (database dumps, milvus-backup archives) and the only identity
# that may write to it: a user-assigned managed identity federated with the Kubernetes
# ServiceAccount <namespace>/<backup service account> (AKS workload identity). The account
# has no public endpoint (a private endpoint for Blob), no shared keys (Entra ID only), no
# anonymous access, TLS 1.2, infrastructure encryption plus the Key Vault key, blob
# versioning and soft delete, and its reads/writes/deletes go to Log Analytics.

resource "azurerm_storage_account" "backups" {
  #checkov:skip=CKV_AZURE_33:Queue service logging does not apply: the account serves only Blob backups (no queues), and classic queue logging needs shared-key access, which is disabled.
  name                     = substr("${replace(var.name, "-", "")}hacsbk${local.suffix}", 0, 24)
  location                 = azurerm_resource_group.this.location
  resource_group_name      = azurerm_resource_group.this.name
  account_kind             = "StorageV2"
  account_tier             = "Standard"
  account_replication_type = var.backup_replication_type

  min_tls_version                   = "TLS1_2"
  https_traffic_only_enabled        = true
  allow_nested_items_to_be_public   = false
  shared_access_key_enabled         = false
  default_to_oauth_authentication   = true
  public_network_access_enabled     = false
  local_user_enabled                = false
  cross_tenant_replication_enabled  = false
  infrastructure_encryption_enabled = true

  network_rules {
    default_action = "Deny"
    bypass         = ["AzureServices", "Logging", "Metrics"]
  }

  blob_properties {
    versioning_enabled = true
    delete_retention_policy {
      days = var.backup_retention_days
    }
    container_delete_retention_policy {
      days = var.backup_retention_days
    }
  }

  sas_policy {
    expiration_period = "00.01:00:00"
    expiration_action = "Log"
  }

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.storage.id]
  }
  customer_managed_key {
    key_vault_key_id          = azurerm_key_vault_key.hacs.versionless_id
    user_assigned_identity_id = azurerm_user_assigned_identity.storage.id
  }

  tags = merge(local.tags, { "hacs-data" = "backups" })

  depends_on = [azurerm_role_assignment.crypto_users]
}

# Created through Azure Resource Manager (storage_account_id), so Terraform needs neither
# the shared key nor the account's private endpoint.
resource "azurerm_storage_container" "backups" {
  #checkov:skip=CKV2_AZURE_21:Blob logging is configured on the account's blob service (azurerm_monitor_diagnostic_setting.backups_blob), not through storage insights.
  name                  = "hacs-backups"
  storage_account_id    = azurerm_storage_account.backups.id
  container_access_type = "private"
}

resource "azurerm_monitor_diagnostic_setting" "backups_blob" {
  name                       = "blob-access-to-log-analytics"
  target_resource_id         = "${azurerm_storage_account.backups.id}/blobServices/default"
  log_analytics_workspace_id = azurerm_log_analytics_workspace.this.id

  enabled_log {
    category = "StorageRead"
  }
  enabled_log {
    category = "StorageWrite"
  }
  enabled_log {
    category = "StorageDelete"
  }
}

resource "azurerm_private_endpoint" "blob" {
  name                = "${var.name}-hacs-blob"
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  subnet_id           = azurerm_subnet.endpoints.id

  private_service_connection {
    name                           = "blob"
    private_connection_resource_id = azurerm_storage_account.backups.id
    subresource_names              = ["blob"]
    is_manual_connection           = false
  }

  private_dns_zone_group {
    name                 = "blob"
    private_dns_zone_ids = [azurerm_private_dns_zone.this["blob"].id]
  }

  tags = local.tags
}

# --- Workload identity for the backup job ---------------------------------------------------

resource "azurerm_user_assigned_identity" "backup" {
  name                = "${var.name}-hacs-backup"
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  tags                = local.tags
}

resource "azurerm_federated_identity_credential" "backup" {
  name                      = "${var.namespace}-${var.backup_service_account}"
  user_assigned_identity_id = azurerm_user_assigned_identity.backup.id
  issuer                    = azurerm_kubernetes_cluster.this.oidc_issuer_url
  subject                   = "system:serviceaccount:${var.namespace}:${var.backup_service_account}"
  audience                  = ["api://AzureADTokenExchange"]
}

# Read and write blobs in this account only (it holds nothing but the backup container);
# a deleted or overwritten backup stays recoverable for backup_retention_days (soft delete,
# versioning).
resource "azurerm_role_assignment" "backup" {
  scope                = azurerm_storage_account.backups.id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = azurerm_user_assigned_identity.backup.principal_id
}
