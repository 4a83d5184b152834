# The virtual network: a node subnet for AKS and an endpoints subnet that holds the private
# endpoints of PostgreSQL, Redis, Blob storage and Key Vault (none of them has a public
# endpoint). Both subnets carry an NSG; private DNS zones linked to the VNet resolve the
# services' names to their private endpoint addresses.

resource "azurerm_virtual_network" "this" {
  name                = "${var.name}-hacs"
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  address_space       = [var.vnet_cidr]
  tags                = local.tags
}

resource "azurerm_subnet" "nodes" {
  name                 = "aks-nodes"
  resource_group_name  = azurerm_resource_group.this.name
  virtual_network_name = azurerm_virtual_network.this.name
  address_prefixes     = [var.nodes_subnet_cidr]
}

resource "azurerm_subnet" "endpoints" {
  name                              = "private-endpoints"
  resource_group_name               = azurerm_resource_group.this.name
  virtual_network_name              = azurerm_virtual_network.this.name
  address_prefixes                  = [var.endpoints_subnet_cidr]
  private_endpoint_network_policies = "Enabled" # the NSG below applies to the endpoints
}

# Nodes: Azure's default rules (VNet and load balancer in, nothing from the internet).
resource "azurerm_network_security_group" "nodes" {
  name                = "${var.name}-hacs-nodes"
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  tags                = local.tags
}

resource "azurerm_subnet_network_security_group_association" "nodes" {
  subnet_id                 = azurerm_subnet.nodes.id
  network_security_group_id = azurerm_network_security_group.nodes.id
}

# Endpoints: only the node subnet reaches PostgreSQL, Redis (TLS port) and HTTPS (Blob,
# Key Vault); everything else from the VNet is denied.
resource "azurerm_network_security_group" "endpoints" {
  name                = "${var.name}-hacs-endpoints"
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  tags                = local.tags

  security_rule {
    name                       = "stores-from-aks-nodes"
    description                = "PostgreSQL, Redis (TLS) and HTTPS from the AKS node subnet"
    priority                   = 100
    direction                  = "Inbound"
    access                     = "Allow"
    protocol                   = "Tcp"
    source_address_prefix      = var.nodes_subnet_cidr
    source_port_range          = "*"
    destination_address_prefix = var.endpoints_subnet_cidr
    destination_port_ranges    = ["5432", "6380", "443"]
  }

  # Terraform (a runner or VPN in admin_cidrs) creates Key Vault keys over HTTPS.
  dynamic "security_rule" {
    for_each = length(var.admin_cidrs) > 0 ? [var.admin_cidrs] : []
    content {
      name                       = "https-from-admin-networks"
      description                = "Key Vault (HTTPS) from the admin networks that run Terraform"
      priority                   = 110
      direction                  = "Inbound"
      access                     = "Allow"
      protocol                   = "Tcp"
      source_address_prefixes    = security_rule.value
      source_port_range          = "*"
      destination_address_prefix = var.endpoints_subnet_cidr
      destination_port_range     = "443"
    }
  }

  security_rule {
    name                       = "deny-other-vnet-inbound"
    description                = "Nothing else in the VNet reaches the data stores"
    priority                   = 4000
    direction                  = "Inbound"
    access                     = "Deny"
    protocol                   = "*"
    source_address_prefix      = "VirtualNetwork"
    source_port_range          = "*"
    destination_address_prefix = "*"
    destination_port_range     = "*"
  }
}

resource "azurerm_subnet_network_security_group_association" "endpoints" {
  subnet_id                 = azurerm_subnet.endpoints.id
  network_security_group_id = azurerm_network_security_group.endpoints.id
}

# --- Private DNS for the private endpoints -------------------------------------------------

locals {
  private_dns_zones = {
    postgres = "privatelink.postgres.database.azure.com"
    redis    = "privatelink.redis.cache.windows.net"
    blob     = "privatelink.blob.core.windows.net"
    vault    = "privatelink.vaultcore.azure.net"
  }
}

resource "azurerm_private_dns_zone" "this" {
  for_each            = local.private_dns_zones
  name                = each.value
  resource_group_name = azurerm_resource_group.this.name
  tags                = local.tags
}

resource "azurerm_private_dns_zone_virtual_network_link" "this" {
  for_each              = local.private_dns_zones
  name                  = "${var.name}-hacs-${each.key}"
  resource_group_name   = azurerm_resource_group.this.name
  private_dns_zone_name = azurerm_private_dns_zone.this[each.key].name
  virtual_network_id    = azurerm_virtual_network.this.id
  registration_enabled  = false
  tags                  = local.tags
}
