# The GKE cluster: regional, private nodes and a private-only control plane endpoint,
# Dataplane V2 (network policy enforcement), Workload Identity, Shielded nodes with Secure
# Boot, Kubernetes Secrets encrypted with the gke CMEK key, Binary Authorization, Google
# Groups for RBAC, and two node pools (general and GPU) with CMEK boot disks.
#
# Terraform must reach the private endpoint to install the Helm releases: run it from a
# network listed in master_authorized_networks (VPN, peered admin VPC, CI runner).

resource "google_service_account" "nodes" {
  project      = var.project_id
  account_id   = "${var.name}-hacs-nodes"
  display_name = "HACS ${var.name} GKE nodes (logging, monitoring, image pulls)"
}

# The minimum a node needs; workloads get their own identities through Workload Identity.
resource "google_project_iam_member" "nodes" {
  for_each = toset([
    "roles/artifactregistry.reader",
    "roles/autoscaling.metricsWriter",
    "roles/logging.logWriter",
    "roles/monitoring.metricWriter",
    "roles/monitoring.viewer",
    "roles/stackdriver.resourceMetadata.writer",
  ])
  project = var.project_id
  role    = each.value
  member  = "serviceAccount:${google_service_account.nodes.email}"
}

resource "google_container_cluster" "this" {
  #checkov:skip=CKV_GCP_24:PodSecurityPolicy was removed from Kubernetes (1.25); the HACS namespace enforces Pod Security Standards labels instead (kubernetes.tf).
  project             = var.project_id
  name                = local.cluster_name
  location            = var.region
  deletion_protection = var.deletion_protection

  # Node pools are separate resources; the default pool is removed at creation.
  remove_default_node_pool = true
  initial_node_count       = 1

  network         = google_compute_network.this.id
  subnetwork      = google_compute_subnetwork.nodes.id
  networking_mode = "VPC_NATIVE"
  ip_allocation_policy {
    cluster_secondary_range_name  = "pods"
    services_secondary_range_name = "services"
  }

  private_cluster_config {
    enable_private_nodes    = true
    enable_private_endpoint = true
    master_ipv4_cidr_block  = var.master_ipv4_cidr_block
    master_global_access_config {
      enabled = false
    }
  }

  master_authorized_networks_config {
    gcp_public_cidrs_access_enabled = false
    cidr_blocks {
      cidr_block   = var.nodes_cidr
      display_name = "GKE node subnet"
    }
    dynamic "cidr_blocks" {
      for_each = var.master_authorized_networks
      content {
        cidr_block   = cidr_blocks.value.cidr_block
        display_name = cidr_blocks.value.display_name
      }
    }
  }

  # Dataplane V2 enforces NetworkPolicy (the chart renders one per component).
  datapath_provider = "ADVANCED_DATAPATH"
  network_policy {
    enabled = false # the Calico add-on; Dataplane V2 replaces it
  }
  enable_intranode_visibility = true

  release_channel {
    channel = var.release_channel
  }

  workload_identity_config {
    workload_pool = "${var.project_id}.svc.id.goog"
  }

  database_encryption {
    state    = "ENCRYPTED"
    key_name = google_kms_crypto_key.this["gke"].id
  }

  binary_authorization {
    evaluation_mode = "PROJECT_SINGLETON_POLICY_ENFORCE"
  }

  authenticator_groups_config {
    security_group = var.gke_security_group
  }

  enable_shielded_nodes = true
  enable_legacy_abac    = false
  master_auth {
    client_certificate_config {
      issue_client_certificate = false
    }
  }

  logging_config {
    enable_components = ["SYSTEM_COMPONENTS", "APISERVER", "CONTROLLER_MANAGER", "SCHEDULER", "WORKLOADS"]
  }
  monitoring_config {
    enable_components = ["SYSTEM_COMPONENTS"]
    managed_prometheus {
      enabled = true
    }
  }

  # Settings of the short-lived default pool (removed right after creation).
  node_config {
    service_account   = google_service_account.nodes.email
    oauth_scopes      = ["https://www.googleapis.com/auth/cloud-platform"]
    image_type        = "COS_CONTAINERD"
    boot_disk_kms_key = google_kms_crypto_key.this["disk"].id
    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }
    workload_metadata_config {
      mode = "GKE_METADATA"
    }
  }

  resource_labels = local.labels

  maintenance_policy {
    recurring_window {
      # Saturday and Sunday 02:00-08:00 UTC (GKE wants >= 48 h of windows per 32 days).
      start_time = "2025-01-04T02:00:00Z"
      end_time   = "2025-01-04T08:00:00Z"
      recurrence = "FREQ=WEEKLY;BYDAY=SA,SU"
    }
  }

  depends_on = [
    google_kms_crypto_key_iam_member.service_agents,
    google_project_iam_member.nodes,
  ]

  lifecycle {
    ignore_changes = [node_config, initial_node_count]
  }
}

locals {
  node_pool_config = {
    service_account   = google_service_account.nodes.email
    boot_disk_kms_key = google_kms_crypto_key.this["disk"].id
  }
}

resource "google_container_node_pool" "general" {
  project  = var.project_id
  name     = "general"
  cluster  = google_container_cluster.this.id
  location = var.region

  autoscaling {
    total_min_node_count = var.system_node_count.min
    total_max_node_count = var.system_node_count.max
    location_policy      = "BALANCED"
  }

  management {
    auto_repair  = true
    auto_upgrade = true
  }

  node_config {
    machine_type      = var.system_machine_type
    image_type        = "COS_CONTAINERD"
    disk_type         = "pd-balanced"
    disk_size_gb      = var.node_disk_size_gb
    boot_disk_kms_key = local.node_pool_config.boot_disk_kms_key
    service_account   = local.node_pool_config.service_account
    oauth_scopes      = ["https://www.googleapis.com/auth/cloud-platform"]
    labels            = { "hacs-pool" = "general" }
    resource_labels   = local.labels
    metadata          = { "disable-legacy-endpoints" = "true" }

    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }
    workload_metadata_config {
      mode = "GKE_METADATA"
    }
  }
}

# The GPU pool for the embedding service. GKE installs the NVIDIA driver and device plugin
# and taints the nodes nvidia.com/gpu=present:NoSchedule; the chart's gpu.tolerations match
# the taint and gpu.nodeSelector the nvidia.com/gpu.present label set here.
resource "google_container_node_pool" "gpu" {
  count = var.gpu_enabled ? 1 : 0

  project        = var.project_id
  name           = "gpu"
  cluster        = google_container_cluster.this.id
  location       = var.region
  node_locations = length(var.gpu_zones) > 0 ? var.gpu_zones : null

  autoscaling {
    total_min_node_count = var.gpu_node_count.min
    total_max_node_count = var.gpu_node_count.max
    location_policy      = "ANY"
  }

  management {
    auto_repair  = true
    auto_upgrade = true
  }

  node_config {
    machine_type      = var.gpu_machine_type
    image_type        = "COS_CONTAINERD"
    disk_type         = "pd-balanced"
    disk_size_gb      = var.node_disk_size_gb
    boot_disk_kms_key = local.node_pool_config.boot_disk_kms_key
    service_account   = local.node_pool_config.service_account
    oauth_scopes      = ["https://www.googleapis.com/auth/cloud-platform"]
    resource_labels   = local.labels
    metadata          = { "disable-legacy-endpoints" = "true" }
    labels = {
      "hacs-pool"              = "gpu"
      "nvidia.com/gpu.present" = "true"
    }

    guest_accelerator {
      type  = var.gpu_type
      count = var.gpu_count
      gpu_driver_installation_config {
        gpu_driver_version = "DEFAULT"
      }
    }

    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }
    workload_metadata_config {
      mode = "GKE_METADATA"
    }
  }
}
