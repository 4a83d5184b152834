# HACS on Google Cloud: a private regional GKE cluster with a GPU node pool, Cloud SQL for
# PostgreSQL and Memorystore for Redis on private service access, a GCS backup bucket,
# Cloud KMS keys (CMEK) for all of it, and the HACS and Milvus Helm releases.
# terraform/README.md walks through what gets created and why.
#
# Files: network.tf (VPC, NAT, private service access), kms.tf, gke.tf, database.tf,
# redis.tf, backup.tf (bucket + Workload Identity), kubernetes.tf (namespace, Secrets, Helm
# releases), outputs.tf.

data "google_project" "this" {
  project_id = var.project_id
}

locals {
  project_number = data.google_project.this.number
  cluster_name   = "${var.name}-hacs"
  # Resource names already carry var.name; the label marks what belongs to HACS.
  labels = merge(var.labels, { "app-kubernetes-io-part-of" = "hacs" })
}

resource "google_project_service" "apis" {
  for_each = var.enable_apis ? toset([
    "binaryauthorization.googleapis.com",
    "cloudkms.googleapis.com",
    "compute.googleapis.com",
    "container.googleapis.com",
    "iam.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "redis.googleapis.com",
    "servicenetworking.googleapis.com",
    "sqladmin.googleapis.com",
    "storage.googleapis.com",
  ]) : toset([])

  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}
