output "queue_url" {
  description = "The task queue: SHOAL_QUEUE of every role, and the KEDA trigger's queueURL."
  value       = aws_sqs_queue.tasks.url
}

output "dead_letter_queue_url" {
  description = "The DLQ (Shoal finds it from the queue's redrive policy; for the AWS console)."
  value       = aws_sqs_queue.tasks_dlq.url
}

output "control_queue_url" {
  description = "The Step Functions driver's control queue."
  value       = aws_sqs_queue.control.url
}

output "state_machine_arn" {
  description = "The job lifecycle state machine."
  value       = aws_sfn_state_machine.job_lifecycle.arn
}

output "image_repository" {
  description = "docker push here (docs/deploy.md)."
  value       = aws_ecr_repository.shoal.repository_url
}

output "role_arns" {
  description = "IRSA role of each Shoal role (ServiceAccount annotation eks.amazonaws.com/role-arn)."
  value       = { for role, r in aws_iam_role.irsa : role => r.arn }
}

output "keda_role_arn" {
  description = "IRSA role for KEDA's operator (helm value serviceAccount.operator.annotations, docs/deploy.md)."
  value       = aws_iam_role.keda.arn
}

output "database_endpoint" {
  description = "host:port of the RDS instance (null without create_database)."
  value       = var.create_database ? aws_db_instance.shoal[0].endpoint : null
}

output "database_password_secret_arn" {
  description = "Secrets Manager secret holding the RDS master user's password (JSON: username, password)."
  value       = var.create_database ? aws_db_instance.shoal[0].master_user_secret[0].secret_arn : null
}

# The kustomize overlays' input, in one file (infra/deploy/k8s/components/aws/terraform.env):
#   terraform output -raw kustomize_env > ../k8s/components/aws/terraform.env
output "kustomize_env" {
  description = "terraform.env for the aws and aws-hpa overlays."
  value       = <<-EOT
    SHOAL_IMAGE=${aws_ecr_repository.shoal.repository_url}:${var.image_tag}
    SHOAL_QUEUE=${aws_sqs_queue.tasks.url}
    AWS_REGION=${var.aws_region}
    API_ROLE_ARN=${aws_iam_role.irsa["api"].arn}
    ORCHESTRATOR_ROLE_ARN=${aws_iam_role.irsa["orchestrator"].arn}
    WORKER_ROLE_ARN=${aws_iam_role.irsa["worker"].arn}
    SHOAL_SFN_STATE_MACHINE=${aws_sfn_state_machine.job_lifecycle.arn}
    SHOAL_SFN_CONTROL_QUEUE=${aws_sqs_queue.control.url}
  EOT
}
