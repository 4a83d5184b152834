# Azure Cache for Redis (Premium: zone-redundant primary + replica, automatic failover): no
# public network access (a private endpoint), TLS only on 6380 with TLS 1.2 minimum. HACS
# connects with rediss://:<access key>@<host>:6380/0 (the hacs-redis Secret); the
# certificate chains to a public CA, so the image's CA bundle verifies it.
#
# Data at rest is encrypted with Microsoft-managed keys: customer-managed keys exist only in
# the Enterprise tiers / Azure Managed Redis (terraform/README.md).

resource "azurerm_redis_cache" "this" {
  name                = "${var.name}-hacs-${local.suffix}"
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  sku_name            = "Premium"
  family              = "P"
  capacity            = var.redis_capacity
  redis_version       = "6"
  zones               = ["1", "2"]

  non_ssl_port_enabled          = false
  minimum_tls_version           = "1.2"
  public_network_access_enabled = false

  redis_configuration {
    # The change bus must not silently lose entries under memory pressure.
    maxmemory_policy = "noeviction"
  }

  patch_schedule {
    day_of_week    = "Sunday"
    start_hour_utc = 4
  }

  tags = local.tags
}

resource "azurerm_private_endpoint" "redis" {
  name                = "${var.name}-hacs-redis"
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  subnet_id           = azurerm_subnet.endpoints.id

  private_service_connection {
    name                           = "redis"
    private_connection_resource_id = azurerm_redis_cache.this.id
    subresource_names              = ["redisCache"]
    is_manual_connection           = false
  }

  private_dns_zone_group {
    name                 = "redis"
    private_dns_zone_ids = [azurerm_private_dns_zone.this["redis"].id]
  }

  tags = local.tags
}
