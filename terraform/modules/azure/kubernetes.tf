# Everything inside the cluster: the HACS namespace, the two Secrets built from the managed
# services (hacs-database, hacs-redis; hacs-milvus when a Zilliz token is given), the
# backup ServiceAccount federated with its managed identity, a default StorageClass whose
# disks use the Key Vault key, the NVIDIA device plugin, Milvus and HACS itself.
#
# Not created here, on purpose: hacs-signing-keys, hacs-operator-key and hacs-service-key.
# They are the platform's own credentials; create them with kubectl or External Secrets
# before install_hacs = true (terraform/README.md, "Secrets").

locals {
  database_url = format(
    "postgresql+asyncpg://%s:%s@%s:5432/%s?ssl=require",
    azurerm_postgresql_flexible_server.this.administrator_login,
    random_password.database.result,
    azurerm_postgresql_flexible_server.this.fqdn,
    azurerm_postgresql_flexible_server_database.hacs.name,
  )
  redis_url = format(
    "rediss://:%s@%s:%d/0",
    urlencode(azurerm_redis_cache.this.primary_access_key),
    azurerm_redis_cache.this.hostname,
    azurerm_redis_cache.this.ssl_port,
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
  depends_on = [azurerm_kubernetes_cluster_node_pool.apps]
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
      "azure.workload.identity/client-id" = azurerm_user_assigned_identity.backup.client_id
    }
  }
  automount_service_account_token = false
}

# --- Storage: zone-redundant Premium SSDs encrypted with the Key Vault key, the default ----

resource "kubernetes_storage_class_v1" "encrypted" {
  metadata {
    name = "hacs-encrypted"
    annotations = {
      "storageclass.kubernetes.io/is-default-class" = "true"
    }
  }
  storage_provisioner    = "disk.csi.azure.com"
  reclaim_policy         = "Retain"
  volume_binding_mode    = "WaitForFirstConsumer"
  allow_volume_expansion = true
  parameters = {
    skuName             = "Premium_ZRS"
    diskEncryptionSetID = azurerm_disk_encryption_set.this.id
  }
  depends_on = [azurerm_kubernetes_cluster_node_pool.apps]
}

# --- GPU: the device plugin advertises nvidia.com/gpu on the GPU nodes -----------------------

resource "helm_release" "nvidia_device_plugin" {
  count      = var.gpu_enabled ? 1 : 0
  name       = "nvidia-device-plugin"
  repository = "https://nvidia.github.io/k8s-device-plugin"
  chart      = "nvidia-device-plugin"
  version    = var.nvidia_device_plugin_version
  namespace  = "kube-system"

  values = [yamlencode({
    nodeSelector = { "nvidia.com/gpu.present" = "true" }
  })]

  depends_on = [azurerm_kubernetes_cluster_node_pool.gpu]
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
      # The edge is reachable from the hospital network only: an internal load balancer
      # in the node subnet.
      edge = {
        service = {
          type = "LoadBalancer"
          annotations = {
            "service.beta.kubernetes.io/azure-load-balancer-internal" = "true"
          }
        }
      }
      # Egress from the pods to the private endpoints of PostgreSQL and Redis (TLS on 6380).
      networkPolicy = {
        storeCIDRs = concat([var.endpoints_subnet_cidr], var.extra_store_cidrs)
        storePorts = [5432, 6380, 19530, 443]
      }
    }),
    yamlencode(var.hacs_values),
  ]

  depends_on = [
    kubernetes_secret_v1.database,
    kubernetes_secret_v1.redis,
    kubernetes_secret_v1.milvus,
    helm_release.milvus,
    helm_release.nvidia_device_plugin,
  ]
}
