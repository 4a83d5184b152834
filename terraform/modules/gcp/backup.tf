# The backup bucket (database dumps, milvus-backup archives) and the only identity that may
# write to it: a Google service account that only the Kubernetes ServiceAccount
# <namespace>/<backup service account> can impersonate (Workload Identity). The bucket is
# private (uniform access, public access prevention enforced), CMEK-encrypted, protected by
# a retention policy (no backup can be deleted or overwritten early), and access-logged to a
# second bucket.

locals {
  backup_bucket = coalesce(var.backup_bucket_name, "${var.name}-hacs-backups-${var.project_id}")
}

resource "google_storage_bucket" "backups" {
  #checkov:skip=CKV_GCP_78:The retention policy below already makes every backup undeletable and unoverwritable for its lifetime; GCS does not allow Object Versioning together with a retention policy.
  project                     = var.project_id
  name                        = local.backup_bucket
  location                    = var.region
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false
  labels                      = merge(local.labels, { "hacs-data" = "backups" })

  encryption {
    default_kms_key_name = google_kms_crypto_key.this["storage"].id
  }

  # A backup cannot be deleted or overwritten before it is this old.
  retention_policy {
    retention_period = var.backup_retention_days * 86400
  }

  lifecycle_rule {
    condition {
      age = var.backup_retention_days + 1
    }
    action {
      type = "Delete"
    }
  }

  logging {
    log_bucket        = google_storage_bucket.access_logs.name
    log_object_prefix = "backups/"
  }

  depends_on = [google_kms_crypto_key_iam_member.service_agents]
}

resource "google_storage_bucket" "access_logs" {
  #checkov:skip=CKV_GCP_62:This is the access-log bucket itself; logging it into itself would loop.
  project                     = var.project_id
  name                        = "${local.backup_bucket}-access-logs"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false
  labels                      = merge(local.labels, { "hacs-data" = "access-logs" })

  versioning {
    enabled = true
  }

  encryption {
    default_kms_key_name = google_kms_crypto_key.this["storage"].id
  }

  lifecycle_rule {
    condition {
      age = 400
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_kms_crypto_key_iam_member.service_agents]
}

# Cloud Storage's log writer may write the access logs.
resource "google_storage_bucket_iam_member" "access_logs_writer" {
  bucket = google_storage_bucket.access_logs.name
  role   = "roles/storage.objectCreator"
  member = "group:cloud-storage-analytics@google.com"
}

# --- Workload Identity for the backup job --------------------------------------------------

resource "google_service_account" "backup" {
  project      = var.project_id
  account_id   = "${var.name}-hacs-backup"
  display_name = "HACS ${var.name} backups (Workload Identity: ${var.namespace}/${var.backup_service_account})"
}

# Create and read backups; no delete (the retention policy and lifecycle rule expire them).
resource "google_storage_bucket_iam_member" "backup" {
  for_each = toset(["roles/storage.objectCreator", "roles/storage.objectViewer"])
  bucket   = google_storage_bucket.backups.name
  role     = each.value
  member   = "serviceAccount:${google_service_account.backup.email}"
}

resource "google_service_account_iam_member" "backup_workload_identity" {
  service_account_id = google_service_account.backup.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.project_id}.svc.id.goog[${var.namespace}/${var.backup_service_account}]"

  # The workload pool exists once the cluster does.
  depends_on = [google_container_cluster.this]
}
