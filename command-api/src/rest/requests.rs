//! The request bodies of the writes, for the OpenAPI document only: bodies are parsed by hand
//! ([`shoal_api::rest`]'s input conventions) to answer as the original did.

use serde_json::Value;
use utoipa::ToSchema;

/// A job to submit.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct SubmitJobRequest {
    /// Which handler runs the tasks. May be empty.
    job_type: String,
    /// How many tasks (1 to the server's limit; `total_tasks` is accepted too). A numeric
    /// string is accepted.
    #[schema(minimum = 1)]
    num_tasks: i64,
    /// A JSON object given to every task.
    #[schema(value_type = Option<Object>)]
    parameters: Option<Value>,
    /// Shoal: attempts per task before it is FAILED (default 3).
    #[schema(minimum = 1)]
    max_attempts: Option<i64>,
    /// Shoal: timeout of one attempt, in seconds (default 300).
    #[schema(minimum = 1)]
    timeout_seconds: Option<i64>,
    /// Shoal: most of the job's tasks running (admitted and not ended) at once, cluster-wide.
    #[schema(minimum = 1, maximum = 1000000)]
    max_concurrency: Option<i64>,
    /// Shoal: the parameter whose value is the job's concurrency key (the limits set on that
    /// key apply to the job). It must name a parameter whose value is a string, a number or
    /// a boolean; otherwise 422.
    #[schema(min_length = 1, max_length = 200)]
    concurrency_key: Option<String>,
    /// Shoal: the job's priority, -1000 to 1000 (default 0); higher runs first, and jobs of
    /// the same priority share the workers fairly.
    #[schema(minimum = -1000, maximum = 1000)]
    priority: Option<i64>,
}

/// What a worker reports on completion (`{}` is fine).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct CompleteTaskRequest {
    /// What the task produced.
    #[schema(value_type = Option<Object>)]
    result: Option<Value>,
    /// How long it ran, at most 30 days; measured from its start when absent.
    #[schema(minimum = 0, maximum = 2592000)]
    processing_time_seconds: Option<f64>,
}

/// What a worker reports on failure (the body is optional).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct FailTaskRequest {
    /// What went wrong.
    error_message: Option<String>,
}
