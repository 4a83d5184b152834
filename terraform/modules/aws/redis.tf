# ElastiCache Redis (cluster mode off): a primary and replicas across AZs with automatic
# failover, TLS in transit (required), an AUTH token, encryption at rest with the HACS KMS
# key, reachable only from the EKS cluster's security group. HACS connects with
# rediss://:<token>@<primary endpoint>:6379/0 (the hacs-redis Secret); ElastiCache serves
# certificates from a public Amazon CA, so the image's CA bundle verifies them.

resource "random_password" "redis" {
  length  = 48
  special = false # ElastiCache AUTH tokens allow only some symbols; alphanumerics are URL-safe
}

resource "aws_elasticache_subnet_group" "this" {
  name        = "${var.name}-hacs"
  description = "HACS ${var.name}: private data subnets"
  subnet_ids  = aws_subnet.data[*].id
  tags        = local.tags
}

resource "aws_security_group" "redis" {
  name        = "${var.name}-hacs-redis"
  description = "Redis from the HACS EKS cluster only"
  vpc_id      = aws_vpc.this.id

  ingress {
    description     = "Redis (TLS) from EKS nodes and pods"
    protocol        = "tcp"
    from_port       = 6379
    to_port         = 6379
    security_groups = [aws_eks_cluster.this.vpc_config[0].cluster_security_group_id]
  }

  tags = merge(local.tags, { Name = "${var.name}-hacs-redis" })
}

resource "aws_elasticache_replication_group" "this" {
  replication_group_id = "${var.name}-hacs"
  description          = "HACS ${var.name}: change bus and sync sessions"
  engine               = "redis"
  engine_version       = var.redis_engine_version
  node_type            = var.redis_node_type
  port                 = 6379
  parameter_group_name = "default.redis${split(".", var.redis_engine_version)[0]}"

  num_cache_clusters         = 1 + var.redis_replicas
  automatic_failover_enabled = true
  multi_az_enabled           = true

  subnet_group_name  = aws_elasticache_subnet_group.this.name
  security_group_ids = [aws_security_group.redis.id]

  at_rest_encryption_enabled = true
  kms_key_id                 = aws_kms_key.hacs.arn
  transit_encryption_enabled = true
  transit_encryption_mode    = "required"
  auth_token                 = random_password.redis.result

  snapshot_retention_limit   = 7
  snapshot_window            = "01:00-02:00"
  maintenance_window         = "sun:04:30-sun:05:30"
  auto_minor_version_upgrade = true
  apply_immediately          = false

  tags = local.tags
}
