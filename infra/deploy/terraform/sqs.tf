# The task queue and its dead-letter queue, as `shoal sqs init` makes them: a message received
# max_receives times without being handled moves to the DLQ, which keeps it 14 days. Workers
# long-poll (20 s) and extend visibility with a heartbeat while a task runs.
resource "aws_sqs_queue" "tasks_dlq" {
  name                              = "${var.name}-dlq"
  message_retention_seconds         = 1209600
  sqs_managed_sse_enabled           = var.kms_key_arn == null ? true : null
  kms_master_key_id                 = var.kms_key_arn
  kms_data_key_reuse_period_seconds = var.kms_key_arn == null ? null : 3600
}

resource "aws_sqs_queue" "tasks" {
  name                              = var.name
  visibility_timeout_seconds        = var.visibility_timeout_seconds
  receive_wait_time_seconds         = 20
  message_retention_seconds         = 1209600
  sqs_managed_sse_enabled           = var.kms_key_arn == null ? true : null
  kms_master_key_id                 = var.kms_key_arn
  kms_data_key_reuse_period_seconds = var.kms_key_arn == null ? null : 3600

  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.tasks_dlq.arn
    maxReceiveCount     = var.max_receives
  })
}

# Only the task queue may use the DLQ as its dead-letter queue.
resource "aws_sqs_queue_redrive_allow_policy" "tasks_dlq" {
  queue_url = aws_sqs_queue.tasks_dlq.id
  redrive_allow_policy = jsonencode({
    redrivePermission = "byQueue"
    sourceQueueArns   = [aws_sqs_queue.tasks.arn]
  })
}
