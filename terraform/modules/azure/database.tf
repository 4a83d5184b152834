# PostgreSQL Flexible Server: zone-redundant high availability, no public network access
# (a private endpoint in the endpoints subnet), TLS 1.2+ required, customer-managed key
# from Key Vault, 35 days of point-in-time restore, connection logging.
#
# The administrator password comes from random_password and lives only in Terraform state
# and in the Kubernetes Secret hacs-database; keep the state in an encrypted,
# access-controlled backend (an Azure Storage container with Entra ID auth and CMK, or
# Terraform Cloud).

resource "random_password" "database" {
  length  = 40
  special = false # URL-safe: it is embedded in the SQLAlchemy URL
}

resource "azurerm_postgresql_flexible_server" "this" {
  #checkov:skip=CKV_AZURE_136:Geo-redundant backup with a customer-managed key needs a second Key Vault key in the paired region; this module keeps zone-redundant HA and 35-day point-in-time restore in-region (PHI residency). Add geo_backup_key_vault_key_id where policy allows a paired-region copy.
  name                = "${var.name}-hacs-${local.suffix}"
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  version             = var.postgres_version
  sku_name            = var.postgres_sku_name
  storage_mb          = var.postgres_storage_mb
  auto_grow_enabled   = true

  administrator_login    = "hacsadmin"
  administrator_password = random_password.database.result
  authentication {
    password_auth_enabled         = true
    active_directory_auth_enabled = false
  }

  public_network_access_enabled = false

  zone = "1"
  high_availability {
    mode                      = "ZoneRedundant"
    standby_availability_zone = "2"
  }

  backup_retention_days        = var.postgres_backup_retention_days
  geo_redundant_backup_enabled = false

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.postgres.id]
  }
  customer_managed_key {
    key_vault_key_id                  = azurerm_key_vault_key.hacs.versionless_id
    primary_user_assigned_identity_id = azurerm_user_assigned_identity.postgres.id
  }

  maintenance_window {
    day_of_week  = 0
    start_hour   = 3
    start_minute = 0
  }

  tags = local.tags

  depends_on = [azurerm_role_assignment.crypto_users]

  lifecycle {
    # A failover swaps the primary and standby zones.
    ignore_changes = [zone, high_availability[0].standby_availability_zone]
  }
}

resource "azurerm_postgresql_flexible_server_database" "hacs" {
  name      = "hacs"
  server_id = azurerm_postgresql_flexible_server.this.id
  charset   = "UTF8"
  collation = "en_US.utf8"
}

# TLS only (1.2 or later) and connection logging.
resource "azurerm_postgresql_flexible_server_configuration" "this" {
  for_each = {
    require_secure_transport = "on"
    ssl_min_protocol_version = "TLSv1.2"
    log_connections          = "on"
    log_disconnections       = "on"
  }
  name      = each.key
  server_id = azurerm_postgresql_flexible_server.this.id
  value     = each.value
}

resource "azurerm_private_endpoint" "postgres" {
  name                = "${var.name}-hacs-postgres"
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  subnet_id           = azurerm_subnet.endpoints.id

  private_service_connection {
    name                           = "postgres"
    private_connection_resource_id = azurerm_postgresql_flexible_server.this.id
    subresource_names              = ["postgresqlServer"]
    is_manual_connection           = false
  }

  private_dns_zone_group {
    name                 = "postgres"
    private_dns_zone_ids = [azurerm_private_dns_zone.this["postgres"].id]
  }

  tags = local.tags
}
