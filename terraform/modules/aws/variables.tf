# Inputs of the AWS module. `name` and `availability_zones` are required (the region is
# the aws provider's); every default is the production-shaped choice (multi-AZ, private,
# encrypted).

# --- Naming and tagging -----------------------------------------------------------------

variable "name" {
  type        = string
  description = "Prefix for every resource (EKS cluster, RDS instance, bucket ...). Lowercase letters, digits and dashes."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,19}$", var.name))
    error_message = "name must be 3-20 characters of lowercase letters, digits and dashes, starting with a letter (bucket names derive from it)."
  }
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every AWS resource (cost centre, data classification, owner ...)."
  default     = {}
}

# --- Network ------------------------------------------------------------------------------

variable "vpc_cidr" {
  type        = string
  description = "CIDR of the VPC the module creates. Split into private node subnets (/20), data subnets (/24) and small public subnets that hold only the NAT gateways."
  default     = "10.40.0.0/16"
}

variable "availability_zones" {
  type        = list(string)
  description = "Availability zones (names, e.g. [\"eu-central-1a\", \"eu-central-1b\", \"eu-central-1c\"]) to spread nodes, RDS Multi-AZ and ElastiCache over. Listed explicitly so the layout never changes when AWS adds a zone."

  validation {
    condition     = length(var.availability_zones) >= 2 && length(var.availability_zones) <= 4
    error_message = "Give 2 to 4 availability zones."
  }
}

variable "single_nat_gateway" {
  type        = bool
  description = "One NAT gateway for all zones (cheaper) instead of one per zone (survives a zone outage)."
  default     = false
}

variable "flow_log_retention_days" {
  type        = number
  description = "Retention of VPC flow logs and EKS control-plane logs in CloudWatch, in days (HIPAA audit trails usually need 365 or more)."
  default     = 365
}

# --- EKS ------------------------------------------------------------------------------------

variable "kubernetes_version" {
  type        = string
  description = "EKS Kubernetes version (the chart needs >= 1.27)."
  default     = "1.33"
}

variable "cluster_admin_role_arns" {
  type        = list(string)
  description = "IAM role ARNs (platform team, break-glass) given cluster-admin through EKS access entries. The identity running Terraform is admin as the cluster creator."
  default     = []
}

variable "api_access_cidrs" {
  type        = list(string)
  description = "Extra CIDRs (VPN, peered admin VPC, CI runners) allowed to reach the private EKS API endpoint on 443. The VPC itself is always allowed."
  default     = []
}

variable "system_instance_types" {
  type        = list(string)
  description = "Instance types of the general node group (HACS services, Envoy edge, Milvus)."
  default     = ["m6i.2xlarge"]
}

variable "system_node_count" {
  type        = object({ min = number, desired = number, max = number })
  description = "Size of the general node group."
  default     = { min = 3, desired = 3, max = 12 }
}

variable "gpu_enabled" {
  type        = bool
  description = "Create the GPU node group and run the embedding service on it (chart value gpu.enabled) with the CUDA image."
  default     = true
}

variable "gpu_instance_types" {
  type        = list(string)
  description = "GPU instance types for the embedding pool (g5: NVIDIA A10G; g6: NVIDIA L4)."
  default     = ["g5.xlarge"]
}

variable "gpu_ami_type" {
  type        = string
  description = "EKS AMI type of the GPU node group; AL2023_x86_64_NVIDIA ships the NVIDIA driver and container toolkit."
  default     = "AL2023_x86_64_NVIDIA"
}

variable "gpu_node_count" {
  type        = object({ min = number, desired = number, max = number })
  description = "Size of the GPU node group."
  default     = { min = 1, desired = 1, max = 4 }
}

variable "node_disk_size_gb" {
  type        = number
  description = "Root volume size of every node in GiB (the CUDA image is several GiB)."
  default     = 100
}

variable "nvidia_device_plugin_version" {
  type        = string
  description = "Version of the NVIDIA device plugin chart (https://nvidia.github.io/k8s-device-plugin) that advertises nvidia.com/gpu on the GPU nodes."
  default     = "0.17.1"
}

# --- RDS PostgreSQL -----------------------------------------------------------------------

variable "postgres_engine_version" {
  type        = string
  description = "RDS PostgreSQL engine version; a major version (\"16\") lets RDS choose the minor and apply minor upgrades."
  default     = "16"
}

variable "postgres_instance_class" {
  type        = string
  description = "RDS instance class."
  default     = "db.r6g.xlarge"
}

variable "postgres_allocated_storage_gb" {
  type        = number
  description = "Initial gp3 storage of the database in GiB; storage autoscaling grows it up to postgres_max_allocated_storage_gb."
  default     = 200
}

variable "postgres_max_allocated_storage_gb" {
  type        = number
  description = "Upper bound of RDS storage autoscaling in GiB."
  default     = 2000
}

variable "postgres_backup_retention_days" {
  type        = number
  description = "Days of automated RDS backups and point-in-time recovery (1-35)."
  default     = 35
}

variable "deletion_protection" {
  type        = bool
  description = "Protect the database (and final snapshot) from `terraform destroy`. Leave on for anything holding PHI."
  default     = true
}

# --- ElastiCache Redis --------------------------------------------------------------------

variable "redis_node_type" {
  type        = string
  description = "ElastiCache node type of the Redis replication group (change bus, sync sessions)."
  default     = "cache.r7g.large"
}

variable "redis_engine_version" {
  type        = string
  description = "ElastiCache Redis engine version."
  default     = "7.1"
}

variable "redis_replicas" {
  type        = number
  description = "Read replicas next to the primary (at least 1 for Multi-AZ automatic failover)."
  default     = 1
}

# --- Backups --------------------------------------------------------------------------------

variable "backup_bucket_name" {
  type        = string
  description = "Name of the S3 bucket for database dumps and Milvus backups; null derives \"<name>-hacs-backups-<account id>\"."
  default     = null
}

variable "backup_retention_days" {
  type        = number
  description = "Days a backup object is kept (also the S3 Object Lock governance retention)."
  default     = 35
}

variable "backup_service_account" {
  type        = string
  description = "Kubernetes ServiceAccount (in the HACS namespace) bound by IRSA to the backup bucket; your backup CronJob runs as it."
  default     = "hacs-backup"
}

# --- HACS chart -----------------------------------------------------------------------------

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
  description = "HACS image repository (chart value image.repository), e.g. a private ECR mirror."
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
  description = "Render the chart's Istio policies (mTLS STRICT); Istio itself must already be installed."
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

# --- Milvus ---------------------------------------------------------------------------------

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
  description = "Extra values for the Milvus release (cluster sizing, external S3 ...)."
  default     = {}
}
