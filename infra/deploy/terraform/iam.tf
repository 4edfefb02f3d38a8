# One IAM role per Shoal role, assumed through IRSA by that role's Kubernetes ServiceAccount
# only (infra/deploy/k8s/base/serviceaccounts.yaml), each with only what its code calls:
#
#   worker        the task queue: receive, delete, change visibility (heartbeat, release),
#                 send (dead-letter moves a failed task's message to the DLQ), queue attributes
#   orchestrator  the task queue: send (the relay) and attributes (the queue-depth metric);
#                 the Step Functions driver: start/stop/describe executions of the state
#                 machine, answer task tokens, and receive from the control queue
#   api           dead letters (GraphQL deadLetters / redriveDeadLetters): receive and delete
#                 on the DLQ, send to the task queue, attributes of both
#   keda          KEDA's operator (ServiceAccount keda/keda-operator), for the aws-sqs-queue
#                 scaler: the task queue's attributes, nothing else
#   projector, migrate: no AWS access at all (no role).
locals {
  sqs_queue_read = ["sqs:GetQueueAttributes", "sqs:GetQueueUrl"]
}

data "aws_iam_policy_document" "irsa_trust" {
  for_each = toset(["api", "orchestrator", "worker"])

  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [var.eks_oidc_provider_arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${var.eks_oidc_issuer}:sub"
      values   = ["system:serviceaccount:${var.namespace}:shoal-${each.key}"]
    }
    condition {
      test     = "StringEquals"
      variable = "${var.eks_oidc_issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "irsa" {
  for_each           = data.aws_iam_policy_document.irsa_trust
  name               = "${var.name}-${each.key}"
  assume_role_policy = each.value.json
}

data "aws_iam_policy_document" "worker" {
  statement {
    sid = "TaskQueue"
    actions = concat(local.sqs_queue_read, [
      "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility",
    ])
    resources = [aws_sqs_queue.tasks.arn]
  }
  statement {
    sid       = "DeadLetters"
    actions   = concat(local.sqs_queue_read, ["sqs:SendMessage"])
    resources = [aws_sqs_queue.tasks_dlq.arn]
  }
  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [var.kms_key_arn]
    content {
      sid       = "EncryptedQueues"
      actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
      resources = [statement.value]
    }
  }
}

data "aws_iam_policy_document" "orchestrator" {
  statement {
    sid       = "RelayToTaskQueue"
    actions   = concat(local.sqs_queue_read, ["sqs:SendMessage"])
    resources = [aws_sqs_queue.tasks.arn]
  }
  statement {
    sid       = "QueueDepthMetric"
    actions   = local.sqs_queue_read
    resources = [aws_sqs_queue.tasks_dlq.arn]
  }
  statement {
    sid = "ControlQueue"
    actions = concat(local.sqs_queue_read, [
      "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility",
    ])
    resources = [aws_sqs_queue.control.arn]
  }
  statement {
    sid       = "Executions"
    actions   = ["states:StartExecution", "states:DescribeStateMachine"]
    resources = [aws_sfn_state_machine.job_lifecycle.arn]
  }
  statement {
    sid     = "ExecutionsOfTheMachine"
    actions = ["states:DescribeExecution", "states:StopExecution"]
    resources = [
      "arn:${data.aws_partition.current.partition}:states:${var.aws_region}:${data.aws_caller_identity.current.account_id}:execution:${aws_sfn_state_machine.job_lifecycle.name}:*",
    ]
  }
  # Task-token answers take no resource (AWS documents "*"): the token names the execution.
  statement {
    sid       = "TaskTokens"
    actions   = ["states:SendTaskSuccess", "states:SendTaskFailure", "states:SendTaskHeartbeat"]
    resources = ["*"]
  }
  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [var.kms_key_arn]
    content {
      sid       = "EncryptedQueues"
      actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
      resources = [statement.value]
    }
  }
}

data "aws_iam_policy_document" "api" {
  statement {
    sid       = "ReadAndRedriveDeadLetters"
    actions   = concat(local.sqs_queue_read, ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"])
    resources = [aws_sqs_queue.tasks_dlq.arn]
  }
  statement {
    sid       = "ResendToTaskQueue"
    actions   = concat(local.sqs_queue_read, ["sqs:SendMessage"])
    resources = [aws_sqs_queue.tasks.arn]
  }
  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [var.kms_key_arn]
    content {
      sid       = "EncryptedQueues"
      actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
      resources = [statement.value]
    }
  }
}

resource "aws_iam_role_policy" "irsa" {
  for_each = {
    api          = data.aws_iam_policy_document.api.json
    orchestrator = data.aws_iam_policy_document.orchestrator.json
    worker       = data.aws_iam_policy_document.worker.json
  }
  name   = "${var.name}-${each.key}"
  role   = aws_iam_role.irsa[each.key].id
  policy = each.value
}

# KEDA's operator reads the queue depth with its own identity (TriggerAuthentication
# podIdentity provider aws), so that it needs no access to the workers' role.
data "aws_iam_policy_document" "keda_trust" {
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [var.eks_oidc_provider_arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${var.eks_oidc_issuer}:sub"
      values   = ["system:serviceaccount:${var.keda_namespace}:keda-operator"]
    }
    condition {
      test     = "StringEquals"
      variable = "${var.eks_oidc_issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "keda" {
  name               = "${var.name}-keda"
  assume_role_policy = data.aws_iam_policy_document.keda_trust.json
}

data "aws_iam_policy_document" "keda" {
  statement {
    sid       = "QueueDepth"
    actions   = ["sqs:GetQueueAttributes"]
    resources = [aws_sqs_queue.tasks.arn]
  }
}

resource "aws_iam_role_policy" "keda" {
  name   = "${var.name}-keda"
  role   = aws_iam_role.keda.id
  policy = data.aws_iam_policy_document.keda.json
}
