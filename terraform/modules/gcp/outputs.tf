# What the root module and the operators need: how to reach the cluster (the example
# configures the kubernetes and helm providers from these), where the stores are, and the
# backup bucket and identity. No output carries a password.

output "cluster_name" {
  description = "GKE cluster name."
  value       = google_container_cluster.this.name
}

output "cluster_endpoint" {
  description = "Private HTTPS endpoint of the Kubernetes API."
  value       = "https://${google_container_cluster.this.private_cluster_config[0].private_endpoint}"
}

output "cluster_ca_certificate" {
  description = "Base64-encoded CA certificate of the Kubernetes API."
  value       = google_container_cluster.this.master_auth[0].cluster_ca_certificate
}

output "kubeconfig_command" {
  description = "Command that writes a kubeconfig entry for the cluster (private endpoint)."
  value       = "gcloud container clusters get-credentials ${google_container_cluster.this.name} --region ${var.region} --project ${var.project_id} --internal-ip"
}

output "database_host" {
  description = "Private IP of the Cloud SQL instance."
  value       = google_sql_database_instance.this.private_ip_address
}

output "database_connection_name" {
  description = "Cloud SQL connection name (project:region:instance), for the Cloud SQL Auth Proxy."
  value       = google_sql_database_instance.this.connection_name
}

output "redis_host" {
  description = "Private IP of the Memorystore primary endpoint (TLS)."
  value       = google_redis_instance.this.host
}

output "redis_port" {
  description = "Memorystore port (6378 with TLS)."
  value       = google_redis_instance.this.port
}

output "backup_bucket" {
  description = "GCS bucket for database dumps and Milvus backups."
  value       = google_storage_bucket.backups.name
}

output "backup_service_account_email" {
  description = "Google service account the backup ServiceAccount impersonates through Workload Identity."
  value       = google_service_account.backup.email
}

output "backup_service_account" {
  description = "Namespace/name of the Kubernetes ServiceAccount allowed to use the backup bucket."
  value       = "${var.namespace}/${var.backup_service_account}"
}

output "kms_key_ids" {
  description = "Cloud KMS keys by purpose (gke, disk, sql, redis, storage)."
  value       = { for purpose, key in google_kms_crypto_key.this : purpose => key.id }
}

output "network_id" {
  description = "VPC of the deployment (peer it or connect it to reach the internal edge)."
  value       = google_compute_network.this.id
}

output "milvus_uri" {
  description = "Milvus endpoint HACS uses (in-cluster release or Zilliz Cloud)."
  value       = local.milvus_uri
}

output "namespace" {
  description = "Kubernetes namespace of the HACS release."
  value       = kubernetes_namespace_v1.hacs.metadata[0].name
}
