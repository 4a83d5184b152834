# Key Vault (Premium, RBAC, purge protection, private endpoint only) holding one HSM-backed
# RSA key that encrypts the AKS node disks (through a disk encryption set), PostgreSQL and
# the backup storage account. The key rotates itself yearly; the services follow the
# versionless key ID.
#
# Azure Cache for Redis has no customer-managed key outside the Enterprise tiers: its data
# at rest is encrypted with Microsoft-managed keys (terraform/README.md).
#
# The identity running Terraform gets "Key Vault Crypto Officer" to create the key. Role
# assignments take a minute to propagate; if the first apply fails creating the key with a
# 403, apply again.

resource "azurerm_key_vault" "this" {
  name                       = "${var.name}-hacs-${local.suffix}"
  location                   = azurerm_resource_group.this.location
  resource_group_name        = azurerm_resource_group.this.name
  tenant_id                  = data.azurerm_client_config.current.tenant_id
  sku_name                   = "premium"
  rbac_authorization_enabled = true
  purge_protection_enabled   = true
  soft_delete_retention_days = 90

  public_network_access_enabled = var.key_vault_public_network_access
  network_acls {
    default_action = "Deny"
    bypass         = "AzureServices" # disk encryption sets and storage reach it as trusted services
    ip_rules       = var.key_vault_public_network_access ? var.key_vault_allowed_ips : []
  }

  tags = local.tags
}

resource "azurerm_private_endpoint" "vault" {
  name                = "${var.name}-hacs-vault"
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  subnet_id           = azurerm_subnet.endpoints.id

  private_service_connection {
    name                           = "vault"
    private_connection_resource_id = azurerm_key_vault.this.id
    subresource_names              = ["vault"]
    is_manual_connection           = false
  }

  private_dns_zone_group {
    name                 = "vault"
    private_dns_zone_ids = [azurerm_private_dns_zone.this["vault"].id]
  }

  tags = local.tags
}

resource "azurerm_role_assignment" "terraform_crypto_officer" {
  scope                = azurerm_key_vault.this.id
  role_definition_name = "Key Vault Crypto Officer"
  principal_id         = data.azurerm_client_config.current.object_id
}

resource "azurerm_key_vault_key" "hacs" {
  #checkov:skip=CKV_AZURE_40:Expiry is set on every version by rotation_policy.expire_after, and a new version is created 30 days before; a fixed expiration_date would expire the key under running disks and databases.
  name         = "hacs-data"
  key_vault_id = azurerm_key_vault.this.id
  key_type     = "RSA-HSM"
  key_size     = 3072
  key_opts     = ["wrapKey", "unwrapKey", "encrypt", "decrypt"]

  rotation_policy {
    expire_after         = "P2Y"
    notify_before_expiry = "P30D"
    automatic {
      time_after_creation = "P365D"
    }
  }

  tags = local.tags

  depends_on = [
    azurerm_role_assignment.terraform_crypto_officer,
    azurerm_private_endpoint.vault,
  ]
}

# --- Identities that wrap data keys with it -------------------------------------------------

resource "azurerm_disk_encryption_set" "this" {
  name                      = "${var.name}-hacs"
  location                  = azurerm_resource_group.this.location
  resource_group_name       = azurerm_resource_group.this.name
  key_vault_key_id          = azurerm_key_vault_key.hacs.versionless_id
  auto_key_rotation_enabled = true
  encryption_type           = "EncryptionAtRestWithCustomerKey"

  identity {
    type = "SystemAssigned"
  }

  tags = local.tags
}

resource "azurerm_user_assigned_identity" "postgres" {
  name                = "${var.name}-hacs-postgres"
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  tags                = local.tags
}

resource "azurerm_user_assigned_identity" "storage" {
  name                = "${var.name}-hacs-storage"
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  tags                = local.tags
}

resource "azurerm_role_assignment" "crypto_users" {
  for_each = {
    disks    = azurerm_disk_encryption_set.this.identity[0].principal_id
    postgres = azurerm_user_assigned_identity.postgres.principal_id
    storage  = azurerm_user_assigned_identity.storage.principal_id
  }
  scope                = azurerm_key_vault.this.id
  role_definition_name = "Key Vault Crypto Service Encryption User"
  principal_id         = each.value
}
