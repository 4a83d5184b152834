# Everything inside the cluster: the HACS namespace, the two Secrets built from the managed
# services (hacs-database, hacs-redis; hacs-milvus when a Zilliz token is given), the
# backup ServiceAccount bound to its IRSA role, an encrypted default StorageClass, the
# NVIDIA device plugin, Milvus and HACS itself.
#
# Not created here, on purpose: hacs-signing-keys, hacs-operator-key and hacs-service-key.
# They are the platform's own credentials; create them with kubectl or External Secrets
# before install_hacs = true (terraform/README.md, "Secrets").

locals {
  database_url = format(
    "postgresql+asyncpg://%s:%s@%s:%d/%s?ssl=require",
    aws_db_instance.this.username,
    random_password.database.result,
    aws_db_instance.this.address,
    aws_db_instance.this.port,
    aws_db_instance.this.db_name,
  )
  redis_url = format(
    "rediss://:%s@%s:%d/0",
    random_password.redis.result,
    aws_elasticache_replication_group.this.primary_endpoint_address,
    aws_elasticache_replication_group.this.port,
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
  depends_on = [aws_eks_node_group.general]
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
      "eks.amazonaws.com/role-arn" = aws_iam_role.backup.arn
    }
  }
  automount_service_account_token = false
}

# --- Storage: encrypted gp3 volumes with the HACS key, the cluster default --------------------

resource "kubernetes_storage_class_v1" "encrypted" {
  metadata {
    name = "hacs-encrypted"
    annotations = {
      "storageclass.kubernetes.io/is-default-class" = "true"
    }
  }
  storage_provisioner    = "ebs.csi.aws.com"
  reclaim_policy         = "Retain"
  volume_binding_mode    = "WaitForFirstConsumer"
  allow_volume_expansion = true
  parameters = {
    type      = "gp3"
    encrypted = "true"
    kmsKeyId  = aws_kms_key.hacs.arn
  }
  depends_on = [aws_eks_addon.ebs_csi]
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

  depends_on = [aws_eks_node_group.gpu]
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
      # The edge is reachable from the hospital network only: an internal NLB.
      edge = {
        service = {
          type = "LoadBalancer"
          annotations = {
            "service.beta.kubernetes.io/aws-load-balancer-internal" = "true"
            "service.beta.kubernetes.io/aws-load-balancer-scheme"   = "internal"
            "service.beta.kubernetes.io/aws-load-balancer-type"     = "nlb"
          }
        }
      }
      # Egress from the pods to RDS and ElastiCache in the data subnets.
      networkPolicy = { storeCIDRs = concat(aws_subnet.data[*].cidr_block, var.extra_store_cidrs) }
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
