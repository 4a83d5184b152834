# Cloud SQL for PostgreSQL: regional (HA across two zones), private IP only through private
# service access, TLS required for every connection, CMEK, daily backups with point-in-time
# recovery, audit-grade logging flags (pgAudit, connections, DDL).
#
# The password comes from random_password and lives only in Terraform state and in the
# Kubernetes Secret hacs-database; keep the state in an encrypted, access-controlled
# backend (a GCS bucket with CMEK and uniform access, or Terraform Cloud).

resource "random_password" "database" {
  length  = 40
  special = false # URL-safe: it is embedded in the SQLAlchemy URL
}

resource "google_sql_database_instance" "this" {
  #checkov:skip=CKV_GCP_6:ssl_mode is ENCRYPTED_ONLY (TLS required on every connection); client certificates (TRUSTED_CLIENT_CERTIFICATE_REQUIRED) are not used because HACS authenticates with a password over TLS from a private network.
  #checkov:skip=CKV_GCP_79:The major version is the postgres_version variable, pinned to the version HACS is tested with; major upgrades are planned changes, not a default.
  #checkov:skip=CKV2_GCP_13:log_duration=on writes a line for every statement (HACS runs thousands per second); slow statements are caught by Query Insights instead.
  project             = var.project_id
  name                = "${var.name}-hacs"
  region              = var.region
  database_version    = var.postgres_version
  encryption_key_name = google_kms_crypto_key.this["sql"].id
  deletion_protection = var.deletion_protection

  settings {
    tier              = var.postgres_tier
    edition           = "ENTERPRISE"
    availability_type = "REGIONAL"
    disk_type         = "PD_SSD"
    disk_size         = var.postgres_disk_size_gb
    disk_autoresize   = true
    user_labels       = local.labels

    deletion_protection_enabled = var.deletion_protection

    ip_configuration {
      ipv4_enabled                                  = false
      private_network                               = google_compute_network.this.id
      ssl_mode                                      = "ENCRYPTED_ONLY"
      enable_private_path_for_google_cloud_services = false
    }

    backup_configuration {
      enabled                        = true
      start_time                     = "02:00"
      point_in_time_recovery_enabled = true
      transaction_log_retention_days = 7
      backup_retention_settings {
        retained_backups = var.postgres_backup_retention
        retention_unit   = "COUNT"
      }
    }

    maintenance_window {
      day          = 7
      hour         = 3
      update_track = "stable"
    }

    insights_config {
      query_insights_enabled  = true
      record_application_tags = true
      record_client_address   = false
    }

    # Audit and diagnostics (the CIS Cloud SQL PostgreSQL benchmark's flags).
    database_flags {
      name  = "cloudsql.enable_pgaudit"
      value = "on"
    }
    database_flags {
      name  = "pgaudit.log"
      value = "ddl,role"
    }
    database_flags {
      name  = "log_statement"
      value = "ddl"
    }
    database_flags {
      name  = "log_checkpoints"
      value = "on"
    }
    database_flags {
      name  = "log_connections"
      value = "on"
    }
    database_flags {
      name  = "log_disconnections"
      value = "on"
    }
    database_flags {
      name  = "log_lock_waits"
      value = "on"
    }
    database_flags {
      name  = "log_hostname"
      value = "on"
    }
    database_flags {
      name  = "log_min_messages"
      value = "warning"
    }
    database_flags {
      name  = "log_min_error_statement"
      value = "error"
    }
    database_flags {
      name  = "log_temp_files"
      value = "0"
    }
    database_flags {
      name  = "log_min_duration_statement"
      value = "-1"
    }
    database_flags {
      name  = "log_executor_stats"
      value = "off"
    }
    database_flags {
      name  = "log_parser_stats"
      value = "off"
    }
    database_flags {
      name  = "log_planner_stats"
      value = "off"
    }
    database_flags {
      name  = "log_statement_stats"
      value = "off"
    }
  }

  depends_on = [
    google_service_networking_connection.private_services,
    google_kms_crypto_key_iam_member.service_agents,
  ]
}

resource "google_sql_database" "hacs" {
  project  = var.project_id
  name     = "hacs"
  instance = google_sql_database_instance.this.name
}

resource "google_sql_user" "hacs" {
  project  = var.project_id
  name     = "hacs"
  instance = google_sql_database_instance.this.name
  password = random_password.database.result
}
