# Memorystore for Redis: Standard tier (primary + replica in another zone, automatic
# failover), private service access only, AUTH on, TLS (server authentication) on, CMEK,
# hourly RDB snapshots.
#
# Memorystore signs its TLS certificate with a per-instance CA, so the URL in hacs-redis
# carries that CA (redis-py's ssl_ca_data, URL-encoded) and clients verify the server:
# rediss://:<auth>@<host>:6378/0?ssl_ca_data=<PEM>.

resource "google_redis_instance" "this" {
  project        = var.project_id
  name           = "${var.name}-hacs"
  region         = var.region
  display_name   = "HACS ${var.name}: change bus and sync sessions"
  tier           = "STANDARD_HA"
  memory_size_gb = var.redis_memory_size_gb
  redis_version  = var.redis_version
  labels         = local.labels

  authorized_network = google_compute_network.this.id
  connect_mode       = "PRIVATE_SERVICE_ACCESS"
  reserved_ip_range  = google_compute_global_address.private_services.name

  auth_enabled            = true
  transit_encryption_mode = "SERVER_AUTHENTICATION"
  customer_managed_key    = google_kms_crypto_key.this["redis"].id

  persistence_config {
    persistence_mode    = "RDB"
    rdb_snapshot_period = "ONE_HOUR"
  }

  maintenance_policy {
    weekly_maintenance_window {
      day = "SUNDAY"
      start_time {
        hours   = 4
        minutes = 0
        seconds = 0
        nanos   = 0
      }
    }
  }

  depends_on = [
    google_service_networking_connection.private_services,
    google_kms_crypto_key_iam_member.service_agents,
  ]
}
