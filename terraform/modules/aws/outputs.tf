# What the root module and the operators need: how to reach the cluster (the example
# configures the kubernetes and helm providers from these), where the stores are, and the
# backup bucket and role. No output carries a password.

output "cluster_name" {
  description = "EKS cluster name."
  value       = aws_eks_cluster.this.name
}

output "cluster_endpoint" {
  description = "Private HTTPS endpoint of the Kubernetes API."
  value       = aws_eks_cluster.this.endpoint
}

output "cluster_ca_certificate" {
  description = "Base64-encoded CA certificate of the Kubernetes API."
  value       = aws_eks_cluster.this.certificate_authority[0].data
}

output "kubeconfig_command" {
  description = "Command that writes a kubeconfig entry for the cluster."
  value       = "aws eks update-kubeconfig --region ${local.region} --name ${aws_eks_cluster.this.name}"
}

output "oidc_provider_arn" {
  description = "IAM OIDC provider of the cluster, for further IRSA roles."
  value       = aws_iam_openid_connect_provider.eks.arn
}

output "database_host" {
  description = "RDS PostgreSQL endpoint (private)."
  value       = aws_db_instance.this.address
}

output "database_port" {
  description = "RDS PostgreSQL port."
  value       = aws_db_instance.this.port
}

output "redis_host" {
  description = "ElastiCache primary endpoint (private, TLS)."
  value       = aws_elasticache_replication_group.this.primary_endpoint_address
}

output "redis_port" {
  description = "ElastiCache port (TLS)."
  value       = aws_elasticache_replication_group.this.port
}

output "backup_bucket" {
  description = "S3 bucket for database dumps and Milvus backups."
  value       = aws_s3_bucket.backups.bucket
}

output "backup_role_arn" {
  description = "IAM role the backup ServiceAccount assumes through IRSA."
  value       = aws_iam_role.backup.arn
}

output "backup_service_account" {
  description = "Namespace/name of the Kubernetes ServiceAccount allowed to use the backup bucket."
  value       = "${var.namespace}/${var.backup_service_account}"
}

output "kms_key_arn" {
  description = "Customer-managed KMS key encrypting the deployment's data at rest."
  value       = aws_kms_key.hacs.arn
}

output "vpc_id" {
  description = "VPC of the deployment (peer it or attach it to a transit gateway to reach the internal edge)."
  value       = aws_vpc.this.id
}

output "milvus_uri" {
  description = "Milvus endpoint HACS uses (in-cluster release or Zilliz Cloud)."
  value       = local.milvus_uri
}

output "namespace" {
  description = "Kubernetes namespace of the HACS release."
  value       = kubernetes_namespace_v1.hacs.metadata[0].name
}
