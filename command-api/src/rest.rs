//! The original system's REST API, write side: `POST /api/v1/jobs` and the task transitions
//! its external workers call (`/api/v1/tasks/{id}/running|complete|failed`), on top of
//! [`CommandService`], so a REST write appends exactly what the GraphQL mutation or a Shoal
//! worker appends.
//!
//! It also holds the REST conventions both REST halves share (query-api serves the reads):
//! errors as `{"detail": "<message>"}`, validation errors as HTTP 422 with FastAPI's shape
//! (`{"detail": [{"type", "loc", "msg", "input", "ctx"?}]}`), JSON bodies parsed leniently
//! (any content type, unknown fields ignored), the JSON objects `Job` and `Task`, and
//! datetimes as ISO-8601 UTC with `Z` and microseconds. See `docs/rest-api.md`.

use std::collections::HashMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value, json};
use shoal_domain::{Rejection, Split, TaskId};
use utoipa::{OpenApi, ToSchema};

use crate::commands::{
    CommandError, CommandService, JobSnapshot, SubmitJobInput, TaskSnapshot, count,
};

/// Header carrying a client's idempotency key for `POST /api/v1/jobs`.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

// ---------------------------------------------------------------------------------------------
// Conventions: errors

/// One entry of a 422 validation error, in FastAPI's (pydantic's) shape.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct FieldError {
    /// What is wrong, machine-readable: `missing`, `int_parsing`, `greater_than_equal`,
    /// `json_invalid`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// Where: `["body", "num_tasks"]`, `["query", "page"]`, `["body", 12]` (a JSON syntax error
    /// at that character).
    #[schema(value_type = Vec<Object>)]
    pub loc: Vec<Value>,
    /// What is wrong, for people.
    pub msg: String,
    /// The offending input (the whole body for a missing field).
    #[schema(value_type = Object)]
    pub input: Value,
    /// The bound that was broken (`{"ge": 1}`, ...), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub ctx: Option<Box<Value>>,
}

impl FieldError {
    /// An entry at `loc`.
    pub fn new(kind: &str, loc: Vec<Value>, msg: impl Into<String>, input: Value) -> Self {
        FieldError {
            kind: kind.to_owned(),
            loc,
            msg: msg.into(),
            input,
            ctx: None,
        }
    }

    /// With a `ctx` object.
    pub fn with_ctx(mut self, ctx: Value) -> Self {
        self.ctx = Some(Box::new(ctx));
        self
    }
}

/// `["body", field]`.
pub fn body_loc(field: &str) -> Vec<Value> {
    vec![json!("body"), json!(field)]
}

/// `["query", name]`.
pub fn query_loc(name: &str) -> Vec<Value> {
    vec![json!("query"), json!(name)]
}

/// An error body: `{"detail": "<message>"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Detail {
    /// What went wrong.
    pub detail: String,
}

/// A validation error body: `{"detail": [...]}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ValidationDetail {
    /// Every problem found.
    pub detail: Vec<FieldError>,
}

/// Everything a REST handler answers instead of its success. Each becomes the original's body;
/// internal details are logged here, once, and never sent.
#[derive(Debug)]
pub enum ApiError {
    /// 404 `{"detail": message}`.
    NotFound(String),
    /// 409 `{"detail": message}`: the command does not apply in the current state.
    Conflict(String),
    /// 422 `{"detail": [...]}`.
    Validation(Vec<FieldError>),
    /// 503 with the body given (a health check that failed).
    Unavailable(Value),
    /// 500 `{"detail": "Internal server error"}`; the message is logged, not sent.
    Internal(String),
}

impl ApiError {
    /// A single validation problem.
    pub fn invalid(error: FieldError) -> Self {
        ApiError::Validation(vec![error])
    }

    /// A command error as the REST API answers it. `count_field` is the REST name of the
    /// domain's `total_tasks` (`num_tasks` unless the client sent `total_tasks`).
    pub fn from_command(error: CommandError, body: &Value, count_field: &str) -> Self {
        let field = error.field().map(|field| match field {
            "total_tasks" => count_field.to_owned(),
            other => other.to_owned(),
        });
        let input = |field: &str| body.get(field).cloned().unwrap_or(Value::Null);
        match error {
            CommandError::NotFound(message) => ApiError::NotFound(message),
            CommandError::Conflict => ApiError::Conflict(error.to_string()),
            CommandError::Infrastructure(source) => ApiError::Internal(source.to_string()),
            CommandError::Invalid { message, .. } => {
                let field = field.unwrap_or_default();
                ApiError::invalid(FieldError::new(
                    "value_error",
                    body_loc(&field),
                    message,
                    input(&field),
                ))
            }
            CommandError::Rejected(rejection) => {
                let field = field.unwrap_or_default();
                match rejection.code() {
                    shoal_domain::rejection::code::INVALID_INPUT
                    | shoal_domain::rejection::code::LIMIT_EXCEEDED => {
                        ApiError::invalid(rejection_entry(&rejection, &field, input(&field)))
                    }
                    shoal_domain::rejection::code::NOT_FOUND => {
                        ApiError::NotFound(rejection.to_string())
                    }
                    _ => ApiError::Conflict(capitalize(&rejection.to_string())),
                }
            }
        }
    }
}

fn rejection_entry(rejection: &Rejection, field: &str, input: Value) -> FieldError {
    match rejection {
        Rejection::JobTypeTooLong { max, .. } => FieldError::new(
            "string_too_long",
            body_loc(field),
            format!("String should have at most {max} characters"),
            input,
        )
        .with_ctx(json!({ "max_length": max })),
        other => FieldError::new("value_error", body_loc(field), other.to_string(), input),
    }
}

fn capitalize(message: &str) -> String {
    let mut chars = message.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::NotFound(detail) => {
                (StatusCode::NOT_FOUND, axum::Json(Detail { detail })).into_response()
            }
            ApiError::Conflict(detail) => {
                (StatusCode::CONFLICT, axum::Json(Detail { detail })).into_response()
            }
            ApiError::Validation(detail) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                axum::Json(ValidationDetail { detail }),
            )
                .into_response(),
            ApiError::Unavailable(body) => {
                (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
            }
            ApiError::Internal(message) => {
                tracing::error!(error = %message, "REST request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    axum::Json(Detail {
                        detail: "Internal server error".to_owned(),
                    }),
                )
                    .into_response()
            }
        }
    }
}

/// The answer to a known path with a method it does not take: 405
/// `{"detail":"Method Not Allowed"}` (install with `Router::method_not_allowed_fallback`).
pub async fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        axum::Json(Detail {
            detail: "Method Not Allowed".to_owned(),
        }),
    )
        .into_response()
}

/// The answer to an unknown path under `/api`: 404 `{"detail":"Not Found"}`.
pub async fn not_found() -> Response {
    ApiError::NotFound("Not Found".to_owned()).into_response()
}

// ---------------------------------------------------------------------------------------------
// Conventions: input

/// Parses a request body as JSON, whatever its content type. `Ok(None)` for an empty body
/// (or one of only whitespace); a syntax error is 422 `json_invalid` at its character.
pub fn parse_body(bytes: &[u8]) -> Result<Option<Value>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(bytes).map(Some).map_err(|error| {
        // Python's position: the offending character, or the end for a truncated document.
        let position = if error.is_eof() {
            String::from_utf8_lossy(bytes).chars().count()
        } else {
            char_position(bytes, error.line(), error.column())
        };
        ApiError::invalid(
            FieldError::new(
                "json_invalid",
                vec![json!("body"), json!(position)],
                "JSON decode error",
                json!({}),
            )
            .with_ctx(json!({ "error": error.to_string() })),
        )
    })
}

/// The 0-based character offset of serde_json's 1-based line and column.
fn char_position(bytes: &[u8], line: usize, column: usize) -> usize {
    let text = String::from_utf8_lossy(bytes);
    let before: usize = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(|l| l.chars().count())
        .sum();
    before + column.saturating_sub(1)
}

/// A body that must be a JSON object: `missing` when absent, `model_attributes_type` when it
/// is something else.
pub fn object_body(body: Option<Value>) -> Result<Map<String, Value>, ApiError> {
    match body {
        None | Some(Value::Null) => Err(ApiError::invalid(FieldError::new(
            "missing",
            vec![json!("body")],
            "Field required",
            Value::Null,
        ))),
        Some(Value::Object(map)) => Ok(map),
        Some(other) => Err(ApiError::invalid(FieldError::new(
            "model_attributes_type",
            vec![json!("body")],
            "Input should be a valid dictionary or object to extract fields from",
            other,
        ))),
    }
}

/// An integer the way the original accepted it: a JSON integer, a float without a
/// fractional part, or a string holding an integer; then checked against `ge..=le`.
pub fn parse_int(
    value: &Value,
    loc: Vec<Value>,
    ge: i64,
    le: Option<i64>,
) -> Result<i64, FieldError> {
    let parsed = match value {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(i)
            } else if n.as_u64().is_some() {
                Ok(i64::MAX)
            } else {
                match n.as_f64() {
                    Some(f) if f.fract() == 0.0 && f.is_finite() => Ok(f as i64),
                    _ => Err(FieldError::new(
                        "int_from_float",
                        loc.clone(),
                        "Input should be a valid integer, got a number with a fractional part",
                        value.clone(),
                    )),
                }
            }
        }
        Value::String(s) => s.trim().parse::<i64>().map_err(|_| {
            FieldError::new(
                "int_parsing",
                loc.clone(),
                "Input should be a valid integer, unable to parse string as an integer",
                value.clone(),
            )
        }),
        _ => Err(FieldError::new(
            "int_type",
            loc.clone(),
            "Input should be a valid integer",
            value.clone(),
        )),
    }?;
    if parsed < ge {
        return Err(FieldError::new(
            "greater_than_equal",
            loc,
            format!("Input should be greater than or equal to {ge}"),
            value.clone(),
        )
        .with_ctx(json!({ "ge": ge })));
    }
    if let Some(le) = le
        && parsed > le
    {
        return Err(FieldError::new(
            "less_than_equal",
            loc,
            format!("Input should be less than or equal to {le}"),
            value.clone(),
        )
        .with_ctx(json!({ "le": le })));
    }
    Ok(parsed)
}

/// A query parameter as an integer in `ge..=le`, `default` when absent.
pub fn query_int(
    params: &HashMap<String, String>,
    name: &str,
    default: i64,
    ge: i64,
    le: Option<i64>,
) -> Result<i64, FieldError> {
    match params.get(name) {
        None => Ok(default),
        Some(raw) => parse_int(&Value::String(raw.clone()), query_loc(name), ge, le),
    }
}

/// A float or null (a numeric string is accepted, as the original did).
fn parse_optional_float(value: &Value, loc: Vec<Value>) -> Result<Option<f64>, FieldError> {
    let number = match value {
        Value::Null => return Ok(None),
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.trim().parse::<f64>() {
            Ok(f) => Some(f),
            Err(_) => {
                return Err(FieldError::new(
                    "float_parsing",
                    loc,
                    "Input should be a valid number, unable to parse string as a number",
                    value.clone(),
                ));
            }
        },
        _ => None,
    };
    match number {
        Some(f) if f.is_finite() && f >= 0.0 => Ok(Some(f)),
        Some(f) if f.is_finite() => Err(FieldError::new(
            "greater_than_equal",
            loc,
            "Input should be greater than or equal to 0",
            value.clone(),
        )
        .with_ctx(json!({ "ge": 0 }))),
        Some(_) => Err(FieldError::new(
            "finite_number",
            loc,
            "Input should be a finite number",
            value.clone(),
        )),
        None => Err(FieldError::new(
            "float_type",
            loc,
            "Input should be a valid number",
            value.clone(),
        )),
    }
}

/// A JSON object or null.
fn parse_optional_object(value: &Value, loc: Vec<Value>) -> Result<Option<Value>, FieldError> {
    match value {
        Value::Null => Ok(None),
        Value::Object(_) => Ok(Some(value.clone())),
        _ => Err(FieldError::new(
            "dict_type",
            loc,
            "Input should be a valid dictionary",
            value.clone(),
        )),
    }
}

/// A string or null.
fn parse_optional_string(value: &Value, loc: Vec<Value>) -> Result<Option<String>, FieldError> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        _ => Err(FieldError::new(
            "string_type",
            loc,
            "Input should be a valid string",
            value.clone(),
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Conventions: output

/// A time as the REST API writes it: ISO-8601, UTC, `Z`, microseconds
/// (`2025-11-27T10:01:02.123456Z`).
pub fn iso(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// A job's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[schema(as = JobStatus)]
pub enum RestJobStatus {
    Pending,
    CreatingTasks,
    Enqueued,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl From<shoal_domain::JobStatus> for RestJobStatus {
    fn from(status: shoal_domain::JobStatus) -> Self {
        use shoal_domain::JobStatus as S;
        match status {
            S::Pending => Self::Pending,
            S::CreatingTasks => Self::CreatingTasks,
            S::Enqueued => Self::Enqueued,
            S::Running => Self::Running,
            S::Completed => Self::Completed,
            S::Failed => Self::Failed,
            S::Cancelled => Self::Cancelled,
        }
    }
}

/// A task's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[schema(as = TaskStatus)]
pub enum RestTaskStatus {
    Pending,
    Enqueued,
    Running,
    Completed,
    Failed,
    Retrying,
}

impl From<shoal_domain::TaskStatus> for RestTaskStatus {
    fn from(status: shoal_domain::TaskStatus) -> Self {
        use shoal_domain::TaskStatus as S;
        match status {
            S::Pending => Self::Pending,
            S::Enqueued => Self::Enqueued,
            S::Running => Self::Running,
            S::Completed => Self::Completed,
            S::Failed => Self::Failed,
            S::Retrying => Self::Retrying,
        }
    }
}

/// A job, as the original's REST API showed it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Job {
    /// The job's id (a UUID).
    pub id: String,
    /// Which handler runs its tasks.
    pub job_type: String,
    /// Its status (RUNNING as soon as a task has started).
    pub status: RestJobStatus,
    /// How many tasks it has.
    pub total_tasks: u32,
    /// How many of them COMPLETED.
    pub completed_tasks: u32,
    /// How many of them FAILED (for good).
    pub failed_tasks: u32,
    /// The parameters every task receives.
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Value>,
    /// When it was submitted.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// When it, or one of its tasks, last changed.
    #[schema(format = DateTime)]
    pub updated_at: Option<String>,
    /// When its first task started.
    #[schema(format = DateTime)]
    pub started_at: Option<String>,
    /// When it COMPLETED, FAILED or was CANCELLED.
    #[schema(format = DateTime)]
    pub completed_at: Option<String>,
    /// Why it failed, or was cancelled.
    pub error_message: Option<String>,
}

impl Job {
    /// A job as its own stream tells it (the answer to a submission: no task has run yet).
    pub fn from_snapshot(job: &JobSnapshot) -> Self {
        Job {
            id: job.job_id.to_string(),
            job_type: job.job_type.clone(),
            status: job.status.into(),
            total_tasks: job.total_tasks,
            completed_tasks: 0,
            failed_tasks: 0,
            parameters: Some(Value::Object(job.parameters.clone())),
            created_at: iso(job.submitted_at),
            updated_at: Some(iso(job.updated_at)),
            started_at: None,
            completed_at: job.ended_at.map(iso),
            error_message: job.cancel_reason.clone(),
        }
    }
}

/// A task, as the original's REST API showed it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Task {
    /// The task's id (a UUID).
    pub id: String,
    /// Its job's id.
    pub job_id: String,
    /// Its status.
    pub status: RestTaskStatus,
    /// Its index in the job, from 0.
    pub task_index: u32,
    /// Attempts after the first so far.
    pub retry_count: u32,
    /// Attempts after the first that its budget allows.
    pub max_retries: u32,
    /// The task's input.
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Value>,
    /// What the handler returned.
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    /// The latest failure's error.
    pub error_message: Option<String>,
    /// When it was created (enqueued).
    #[schema(format = DateTime)]
    pub created_at: String,
    /// When it last changed.
    #[schema(format = DateTime)]
    pub updated_at: Option<String>,
    /// When its latest attempt started.
    #[schema(format = DateTime)]
    pub started_at: Option<String>,
    /// When it COMPLETED or FAILED for good.
    #[schema(format = DateTime)]
    pub completed_at: Option<String>,
    /// How long the completing attempt ran, in seconds (millisecond precision).
    pub processing_time_seconds: Option<f64>,
}

impl Task {
    /// A task as its own stream tells it.
    pub fn from_snapshot(task: &TaskSnapshot) -> Self {
        Task {
            id: task.task_id.to_string(),
            job_id: task.job_id.to_string(),
            status: task.status.into(),
            task_index: task.index,
            retry_count: task.attempt.saturating_sub(1),
            max_retries: task.max_attempts.saturating_sub(1),
            parameters: Some(task.parameters.clone()),
            result: task.result.clone(),
            error_message: task.error_message.clone(),
            created_at: iso(task.created_at),
            updated_at: Some(iso(task.updated_at)),
            started_at: task.started_at.map(iso),
            completed_at: task.completed_at.map(iso),
            processing_time_seconds: task.duration_ms.map(|ms| ms as f64 / 1000.0),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Requests (for the OpenAPI document; bodies are parsed by hand to answer as the original did)

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
}

/// What a worker reports on completion (`{}` is fine).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct CompleteTaskRequest {
    /// What the task produced.
    #[schema(value_type = Option<Object>)]
    result: Option<Value>,
    /// How long it ran; measured from its start when absent.
    #[schema(minimum = 0)]
    processing_time_seconds: Option<f64>,
}

/// What a worker reports on failure (the body is optional).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct FailTaskRequest {
    /// What went wrong.
    error_message: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Handlers

/// `POST /api/v1/jobs` and the task transitions, on `service`. Mount it with the reads
/// (query-api's `rest::api`), which also installs the 405 answer.
pub fn router(service: CommandService) -> Router {
    Router::new()
        .route("/api/v1/jobs", post(submit_job))
        .route("/api/v1/tasks/{task_id}/running", post(task_running))
        .route("/api/v1/tasks/{task_id}/complete", post(task_complete))
        .route("/api/v1/tasks/{task_id}/failed", post(task_failed))
        .with_state(service)
}

/// The OpenAPI description of the write endpoints (query-api merges it with the reads).
#[derive(Debug, OpenApi)]
#[openapi(
    paths(submit_job, task_running, task_complete, task_failed),
    components(schemas(
        Job, Task, RestJobStatus, RestTaskStatus, Detail, ValidationDetail, FieldError,
        SubmitJobRequest, CompleteTaskRequest, FailTaskRequest
    )),
    tags(
        (name = "jobs", description = "Submit and read jobs"),
        (name = "tasks", description = "Read tasks; task transitions for external workers"),
    )
)]
pub struct WriteApiDoc;

/// Submits a job. It is accepted at once, whatever its size: the job is returned as its event
/// stream has it (`PENDING`); tasks are created and enqueued right after (`ENQUEUED`, then
/// `RUNNING`).
#[utoipa::path(
    post,
    path = "/api/v1/jobs",
    tag = "jobs",
    request_body = SubmitJobRequest,
    params(("Idempotency-Key" = Option<String>, Header,
        description = "Submitting again with the same key returns the first job")),
    responses(
        (status = 201, description = "Accepted", body = Job),
        (status = 422, description = "Invalid input", body = ValidationDetail),
        (status = 500, description = "Internal error", body = Detail),
    )
)]
pub async fn submit_job(
    State(service): State<CommandService>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body = object_body(parse_body(&body)?)?;
    let whole = Value::Object(body.clone());
    let mut errors = Vec::new();
    let missing =
        |field: &str| FieldError::new("missing", body_loc(field), "Field required", whole.clone());

    let job_type = match body.get("job_type") {
        None => {
            errors.push(missing("job_type"));
            None
        }
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            errors.push(FieldError::new(
                "string_type",
                body_loc("job_type"),
                "Input should be a valid string",
                other.clone(),
            ));
            None
        }
    };

    let max_tasks = i64::from(service.limits().max_tasks_per_job);
    let count_field = if body.contains_key("num_tasks") || !body.contains_key("total_tasks") {
        "num_tasks"
    } else {
        "total_tasks"
    };
    let mut total_tasks = None;
    match body.get(count_field) {
        None => errors.push(missing("num_tasks")),
        Some(value) => match parse_int(value, body_loc(count_field), 1, Some(max_tasks)) {
            Ok(n) => total_tasks = Some(n),
            Err(e) => errors.push(e),
        },
    }
    if count_field == "num_tasks"
        && let (Some(n), Some(other)) = (total_tasks, body.get("total_tasks"))
        && parse_int(other, body_loc("total_tasks"), 1, None).ok() != Some(n)
    {
        errors.push(FieldError::new(
            "value_error",
            body_loc("total_tasks"),
            "total_tasks is another name of num_tasks: give one, or the same value",
            other.clone(),
        ));
    }

    let parameters = match body.get("parameters") {
        None => None,
        Some(value) => parse_optional_object(value, body_loc("parameters")).unwrap_or_else(|e| {
            errors.push(e);
            None
        }),
    };

    let limits = service.limits();
    let mut optional_count = |field: &str, le: u32| match body.get(field) {
        None | Some(Value::Null) => None,
        Some(value) => match parse_int(value, body_loc(field), 1, Some(i64::from(le))) {
            Ok(n) => Some(n),
            Err(e) => {
                errors.push(e);
                None
            }
        },
    };
    let max_attempts = optional_count("max_attempts", limits.max_attempts_limit);
    let timeout_seconds = optional_count("timeout_seconds", limits.max_timeout_seconds);

    let idempotency_key = match headers.get(IDEMPOTENCY_KEY_HEADER) {
        None => None,
        Some(value) => match value.to_str() {
            Ok(key) => Some(key.to_owned()),
            Err(_) => {
                errors.push(FieldError::new(
                    "string_type",
                    vec![json!("header"), json!("idempotency-key")],
                    "Input should be a valid string",
                    Value::Null,
                ));
                None
            }
        },
    };

    let (Some(job_type), Some(total_tasks), true) = (job_type, total_tasks, errors.is_empty())
    else {
        return Err(ApiError::Validation(errors));
    };
    let to_api = |e: CommandError| ApiError::from_command(e, &whole, count_field);
    let as_count = |field: &'static str, v: Option<i64>| v.map(|v| count(field, v)).transpose();
    let input = SubmitJobInput {
        job_type,
        split: Split::Total {
            total_tasks: count("total_tasks", total_tasks).map_err(to_api)?,
        },
        parameters: parameters.unwrap_or(Value::Null),
        max_attempts: as_count("max_attempts", max_attempts).map_err(to_api)?,
        timeout_seconds: as_count("timeout_seconds", timeout_seconds).map_err(to_api)?,
        idempotency_key,
    };
    let submitted = service.submit_job(input).await.map_err(to_api)?;
    // A replayed submission answers 201 too: the same answer as the first time.
    Ok((
        StatusCode::CREATED,
        axum::Json(Job::from_snapshot(&submitted.job)),
    )
        .into_response())
}

/// An external worker started the task: ENQUEUED (or RETRYING) -> RUNNING. In any other
/// status the task is returned unchanged.
#[utoipa::path(
    post,
    path = "/api/v1/tasks/{task_id}/running",
    tag = "tasks",
    params(("task_id" = String, Path, description = "The task's id")),
    responses(
        (status = 200, description = "The task now", body = Task),
        (status = 404, description = "No such task", body = Detail),
    )
)]
pub async fn task_running(
    State(service): State<CommandService>,
    Path(task_id): Path<String>,
) -> Result<axum::Json<Task>, ApiError> {
    let id = parse_task_id(&task_id)?;
    let task = service
        .start_task(id)
        .await
        .map_err(|e| ApiError::from_command(e, &Value::Null, "num_tasks"))?;
    Ok(axum::Json(Task::from_snapshot(&task)))
}

/// An external worker completed the task: COMPLETED. Completing a COMPLETED task again changes
/// nothing (the first result stands). A FAILED task cannot be completed (409).
#[utoipa::path(
    post,
    path = "/api/v1/tasks/{task_id}/complete",
    tag = "tasks",
    params(("task_id" = String, Path, description = "The task's id")),
    request_body = CompleteTaskRequest,
    responses(
        (status = 200, description = "The task now", body = Task),
        (status = 404, description = "No such task", body = Detail),
        (status = 409, description = "The task is FAILED", body = Detail),
        (status = 422, description = "No body, or an invalid one", body = ValidationDetail),
    )
)]
pub async fn task_complete(
    State(service): State<CommandService>,
    Path(task_id): Path<String>,
    body: Bytes,
) -> Result<axum::Json<Task>, ApiError> {
    let body = object_body(parse_body(&body)?)?;
    let mut errors = Vec::new();
    let result = match body.get("result") {
        None => None,
        Some(value) => parse_optional_object(value, body_loc("result")).unwrap_or_else(|e| {
            errors.push(e);
            None
        }),
    };
    let seconds = match body.get("processing_time_seconds") {
        None => None,
        Some(value) => parse_optional_float(value, body_loc("processing_time_seconds"))
            .unwrap_or_else(|e| {
                errors.push(e);
                None
            }),
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let id = parse_task_id(&task_id)?;
    let processing_ms = seconds.map(|s| (s * 1000.0).round().min(u64::MAX as f64) as u64);
    let whole = Value::Object(body);
    let task = service
        .complete_task(id, result, processing_ms)
        .await
        .map_err(|e| ApiError::from_command(e, &whole, "num_tasks"))?;
    Ok(axum::Json(Task::from_snapshot(&task)))
}

/// An external worker's attempt failed: RETRYING while the task's attempt budget allows
/// another attempt (which Shoal then really runs), else FAILED. A COMPLETED task is never
/// moved back (409).
#[utoipa::path(
    post,
    path = "/api/v1/tasks/{task_id}/failed",
    tag = "tasks",
    params(("task_id" = String, Path, description = "The task's id")),
    request_body(content = Option<FailTaskRequest>, description = "Optional"),
    responses(
        (status = 200, description = "The task now", body = Task),
        (status = 404, description = "No such task", body = Detail),
        (status = 409, description = "The task is COMPLETED", body = Detail),
        (status = 422, description = "An invalid body", body = ValidationDetail),
    )
)]
pub async fn task_failed(
    State(service): State<CommandService>,
    Path(task_id): Path<String>,
    body: Bytes,
) -> Result<axum::Json<Task>, ApiError> {
    let body = match parse_body(&body)? {
        None | Some(Value::Null) => Map::new(),
        some => object_body(some)?,
    };
    let error_message = match body.get("error_message") {
        None => None,
        Some(value) => {
            parse_optional_string(value, body_loc("error_message")).map_err(ApiError::invalid)?
        }
    };
    let id = parse_task_id(&task_id)?;
    let whole = Value::Object(body);
    let task = service
        .fail_task(id, error_message)
        .await
        .map_err(|e| ApiError::from_command(e, &whole, "num_tasks"))?;
    Ok(axum::Json(Task::from_snapshot(&task)))
}

/// A task id from a path; an id that is not a UUID names no task (404, as the original).
pub fn parse_task_id(raw: &str) -> Result<TaskId, ApiError> {
    TaskId::parse(raw).map_err(|_| ApiError::NotFound(format!("Task {raw} not found")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(field: &str) -> Vec<Value> {
        body_loc(field)
    }

    #[test]
    fn integers_are_parsed_as_the_original_did() {
        let ok = |v: Value| parse_int(&v, loc("n"), 1, Some(10));
        assert_eq!(ok(json!(3)).unwrap(), 3);
        assert_eq!(ok(json!("3")).unwrap(), 3);
        assert_eq!(ok(json!(3.0)).unwrap(), 3);
        assert_eq!(ok(json!(2.5)).unwrap_err().kind, "int_from_float");
        assert_eq!(ok(json!("x")).unwrap_err().kind, "int_parsing");
        assert_eq!(ok(json!(true)).unwrap_err().kind, "int_type");
        assert_eq!(ok(json!(null)).unwrap_err().kind, "int_type");
        let low = ok(json!(0)).unwrap_err();
        assert_eq!(low.kind, "greater_than_equal");
        assert_eq!(low.ctx.as_deref(), Some(&json!({"ge": 1})));
        let high = ok(json!(11)).unwrap_err();
        assert_eq!(high.kind, "less_than_equal");
        assert_eq!(ok(json!(u64::MAX)).unwrap_err().kind, "less_than_equal");
    }

    #[test]
    fn malformed_json_is_located() {
        let Err(ApiError::Validation(errors)) = parse_body(b"{\"a\": }") else {
            panic!("expected a validation error");
        };
        assert_eq!(errors[0].kind, "json_invalid");
        assert_eq!(errors[0].loc, vec![json!("body"), json!(6)]);
        assert!(matches!(parse_body(b"  \n"), Ok(None)));
    }

    #[test]
    fn times_have_z_and_microseconds() {
        let at = DateTime::from_timestamp(1_764_000_000, 5_000).unwrap();
        assert_eq!(iso(at), "2025-11-24T16:00:00.000005Z");
    }

    #[test]
    fn the_openapi_document_has_the_writes() {
        let doc = WriteApiDoc::openapi();
        let json = serde_json::to_value(&doc).unwrap();
        assert!(json["paths"]["/api/v1/jobs"]["post"].is_object());
        assert!(json["paths"]["/api/v1/tasks/{task_id}/failed"]["post"].is_object());
        assert!(json["components"]["schemas"]["Job"].is_object());
        assert!(json["components"]["schemas"]["JobStatus"].is_object());
    }
}
