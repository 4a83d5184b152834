# HACS on AWS: a private EKS cluster with a GPU node group, RDS PostgreSQL, ElastiCache
# Redis, an S3 backup bucket, one customer-managed KMS key for all of it, and the HACS and
# Milvus Helm releases. terraform/README.md walks through what gets created and why.
#
# Files: network.tf (VPC), kms.tf, eks.tf, database.tf, redis.tf, backup.tf (bucket + IRSA),
# kubernetes.tf (namespace, Secrets, Helm releases), outputs.tf.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.name
  azs        = var.availability_zones

  cluster_name = "${var.name}-hacs"
  tags = merge(var.tags, {
    "app.kubernetes.io/part-of" = "hacs"
    "hacs/deployment"           = var.name
  })
}
