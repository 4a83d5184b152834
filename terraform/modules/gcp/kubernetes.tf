# Everything inside the cluster: the HACS namespace, the two Secrets built from the managed
# services (hacs-database, hacs-redis; hacs-milvus when a Zilliz token is given), the
# backup ServiceAccount bound to its Google service account, a CMEK-encrypted default
# StorageClass, Milvus and HACS itself. (GKE installs the NVIDIA device plugin itself.)
#
# Not created here, on purpose: hacs-signing-keys, hacs-operator-key and hacs-service-key.
# They are the platform's own credentials; create them with kubectl or External Secrets
# before install_hacs = true (terraform/README.md, "Secrets").

locals {
  database_url = format(
    "postgresql+asyncpg://%s:%s@%s:5432/%s?ssl=require",
    google_sql_user.hacs.name,
    random_password.database.result,
    google_sql_database_instance.this.private_ip_address,
    google_sql_database.hacs.name,
  )
  # Memorystore's per-instance CA travels in the URL (redis-py reads ssl_ca_data).
  redis_url = format(
    "rediss://:%s@%s:%d/0?ssl_ca_data=%s",
    urlencode(google_redis_instance.this.auth_string),
    google_redis_instance.this.host,
    google_redis_instance.this.port,
    urlencode(google_redis_instance.this.server_ca_certs[0].cert),
  )
  milvus_in_cluster = var.zilliz_uri == null
  milvus_uri        = local.milvus_in_cluster ? "http://milvus.milvus.svc:19530" : var.zilliz_uri
}

resource "kubernetes_namespace_v1" "hacs" {
  metadata {
    name = var.namespace
    labels = merge(
      {
        "pod-security.kubernetes.io/enforce" = "baseline"
        "pod-security.kubernetes.io/warn"    = "restricted"
        "pod-security.kubernetes.io/audit"   = "restricted"
      },
      var.istio_enabled ? { "istio-injection" = "enabled" } : {},
    )
  }
  depends_on = [google_container_node_pool.general]
}

# --- Secrets from the managed services ------------------------------------------------------

resource "kubernetes_secret_v1" "database" {
  metadata {
    name      = "hacs-database"
    namespace = kubernetes_namespace_v1.hacs.metadata[0].name
  }
  type = "Opaque"
  data = { url = local.database_url }
}

resource "kubernetes_secret_v1" "redis" {
  metadata {
    name      = "hacs-redis"
    namespace = kubernetes_namespace_v1.hacs.metadata[0].name
  }
  type = "Opaque"
  data = { url = local.redis_url }
}

resource "kubernetes_secret_v1" "milvus" {
  count = var.zilliz_token == null ? 0 : 1
  metadata {
    name      = "hacs-milvus"
    namespace = kubernetes_namespace_v1.hacs.metadata[0].name
  }
  type = "Opaque"
  data = { token = var.zilliz_token }
}

# --- Backup identity --------------------------------------------------------------------------

resource "kubernetes_service_account_v1" "backup" {
  metadata {
    name      = var.backup_service_account
    namespace = kubernetes_namespace_v1.hacs.metadata[0].name
    annotations = {
      "iam.gke.io/gcp-service-account" = google_service_account.backup.email
    }
  }
  automount_service_account_token = false
}

# --- Storage: balanced persistent disks encrypted with the disk CMEK key, the default class ---

resource "kubernetes_storage_class_v1" "encrypted" {
  metadata {
    name = "hacs-encrypted"
    annotations = {
      "storageclass.kubernetes.io/is-default-class" = "true"
    }
  }
  storage_provisioner    = "pd.csi.storage.gke.io"
  reclaim_policy         = "Retain"
  volume_binding_mode    = "WaitForFirstConsumer"
  allow_volume_expansion = true
  parameters = {
    type                        = "pd-balanced"
    "disk-encryption-kms-key"   = google_kms_crypto_key.this["disk"].id
    "csi.storage.k8s.io/fstype" = "ext4"
  }
  depends_on = [google_container_node_pool.general]
}

# --- Milvus (official milvus-helm chart), unless an external Zilliz Cloud URI is given -------

resource "helm_release" "milvus" {
  count            = local.milvus_in_cluster ? 1 : 0
  name             = "milvus"
  repository       = "https://zilliztech.github.io/milvus-helm/"
  chart            = "milvus"
  version          = var.milvus_chart_version
  namespace        = "milvus"
  create_namespace = true
  timeout          = 1200

  values = [
    yamlencode({
      cluster = { enabled = true }
      service = { type = "ClusterIP" }
    }),
    yamlencode(var.milvus_values),
  ]

  depends_on = [kubernetes_storage_class_v1.encrypted]
}

# --- HACS -------------------------------------------------------------------------------------

resource "helm_release" "hacs" {
  count           = var.install_hacs ? 1 : 0
  name            = "hacs"
  chart           = "${path.module}/../../../charts/hacs"
  namespace       = kubernetes_namespace_v1.hacs.metadata[0].name
  atomic          = true
  cleanup_on_fail = true
  timeout         = 1200
  max_history     = 10

  values = [
    yamlencode({
      image = {
        repository = var.image_repository
        tag        = var.image_tag
        gpuTag     = var.image_gpu_tag
      }
      database = { existingSecret = kubernetes_secret_v1.database.metadata[0].name, key = "url" }
      redis    = { existingSecret = kubernetes_secret_v1.redis.metadata[0].name, key = "url" }
      milvus = {
        uri            = local.milvus_uri
        existingSecret = var.zilliz_token == null ? "" : "hacs-milvus"
        key            = "token"
      }
      config = var.hacs_config
      gpu    = { enabled = var.gpu_enabled }
      istio  = { enabled = var.istio_enabled }
      # The edge is reachable from the hospital network only: an internal passthrough LB.
      edge = {
        service = {
          type = "LoadBalancer"
          annotations = {
            "networking.gke.io/load-balancer-type" = "Internal"
          }
        }
      }
      # Egress from the pods to Cloud SQL and Memorystore (TLS on 6378) in the private
      # service range.
      networkPolicy = {
        storeCIDRs = concat(
          ["${google_compute_global_address.private_services.address}/${google_compute_global_address.private_services.prefix_length}"],
          var.extra_store_cidrs,
        )
        storePorts = [5432, 6378, 19530, 443]
      }
    }),
    yamlencode(var.hacs_values),
  ]

  depends_on = [
    kubernetes_secret_v1.database,
    kubernetes_secret_v1.redis,
    kubernetes_secret_v1.milvus,
    helm_release.milvus,
    google_container_node_pool.gpu,
  ]
}
