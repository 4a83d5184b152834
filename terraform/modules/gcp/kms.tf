# Cloud KMS (CMEK): one key ring in the deployment's region and one key per service, so
# each Google service agent can use only its own key. Keys rotate every 90 days and are
# protected from `terraform destroy` (a destroyed key makes its data unreadable forever).
#
#   gke      Kubernetes Secrets in etcd (application-layer secrets encryption)
#   disk     node boot disks and persistent volumes (Milvus, etcd, MinIO)
#   sql      Cloud SQL storage and backups
#   redis    Memorystore data at rest
#   storage  the backup bucket and its access-log bucket
#
# The Cloud SQL service agent (service-<number>@gcp-sa-cloud-sql.iam.gserviceaccount.com)
# must exist before the first apply: `gcloud beta services identity create
# --service=sqladmin.googleapis.com --project=<project>` (terraform/README.md).

locals {
  kms_purposes = toset(["gke", "disk", "sql", "redis", "storage"])
  service_agents = {
    gke     = "serviceAccount:service-${local.project_number}@container-engine-robot.iam.gserviceaccount.com"
    disk    = "serviceAccount:service-${local.project_number}@compute-system.iam.gserviceaccount.com"
    sql     = "serviceAccount:service-${local.project_number}@gcp-sa-cloud-sql.iam.gserviceaccount.com"
    redis   = "serviceAccount:service-${local.project_number}@cloud-redis.iam.gserviceaccount.com"
    storage = "serviceAccount:${data.google_storage_project_service_account.this.email_address}"
  }
}

data "google_storage_project_service_account" "this" {
  project    = var.project_id
  depends_on = [google_project_service.apis]
}

resource "google_kms_key_ring" "this" {
  project  = var.project_id
  name     = "${var.name}-hacs"
  location = var.region

  depends_on = [google_project_service.apis]
}

resource "google_kms_crypto_key" "this" {
  for_each = local.kms_purposes

  name            = "hacs-${each.key}"
  key_ring        = google_kms_key_ring.this.id
  purpose         = "ENCRYPT_DECRYPT"
  rotation_period = "7776000s" # 90 days
  labels          = local.labels

  version_template {
    algorithm        = "GOOGLE_SYMMETRIC_ENCRYPTION"
    protection_level = "SOFTWARE"
  }

  lifecycle {
    prevent_destroy = true
  }
}

resource "google_kms_crypto_key_iam_member" "service_agents" {
  for_each = local.kms_purposes

  crypto_key_id = google_kms_crypto_key.this[each.key].id
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = local.service_agents[each.key]
}
