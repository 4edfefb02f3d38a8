variable "aws_region" {
  description = "Region of every resource (and of the EKS cluster)."
  type        = string
}

variable "name" {
  description = "Prefix of every resource name: the queue is <name>, its DLQ <name>-dlq, and so on."
  type        = string
  default     = "shoal"
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}

# --- the EKS cluster (IRSA) ---

variable "eks_oidc_provider_arn" {
  description = "ARN of the EKS cluster's IAM OIDC provider (eksctl utils associate-iam-oidc-provider)."
  type        = string
}

variable "eks_oidc_issuer" {
  description = "The cluster's OIDC issuer without https:// (aws eks describe-cluster --query cluster.identity.oidc.issuer)."
  type        = string
}

variable "namespace" {
  description = "Kubernetes namespace Shoal runs in (the kustomize overlays use shoal)."
  type        = string
  default     = "shoal"
}

variable "keda_namespace" {
  description = "Namespace of KEDA's operator (its ServiceAccount keda-operator gets the queue-depth role)."
  type        = string
  default     = "keda"
}

# --- the task queue ---

variable "visibility_timeout_seconds" {
  description = "Default visibility timeout of the task queue; workers set their own per receive (SHOAL_VISIBILITY_TIMEOUT_SECONDS)."
  type        = number
  default     = 30
}

variable "max_receives" {
  description = "Receives of one message before SQS moves it to the DLQ (the redrive policy), as `shoal sqs init --max-receives`."
  type        = number
  default     = 5
}

variable "kms_key_arn" {
  description = "Customer-managed KMS key for the queues and the database; null uses AWS-managed keys (SQS-managed SSE, the default RDS key)."
  type        = string
  default     = null
}

# --- the image ---

variable "image_tag" {
  description = "Tag of the Shoal image the overlays deploy (pushed to the ECR repository made here)."
  type        = string
  default     = "0.1.0"
}

# --- the database ---

variable "create_database" {
  description = "Create an RDS PostgreSQL instance. false when you bring your own database (then create the shoal-secrets Secret with its URL)."
  type        = bool
  default     = true
}

variable "vpc_id" {
  description = "VPC of the EKS cluster (for the database's security group). Needed when create_database."
  type        = string
  default     = null
}

variable "database_subnet_ids" {
  description = "Private subnets for the database (at least two availability zones). Needed when create_database."
  type        = list(string)
  default     = []
}

variable "database_client_security_group_ids" {
  description = "Security groups allowed to reach the database on 5432: the EKS cluster's node or cluster security group."
  type        = list(string)
  default     = []
}

variable "database_instance_class" {
  description = "RDS instance class. See docs/deploy.md (sizing): connections, not CPU, are what many workers use up first."
  type        = string
  default     = "db.t4g.medium"
}

variable "database_allocated_storage_gb" {
  description = "Initial storage; it grows automatically up to 10x."
  type        = number
  default     = 50
}

variable "database_engine_version" {
  description = "PostgreSQL major version (Shoal is tested on 15)."
  type        = string
  default     = "15"
}

variable "database_multi_az" {
  description = "A standby in a second availability zone (failover in a minute or two)."
  type        = bool
  default     = true
}

variable "database_deletion_protection" {
  description = "Refuse to delete the database (set false before terraform destroy)."
  type        = bool
  default     = true
}
