# PostgreSQL on RDS for the event log, the read tables and (on the SQL queue) the queue.
# Optional: create_database = false to bring your own. The master password is generated and
# kept by RDS in Secrets Manager; it never appears in Terraform's state or outputs
# (docs/deploy.md fetches it to create the shoal-secrets Secret).
resource "aws_db_subnet_group" "shoal" {
  count      = var.create_database ? 1 : 0
  name       = var.name
  subnet_ids = var.database_subnet_ids
}

resource "aws_security_group" "database" {
  count       = var.create_database ? 1 : 0
  name        = "${var.name}-database"
  description = "PostgreSQL for Shoal, from the EKS cluster only"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "database_from_cluster" {
  for_each                     = var.create_database ? toset(var.database_client_security_group_ids) : toset([])
  security_group_id            = aws_security_group.database[0].id
  description                  = "PostgreSQL from the EKS cluster"
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  referenced_security_group_id = each.value
}

# Shoal's settings for Postgres: connections for many worker pods (docs/deploy.md, sizing).
resource "aws_db_parameter_group" "shoal" {
  count  = var.create_database ? 1 : 0
  name   = "${var.name}-pg${var.database_engine_version}"
  family = "postgres${var.database_engine_version}"

  parameter {
    name         = "max_connections"
    value        = "500"
    apply_method = "pending-reboot"
  }
  parameter {
    name  = "log_min_duration_statement"
    value = "1000"
  }
  parameter {
    name  = "log_statement"
    value = "ddl"
  }
  # Shoal's Postgres driver is built without TLS today (sqlx without a TLS feature), so the
  # database must accept plain connections; they stay inside the VPC, from the cluster's
  # security group only. Set 1 once the binary speaks TLS (docs/deploy.md).
  parameter {
    name  = "rds.force_ssl"
    value = "0"
  }
}

resource "aws_db_instance" "shoal" {
  #checkov:skip=CKV_AWS_161:Shoal connects with a password URL (sqlx); IAM database authentication would need token refresh in the pool.
  #checkov:skip=CKV2_AWS_69:Shoal's Postgres driver is built without TLS today (rds.force_ssl = 0 in the parameter group); the database is reachable only from the cluster's security group inside the VPC. Turn it on with TLS in the binary.
  #checkov:skip=CKV2_AWS_30:Query logging is on for slow statements and DDL (parameter group); logging every statement at Shoal's commit rate would cost more than it shows.
  count                 = var.create_database ? 1 : 0
  identifier            = var.name
  engine                = "postgres"
  engine_version        = var.database_engine_version
  instance_class        = var.database_instance_class
  allocated_storage     = var.database_allocated_storage_gb
  max_allocated_storage = var.database_allocated_storage_gb * 10
  storage_type          = "gp3"
  storage_encrypted     = true
  kms_key_id            = var.kms_key_arn

  db_name                     = "shoal"
  username                    = "shoal"
  manage_master_user_password = true

  db_subnet_group_name   = aws_db_subnet_group.shoal[0].name
  vpc_security_group_ids = [aws_security_group.database[0].id]
  parameter_group_name   = aws_db_parameter_group.shoal[0].name
  publicly_accessible    = false
  multi_az               = var.database_multi_az

  backup_retention_period         = 14
  copy_tags_to_snapshot           = true
  deletion_protection             = var.database_deletion_protection
  skip_final_snapshot             = false
  final_snapshot_identifier       = "${var.name}-final"
  auto_minor_version_upgrade      = true
  enabled_cloudwatch_logs_exports = ["postgresql", "upgrade"]

  performance_insights_enabled    = true
  performance_insights_kms_key_id = var.kms_key_arn
  monitoring_interval             = 60
  monitoring_role_arn             = aws_iam_role.rds_monitoring[0].arn
}

resource "aws_iam_role" "rds_monitoring" {
  count = var.create_database ? 1 : 0
  name  = "${var.name}-rds-monitoring"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "monitoring.rds.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })
}

resource "aws_iam_role_policy_attachment" "rds_monitoring" {
  count      = var.create_database ? 1 : 0
  role       = aws_iam_role.rds_monitoring[0].name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
}
