# The AWS side of a Shoal deployment on EKS: the task queue and its dead-letter queue, the Step
# Functions state machine and its control queue, an IAM role per Shoal role (IRSA), an ECR
# repository for the image, and (optionally) an RDS PostgreSQL instance. The EKS cluster itself
# is an input (its OIDC provider): docs/deploy.md creates one with eksctl.
terraform {
  required_version = ">= 1.6"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.80"
    }
  }
}

provider "aws" {
  region = var.aws_region

  default_tags {
    tags = merge({ "app.kubernetes.io/part-of" = "shoal" }, var.tags)
  }
}

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
