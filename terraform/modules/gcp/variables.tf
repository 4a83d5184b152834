# Inputs of the GCP module. project_id, region, name and gke_security_group are required;
# every default is the production-shaped choice (regional, private, CMEK-encrypted).

# --- Project, naming, labels -----------------------------------------------------------------

variable "project_id" {
  type        = string
  description = "Google Cloud project that holds the deployment."
}

variable "region" {
  type        = string
  description = "Region of the regional GKE cluster, Cloud SQL, Memorystore, the KMS key ring and the bucket (e.g. europe-west3)."
}

variable "name" {
  type        = string
  description = "Prefix for every resource. Lowercase letters, digits and dashes; short, because service account ids are limited to 30 characters."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,15}$", var.name))
    error_message = "name must be 3-16 characters of lowercase letters, digits and dashes, starting with a letter."
  }
}

variable "labels" {
  type        = map(string)
  description = "Labels added to every resource that takes them (cost centre, data classification ...)."
  default     = {}
}

variable "enable_apis" {
  type        = bool
  description = "Enable the project APIs the module needs (container, sqladmin, redis, servicenetworking, cloudkms, binaryauthorization ...). Turn off when a project factory manages them."
  default     = true
}

# --- Network ------------------------------------------------------------------------------------

variable "nodes_cidr" {
  type        = string
  description = "Primary range of the GKE subnet (node addresses)."
  default     = "10.50.0.0/20"
}

variable "pods_cidr" {
  type        = string
  description = "Secondary range for pod addresses (VPC-native cluster)."
  default     = "10.52.0.0/14"
}

variable "services_cidr" {
  type        = string
  description = "Secondary range for Kubernetes Service addresses."
  default     = "10.56.0.0/20"
}

variable "master_ipv4_cidr_block" {
  type        = string
  description = "/28 range of the private GKE control plane."
  default     = "172.16.0.0/28"
}

variable "private_service_access_prefix_length" {
  type        = number
  description = "Prefix length of the range reserved for private service access (Cloud SQL and Memorystore get their addresses from it)."
  default     = 20
}

variable "master_authorized_networks" {
  type        = list(object({ cidr_block = string, display_name = string }))
  description = "Internal networks (VPN, peered admin VPC, CI runners) allowed to reach the private Kubernetes API, besides the node subnet."
  default     = []
}

# --- GKE ----------------------------------------------------------------------------------------

variable "release_channel" {
  type        = string
  description = "GKE release channel (REGULAR or STABLE for production); GKE upgrades the control plane and nodes within it."
  default     = "REGULAR"
}

variable "gke_security_group" {
  type        = string
  description = "Google Group for Kubernetes RBAC (Google Groups for GKE), e.g. gke-security-groups@hospital.example.org; RoleBindings can then name hospital groups."
}

variable "deletion_protection" {
  type        = bool
  description = "Protect the GKE cluster and the Cloud SQL instance from `terraform destroy`. Leave on for anything holding PHI."
  default     = true
}

variable "system_machine_type" {
  type        = string
  description = "Machine type of the general node pool (HACS services, Envoy edge, Milvus)."
  default     = "n2-standard-8"
}

variable "system_node_count" {
  type        = object({ min = number, max = number })
  description = "Total (all zones) minimum and maximum nodes of the general pool."
  default     = { min = 3, max = 12 }
}

variable "gpu_enabled" {
  type        = bool
  description = "Create the GPU node pool and run the embedding service on it (chart value gpu.enabled) with the CUDA image."
  default     = true
}

variable "gpu_machine_type" {
  type        = string
  description = "Machine type of the GPU pool (g2-standard-* carries NVIDIA L4)."
  default     = "g2-standard-8"
}

variable "gpu_type" {
  type        = string
  description = "Accelerator type attached to each GPU node (nvidia-l4, nvidia-tesla-t4 ...)."
  default     = "nvidia-l4"
}

variable "gpu_count" {
  type        = number
  description = "Accelerators per GPU node."
  default     = 1
}

variable "gpu_zones" {
  type        = list(string)
  description = "Zones of the GPU pool (where the accelerator is available); empty uses the cluster's zones."
  default     = []
}

variable "gpu_node_count" {
  type        = object({ min = number, max = number })
  description = "Total (all zones) minimum and maximum nodes of the GPU pool."
  default     = { min = 1, max = 4 }
}

variable "node_disk_size_gb" {
  type        = number
  description = "Boot disk size of every node in GB (the CUDA image is several GB)."
  default     = 100
}

# --- Cloud SQL PostgreSQL ---------------------------------------------------------------------

variable "postgres_version" {
  type        = string
  description = "Cloud SQL database version."
  default     = "POSTGRES_16"
}

variable "postgres_tier" {
  type        = string
  description = "Cloud SQL machine tier (db-custom-<vCPU>-<MiB>)."
  default     = "db-custom-4-16384"
}

variable "postgres_disk_size_gb" {
  type        = number
  description = "Initial SSD size in GB; disk autoresize grows it."
  default     = 100
}

variable "postgres_backup_retention" {
  type        = number
  description = "Number of daily automated backups kept (point-in-time recovery keeps 7 days of WAL)."
  default     = 35
}

# --- Memorystore Redis ------------------------------------------------------------------------

variable "redis_memory_size_gb" {
  type        = number
  description = "Memorystore capacity in GB."
  default     = 5
}

variable "redis_version" {
  type        = string
  description = "Memorystore Redis version."
  default     = "REDIS_7_2"
}

# --- Backups --------------------------------------------------------------------------------------

variable "backup_bucket_name" {
  type        = string
  description = "Name of the GCS bucket for database dumps and Milvus backups; null derives \"<name>-hacs-backups-<project id>\"."
  default     = null
}

variable "backup_retention_days" {
  type        = number
  description = "Days a backup object is kept (bucket retention policy and lifecycle rule)."
  default     = 35
}

variable "backup_service_account" {
  type        = string
  description = "Kubernetes ServiceAccount (in the HACS namespace) bound by Workload Identity to the backup bucket; your backup CronJob runs as it."
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
  description = "HACS image repository (chart value image.repository), e.g. an Artifact Registry mirror."
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
  description = "Render the chart's Istio policies (mTLS STRICT); Istio / Cloud Service Mesh must already be installed."
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
  description = "Extra values for the Milvus release (cluster sizing, external GCS ...)."
  default     = {}
}
