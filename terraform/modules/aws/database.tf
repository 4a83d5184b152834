# RDS PostgreSQL: Multi-AZ, in the data subnets, reachable only from the EKS cluster's
# security group on 5432, encrypted with the HACS KMS key, TLS enforced by the parameter
# group (rds.force_ssl), 35 days of point-in-time recovery, deletion protection.
#
# The master password comes from random_password and lives only in Terraform state and in
# the Kubernetes Secret hacs-database; keep the state in an encrypted, access-controlled
# backend (S3 + KMS + DynamoDB lock, or Terraform Cloud).

resource "random_password" "database" {
  length  = 40
  special = false # URL-safe: it is embedded in the SQLAlchemy URL
}

resource "aws_db_subnet_group" "this" {
  name        = "${var.name}-hacs"
  description = "HACS ${var.name}: private data subnets"
  subnet_ids  = aws_subnet.data[*].id
  tags        = local.tags
}

resource "aws_security_group" "database" {
  name        = "${var.name}-hacs-postgres"
  description = "PostgreSQL from the HACS EKS cluster only"
  vpc_id      = aws_vpc.this.id

  ingress {
    description     = "PostgreSQL from EKS nodes and pods"
    protocol        = "tcp"
    from_port       = 5432
    to_port         = 5432
    security_groups = [aws_eks_cluster.this.vpc_config[0].cluster_security_group_id]
  }

  tags = merge(local.tags, { Name = "${var.name}-hacs-postgres" })
}

resource "aws_db_parameter_group" "this" {
  name_prefix = "${var.name}-hacs-pg"
  family      = "postgres${split(".", var.postgres_engine_version)[0]}"
  description = "HACS ${var.name}: TLS only, statement and connection logging"

  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }
  parameter {
    name  = "ssl_min_protocol_version"
    value = "TLSv1.2"
  }
  # DDL statements and anything slower than a second go to the log (audit, tuning).
  parameter {
    name  = "log_statement"
    value = "ddl"
  }
  parameter {
    name  = "log_min_duration_statement"
    value = "1000"
  }
  parameter {
    name  = "log_connections"
    value = "1"
  }
  parameter {
    name  = "log_disconnections"
    value = "1"
  }

  tags = local.tags

  lifecycle {
    create_before_destroy = true
  }
}

# Enhanced monitoring (OS metrics every 60 s) publishes through this role.
resource "aws_iam_role" "rds_monitoring" {
  name = "${var.name}-hacs-rds-monitoring"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "monitoring.rds.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })
  tags = local.tags
}

resource "aws_iam_role_policy_attachment" "rds_monitoring" {
  role       = aws_iam_role.rds_monitoring.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
}

resource "aws_db_instance" "this" {
  identifier     = "${var.name}-hacs"
  engine         = "postgres"
  engine_version = var.postgres_engine_version
  instance_class = var.postgres_instance_class

  db_name  = "hacs"
  username = "hacs"
  password = random_password.database.result
  port     = 5432

  allocated_storage     = var.postgres_allocated_storage_gb
  max_allocated_storage = var.postgres_max_allocated_storage_gb
  storage_type          = "gp3"
  storage_encrypted     = true
  kms_key_id            = aws_kms_key.hacs.arn

  multi_az               = true
  db_subnet_group_name   = aws_db_subnet_group.this.name
  vpc_security_group_ids = [aws_security_group.database.id]
  publicly_accessible    = false
  parameter_group_name   = aws_db_parameter_group.this.name
  ca_cert_identifier     = "rds-ca-rsa2048-g1"

  # IAM authentication is available for operators' break-glass access; HACS itself uses
  # the password in hacs-database.
  iam_database_authentication_enabled = true

  backup_retention_period   = var.postgres_backup_retention_days
  backup_window             = "02:00-03:00"
  maintenance_window        = "sun:03:30-sun:04:30"
  copy_tags_to_snapshot     = true
  deletion_protection       = var.deletion_protection
  skip_final_snapshot       = false
  final_snapshot_identifier = "${var.name}-hacs-final"

  auto_minor_version_upgrade  = true
  allow_major_version_upgrade = false
  apply_immediately           = false

  performance_insights_enabled          = true
  performance_insights_kms_key_id       = aws_kms_key.hacs.arn
  performance_insights_retention_period = 7
  monitoring_interval                   = 60
  monitoring_role_arn                   = aws_iam_role.rds_monitoring.arn
  enabled_cloudwatch_logs_exports       = ["postgresql", "upgrade"]

  tags = local.tags
}
