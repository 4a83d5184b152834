# Inputs of the Azure module. name, location and aks_admin_group_object_ids are required;
# every default is the production-shaped choice (zone-redundant, private, CMK-encrypted).

# --- Naming, location, tags --------------------------------------------------------------------

variable "name" {
  type        = string
  description = "Prefix for every resource. Lowercase letters, digits and dashes; short, because Key Vault and storage account names are limited to 24 characters."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,11}$", var.name))
    error_message = "name must be 3-12 characters of lowercase letters, digits and dashes, starting with a letter."
  }
}

variable "location" {
  type        = string
  description = "Azure region (e.g. westeurope, germanywestcentral); it must have availability zones."
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource (cost centre, data classification, owner ...)."
  default     = {}
}

# --- Network ------------------------------------------------------------------------------------

variable "vnet_cidr" {
  type        = string
  description = "Address space of the virtual network the module creates."
  default     = "10.60.0.0/16"
}

variable "nodes_subnet_cidr" {
  type        = string
  description = "Subnet of the AKS nodes (pods use the overlay range pod_cidr, not VNet addresses)."
  default     = "10.60.0.0/20"
}

variable "endpoints_subnet_cidr" {
  type        = string
  description = "Subnet of the private endpoints (PostgreSQL, Redis, Blob storage, Key Vault)."
  default     = "10.60.16.0/24"
}

variable "pod_cidr" {
  type        = string
  description = "Azure CNI Overlay range for pod addresses (not routable outside the cluster)."
  default     = "192.168.0.0/16"
}

variable "service_cidr" {
  type        = string
  description = "Range for Kubernetes Service addresses."
  default     = "172.20.0.0/16"
}

variable "admin_cidrs" {
  type        = list(string)
  description = "Networks (VPN, peered hub VNet, CI runner subnet) that run Terraform and administer the cluster: they may reach the Key Vault private endpoint on 443. The private AKS API is reachable from the VNet and peered VNets."
  default     = []
}

variable "outbound_type" {
  type        = string
  description = "AKS egress: loadBalancer (AKS-managed public IP for egress only) or userDefinedRouting (through the hospital's firewall; add the route table to the node subnet yourself)."
  default     = "loadBalancer"
}

# --- AKS ----------------------------------------------------------------------------------------

variable "kubernetes_version" {
  type        = string
  description = "AKS Kubernetes version; null uses the region's default. Patch upgrades follow the automatic upgrade channel."
  default     = null
}

variable "aks_admin_group_object_ids" {
  type        = list(string)
  description = "Microsoft Entra group object IDs that administer the cluster (local accounts are disabled; access is Entra ID + Azure RBAC)."
}

variable "log_retention_days" {
  type        = number
  description = "Retention of the Log Analytics workspace (container insights, AKS audit logs, storage logs), in days."
  default     = 365
}

variable "system_vm_size" {
  type        = string
  description = "VM size of the system node pool (critical add-ons only)."
  default     = "Standard_D4ds_v5"
}

variable "apps_vm_size" {
  type        = string
  description = "VM size of the apps node pool (HACS services, Envoy edge, Milvus)."
  default     = "Standard_D8ds_v5"
}

variable "apps_node_count" {
  type        = object({ min = number, max = number })
  description = "Minimum and maximum nodes of the apps pool."
  default     = { min = 3, max = 12 }
}

variable "gpu_enabled" {
  type        = bool
  description = "Create the GPU node pool and run the embedding service on it (chart value gpu.enabled) with the CUDA image."
  default     = true
}

variable "gpu_vm_size" {
  type        = string
  description = "GPU VM size (Standard_NC4as_T4_v3: NVIDIA T4; Standard_NC24ads_A100_v4: A100)."
  default     = "Standard_NC4as_T4_v3"
}

variable "gpu_zones" {
  type        = list(string)
  description = "Availability zones of the GPU pool (where the VM size is offered); empty lets Azure place it."
  default     = []
}

variable "gpu_node_count" {
  type        = object({ min = number, max = number })
  description = "Minimum and maximum nodes of the GPU pool."
  default     = { min = 1, max = 4 }
}

variable "nvidia_device_plugin_version" {
  type        = string
  description = "Version of the NVIDIA device plugin chart (https://nvidia.github.io/k8s-device-plugin) that advertises nvidia.com/gpu on the GPU nodes."
  default     = "0.17.1"
}

# --- Key Vault ------------------------------------------------------------------------------------

variable "key_vault_allowed_ips" {
  type        = list(string)
  description = "Public IPs/CIDRs allowed through the Key Vault firewall. Only used when key_vault_public_network_access is true (bootstrapping from outside the VNet)."
  default     = []
}

variable "key_vault_public_network_access" {
  type        = bool
  description = "Allow the Key Vault's public endpoint (restricted to key_vault_allowed_ips). Keep false and run Terraform from inside the VNet (or a peered one) in production."
  default     = false
}

# --- PostgreSQL Flexible Server -------------------------------------------------------------

variable "postgres_version" {
  type        = string
  description = "PostgreSQL major version of the Flexible Server."
  default     = "16"
}

variable "postgres_sku_name" {
  type        = string
  description = "Flexible Server SKU (GP_Standard_D4ds_v5: 4 vCores, 16 GiB)."
  default     = "GP_Standard_D4ds_v5"
}

variable "postgres_storage_mb" {
  type        = number
  description = "Storage of the Flexible Server in MiB (auto-grow raises it)."
  default     = 131072
}

variable "postgres_backup_retention_days" {
  type        = number
  description = "Days of backups and point-in-time restore (7-35)."
  default     = 35
}

# --- Azure Cache for Redis ----------------------------------------------------------------------

variable "redis_capacity" {
  type        = number
  description = "Premium cache size (1: P1, 6 GB; 2: P2, 13 GB ...)."
  default     = 1
}

# --- Backups --------------------------------------------------------------------------------------

variable "backup_replication_type" {
  type        = string
  description = "Replication of the backup storage account (GZRS: zone-redundant plus a copy in the paired region of the same geography)."
  default     = "GZRS"
}

variable "backup_retention_days" {
  type        = number
  description = "Days deleted or overwritten backup blobs and containers stay recoverable (soft delete)."
  default     = 35
}

variable "backup_service_account" {
  type        = string
  description = "Kubernetes ServiceAccount (in the HACS namespace) federated with the backup managed identity; your backup CronJob runs as it (with the label azure.workload.identity/use: \"true\")."
  default     = "hacs-backup"
}

# --- HACS chart ---------------------------------------------------------------------------------

variable "namespace" {
  type        = string
  description = "Kubernetes namespace of the HACS release and its Secrets."
  default     = "hacs"
}

variable "install_hacs" {
  type        = bool
  description = "Install the HACS chart. First apply with false, create the hacs-signing-keys, hacs-operator-key and hacs-service-key Secrets (see terraform/README.md), then apply with true."
  default     = true
}

variable "image_repository" {
  type        = string
  description = "HACS image repository (chart value image.repository), e.g. an Azure Container Registry mirror."
  default     = "ghcr.io/hacs-mesh/hacs"
}

variable "image_tag" {
  type        = string
  description = "HACS image tag (chart value image.tag); empty uses the chart's appVersion."
  default     = ""
}

variable "image_gpu_tag" {
  type        = string
  description = "Tag of the CUDA build of the HACS image for the GPU embedding pool (chart value image.gpuTag)."
  default     = ""
}

variable "istio_enabled" {
  type        = bool
  description = "Render the chart's Istio policies (mTLS STRICT); Istio must already be installed."
  default     = false
}

variable "hacs_config" {
  type        = map(string)
  description = "Extra HACS_* settings merged into the chart's config map (chart value config)."
  default     = {}
}

variable "extra_store_cidrs" {
  type        = list(string)
  description = "More CIDRs the pods may reach on the store ports (chart value networkPolicy.storeCIDRs), e.g. a Zilliz Cloud private endpoint."
  default     = []
}

variable "hacs_values" {
  type        = any
  description = "Further chart values, merged last (any key of charts/hacs/values.yaml)."
  default     = {}
}

# --- Milvus -------------------------------------------------------------------------------------

variable "zilliz_uri" {
  type        = string
  description = "URI of an external Zilliz Cloud (or other managed Milvus) endpoint. When set, no Milvus release is installed in the cluster."
  default     = null
}

variable "zilliz_token" {
  type        = string
  description = "API key / token for zilliz_uri, stored in the Kubernetes Secret hacs-milvus. Pass it from a secret store (TF_VAR_zilliz_token), never in code."
  default     = null
  sensitive   = true
}

variable "milvus_chart_version" {
  type        = string
  description = "Version of the milvus chart from https://zilliztech.github.io/milvus-helm/ installed when zilliz_uri is null."
  default     = "4.2.50"
}

variable "milvus_values" {
  type        = any
  description = "Extra values for the Milvus release (cluster sizing, external Blob storage ...)."
  default     = {}
}
