# The AKS cluster: private API server, Entra ID authentication with Azure RBAC (no local
# accounts), Azure CNI Overlay with Cilium network policy, OIDC issuer + workload identity,
# node disks encrypted with the Key Vault key (disk encryption set) and at the host,
# ephemeral OS disks, Azure Policy, container insights and control-plane audit logs.
#
# Node pools: "system" (critical add-ons only), "apps" (HACS, Envoy, Milvus) and "gpu"
# (the embedding service). Terraform must reach the private API server to install the Helm
# releases: run it from the VNet or a peered one (admin_cidrs).
#
# Host encryption needs the subscription feature Microsoft.Compute/EncryptionAtHost
# registered once: `az feature register --namespace Microsoft.Compute --name EncryptionAtHost`.

resource "azurerm_user_assigned_identity" "aks" {
  name                = "${local.cluster_name}-control-plane"
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  tags                = local.tags
}

# The control plane joins nodes and internal load balancers to the node subnet and reads
# the disk encryption set.
resource "azurerm_role_assignment" "aks_network" {
  scope                = azurerm_subnet.nodes.id
  role_definition_name = "Network Contributor"
  principal_id         = azurerm_user_assigned_identity.aks.principal_id
}

resource "azurerm_role_assignment" "aks_disk_encryption_set" {
  scope                = azurerm_disk_encryption_set.this.id
  role_definition_name = "Reader"
  principal_id         = azurerm_user_assigned_identity.aks.principal_id
}

resource "azurerm_kubernetes_cluster" "this" {
  name                = local.cluster_name
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  dns_prefix          = local.cluster_name
  kubernetes_version  = var.kubernetes_version
  sku_tier            = "Standard" # uptime SLA
  node_resource_group = "${azurerm_resource_group.this.name}-nodes"

  private_cluster_enabled             = true
  private_dns_zone_id                 = "System"
  private_cluster_public_fqdn_enabled = false

  automatic_upgrade_channel = "patch"
  node_os_upgrade_channel   = "NodeImage"

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.aks.id]
  }

  local_account_disabled            = true
  role_based_access_control_enabled = true
  azure_active_directory_role_based_access_control {
    tenant_id              = data.azurerm_client_config.current.tenant_id
    azure_rbac_enabled     = true
    admin_group_object_ids = var.aks_admin_group_object_ids
  }

  oidc_issuer_enabled       = true
  workload_identity_enabled = true

  disk_encryption_set_id = azurerm_disk_encryption_set.this.id
  azure_policy_enabled   = true

  network_profile {
    network_plugin      = "azure"
    network_plugin_mode = "overlay"
    network_data_plane  = "cilium"
    network_policy      = "cilium"
    pod_cidr            = var.pod_cidr
    service_cidr        = var.service_cidr
    dns_service_ip      = cidrhost(var.service_cidr, 10)
    outbound_type       = var.outbound_type
    load_balancer_sku   = "standard"
  }

  default_node_pool {
    name                         = "system"
    vm_size                      = var.system_vm_size
    vnet_subnet_id               = azurerm_subnet.nodes.id
    zones                        = ["1", "2", "3"]
    auto_scaling_enabled         = true
    min_count                    = 3
    max_count                    = 5
    max_pods                     = 110
    only_critical_addons_enabled = true
    os_disk_type                 = "Ephemeral"
    os_disk_size_gb              = 128
    host_encryption_enabled      = true
    node_public_ip_enabled       = false
    temporary_name_for_rotation  = "systemtmp"

    upgrade_settings {
      max_surge = "33%"
    }
  }

  key_vault_secrets_provider {
    secret_rotation_enabled  = true
    secret_rotation_interval = "2m"
  }

  oms_agent {
    log_analytics_workspace_id      = azurerm_log_analytics_workspace.this.id
    msi_auth_for_monitoring_enabled = true
  }

  tags = local.tags

  depends_on = [
    azurerm_role_assignment.aks_network,
    azurerm_role_assignment.aks_disk_encryption_set,
    azurerm_role_assignment.crypto_users,
  ]

  lifecycle {
    # The autoscaler owns the node counts; patch upgrades move the version.
    ignore_changes = [default_node_pool[0].node_count, kubernetes_version]
  }
}

# Control-plane logs (API server, audit of writes, Entra ID guard) for the audit trail.
resource "azurerm_monitor_diagnostic_setting" "aks" {
  name                       = "audit-to-log-analytics"
  target_resource_id         = azurerm_kubernetes_cluster.this.id
  log_analytics_workspace_id = azurerm_log_analytics_workspace.this.id

  enabled_log {
    category = "kube-apiserver"
  }
  enabled_log {
    category = "kube-audit-admin"
  }
  enabled_log {
    category = "guard"
  }
}

resource "azurerm_kubernetes_cluster_node_pool" "apps" {
  name                    = "apps"
  kubernetes_cluster_id   = azurerm_kubernetes_cluster.this.id
  mode                    = "User"
  vm_size                 = var.apps_vm_size
  vnet_subnet_id          = azurerm_subnet.nodes.id
  zones                   = ["1", "2", "3"]
  auto_scaling_enabled    = true
  min_count               = var.apps_node_count.min
  max_count               = var.apps_node_count.max
  max_pods                = 110
  os_disk_type            = "Ephemeral"
  os_disk_size_gb         = 128
  host_encryption_enabled = true
  node_public_ip_enabled  = false
  node_labels             = { "hacs/pool" = "apps" }

  upgrade_settings {
    max_surge = "33%"
  }

  tags = local.tags

  lifecycle {
    ignore_changes = [node_count]
  }
}

# The GPU pool for the embedding service. AKS installs the NVIDIA driver; the device plugin
# (kubernetes.tf) advertises nvidia.com/gpu. The taint keeps everything else off; the
# chart's gpu.tolerations and gpu.nodeSelector (nvidia.com/gpu.present=true) match it.
resource "azurerm_kubernetes_cluster_node_pool" "gpu" {
  count = var.gpu_enabled ? 1 : 0

  name                    = "gpu"
  kubernetes_cluster_id   = azurerm_kubernetes_cluster.this.id
  mode                    = "User"
  vm_size                 = var.gpu_vm_size
  vnet_subnet_id          = azurerm_subnet.nodes.id
  zones                   = length(var.gpu_zones) > 0 ? var.gpu_zones : null
  auto_scaling_enabled    = true
  min_count               = var.gpu_node_count.min
  max_count               = var.gpu_node_count.max
  max_pods                = 110
  os_disk_type            = "Managed"
  os_disk_size_gb         = 128
  host_encryption_enabled = true
  node_public_ip_enabled  = false
  node_taints             = ["nvidia.com/gpu=present:NoSchedule"]
  node_labels = {
    "hacs/pool"              = "gpu"
    "nvidia.com/gpu.present" = "true"
  }

  upgrade_settings {
    max_surge = "1"
  }

  tags = local.tags

  lifecycle {
    ignore_changes = [node_count]
  }
}
