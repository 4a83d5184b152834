# One customer-managed KMS key encrypts everything HACS stores at rest: Kubernetes Secrets
# in etcd, node and Milvus volumes (EBS), RDS storage and Performance Insights, ElastiCache,
# the backup bucket and the CloudWatch log groups. Rotated yearly by KMS.
#
# Key policy: the account administers the key through IAM (the usual root statement, so
# the roles below need IAM permissions to use it); CloudWatch Logs may use it only for
# this account's log groups. The services that encrypt on a role's behalf (EKS, RDS,
# ElastiCache, S3, the EBS CSI driver) use it through grants made by those roles.
# Node root volumes are encrypted with the AWS-managed EBS key instead: they hold images
# and scratch space only, and a CMK there needs the Auto Scaling service-linked role in
# the key policy, which does not exist in every account.

resource "aws_kms_key" "hacs" {
  description             = "HACS ${var.name}: data at rest (EKS secrets, EBS, RDS, ElastiCache, S3, logs)"
  enable_key_rotation     = true
  is_enabled              = true
  deletion_window_in_days = 30

  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "AccountAdministersThroughIam"
        Effect    = "Allow"
        Principal = { AWS = "arn:${local.partition}:iam::${local.account_id}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
      {
        Sid       = "CloudWatchLogsForThisAccount"
        Effect    = "Allow"
        Principal = { Service = "logs.${local.region}.amazonaws.com" }
        Action = [
          "kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*",
        ]
        Resource = "*"
        Condition = {
          ArnLike = {
            "kms:EncryptionContext:aws:logs:arn" = "arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:*"
          }
        }
      },
    ]
  })

  tags = local.tags
}

resource "aws_kms_alias" "hacs" {
  name          = "alias/${var.name}-hacs"
  target_key_id = aws_kms_key.hacs.key_id
}
