# The job lifecycle as a Step Functions state machine (one execution per job), for
# `shoal orchestrator` with the Step Functions driver. Steps that need Shoal's code send a
# message with a task token to the control queue; the orchestrator does the step and answers
# SendTaskSuccess / SendTaskFailure. The definition is the ASL in ../stepfunctions/, with the
# control queue's URL filled in.
resource "aws_sqs_queue" "control" {
  name                              = "${var.name}-control"
  visibility_timeout_seconds        = 60
  receive_wait_time_seconds         = 20
  message_retention_seconds         = 345600
  sqs_managed_sse_enabled           = var.kms_key_arn == null ? true : null
  kms_master_key_id                 = var.kms_key_arn
  kms_data_key_reuse_period_seconds = var.kms_key_arn == null ? null : 3600
}

resource "aws_cloudwatch_log_group" "state_machine" {
  #checkov:skip=CKV_AWS_338:Execution logs are for debugging a job's lifecycle; the event log in Postgres is the durable record. 90 days is enough.
  name              = "/aws/vendedlogs/states/${var.name}-job-lifecycle"
  retention_in_days = 90
  kms_key_id        = var.kms_key_arn
}

resource "aws_sfn_state_machine" "job_lifecycle" {
  #checkov:skip=CKV_AWS_285:Every state transition is logged (level ALL) without its data: a step's data holds its task token, which is enough to answer the step.
  name     = "${var.name}-job-lifecycle"
  role_arn = aws_iam_role.state_machine.arn
  type     = "STANDARD"

  definition = templatefile("${path.module}/../stepfunctions/job.asl.json", {
    control_queue_url = aws_sqs_queue.control.url
  })

  logging_configuration {
    log_destination        = "${aws_cloudwatch_log_group.state_machine.arn}:*"
    include_execution_data = false
    level                  = "ALL"
  }

  tracing_configuration {
    enabled = true
  }
}

# What the state machine itself may do: put callback messages on the control queue, write its
# logs and traces.
resource "aws_iam_role" "state_machine" {
  name = "${var.name}-state-machine"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "states.amazonaws.com" }
      Action    = "sts:AssumeRole"
      Condition = { StringEquals = { "aws:SourceAccount" = data.aws_caller_identity.current.account_id } }
    }]
  })
}

data "aws_iam_policy_document" "state_machine" {
  statement {
    sid       = "CallbacksToTheControlQueue"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.control.arn]
  }

  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [var.kms_key_arn]
    content {
      sid       = "EncryptedControlQueue"
      actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
      resources = [statement.value]
    }
  }

  # CloudWatch Logs delivery and X-Ray take no resource-level restrictions (AWS documents "*"
  # for these actions).
  statement {
    sid = "LogsAndTraces"
    actions = [
      "logs:CreateLogDelivery", "logs:GetLogDelivery", "logs:UpdateLogDelivery",
      "logs:DeleteLogDelivery", "logs:ListLogDeliveries", "logs:PutResourcePolicy",
      "logs:DescribeResourcePolicies", "logs:DescribeLogGroups",
      "xray:PutTraceSegments", "xray:PutTelemetryRecords", "xray:GetSamplingRules",
      "xray:GetSamplingTargets",
    ]
    resources = ["*"]
  }
}

resource "aws_iam_role_policy" "state_machine" {
  name   = "state-machine"
  role   = aws_iam_role.state_machine.id
  policy = data.aws_iam_policy_document.state_machine.json
}
