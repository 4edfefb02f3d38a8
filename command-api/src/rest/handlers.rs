//! The write handlers: `POST /api/v1/jobs` and the task transitions of external workers.

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use shoal_api::auth::Principal;
use shoal_api::rest::{
    ApiError, Detail, FieldError, Job, Task, ValidationDetail, body_loc, object_body, parse_body,
    parse_int, parse_optional_float, parse_optional_object, parse_optional_string, parse_task_id,
};
use shoal_domain::priority::{MAX_PRIORITY, MIN_PRIORITY};
use shoal_domain::rejection::code;
use shoal_domain::{Split, TaskId};

use super::IDEMPOTENCY_KEY_HEADER;
use super::errors::api_error;
use super::requests::{CompleteTaskRequest, FailTaskRequest, SubmitJobRequest};
use crate::commands::{
    CommandError, CommandService, MAX_IDEMPOTENCY_KEY_BYTES, MAX_PROCESSING_TIME_SECONDS,
    SubmitJobInput, count,
};

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
    principal: Option<Extension<Principal>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let service = acting_as(&service, principal.as_ref());
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
    let max_concurrency =
        optional_count("max_concurrency", shoal_domain::admission::MAX_CONCURRENCY);
    let concurrency_key = match body.get("concurrency_key") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            errors.push(FieldError::new(
                "string_type",
                body_loc("concurrency_key"),
                "Input should be a valid string",
                other.clone(),
            ));
            None
        }
    };
    let priority = match body.get("priority") {
        None | Some(Value::Null) => None,
        Some(value) => match parse_int(
            value,
            body_loc("priority"),
            i64::from(MIN_PRIORITY),
            Some(i64::from(MAX_PRIORITY)),
        ) {
            Ok(n) => Some(n),
            Err(e) => {
                errors.push(e);
                None
            }
        },
    };

    let idempotency_key = match headers.get(IDEMPOTENCY_KEY_HEADER) {
        None => None,
        Some(value) => match value.to_str() {
            Ok(key) if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_BYTES => {
                let (kind, msg, ctx) = if key.is_empty() {
                    (
                        "string_too_short",
                        "String should have at least 1 character".to_owned(),
                        json!({"min_length": 1}),
                    )
                } else {
                    (
                        "string_too_long",
                        format!(
                            "String should have at most {MAX_IDEMPOTENCY_KEY_BYTES} characters"
                        ),
                        json!({"max_length": MAX_IDEMPOTENCY_KEY_BYTES}),
                    )
                };
                errors.push(
                    FieldError::new(
                        kind,
                        vec![json!("header"), json!("idempotency-key")],
                        msg,
                        json!(key),
                    )
                    .with_ctx(ctx),
                );
                None
            }
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
    let to_api = |e: CommandError| api_error(e, &whole, count_field);
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
        fallback_handler: Some(shoal_domain::job::ORIGINAL_DEFAULT_HANDLER.to_owned()),
        priority,
    };
    let concurrency = shoal_domain::admission::JobConcurrency {
        max_concurrency,
        concurrency_key,
    };
    let submitted = service
        .submit_job_with(input, concurrency)
        .await
        .map_err(to_api)?;
    // A replayed submission answers 201 too: the same answer as the first time.
    Ok((
        StatusCode::CREATED,
        axum::Json(Job::from_snapshot(&submitted.job)),
    )
        .into_response())
}

/// An external worker started the task: ENQUEUED (or RETRYING) -> RUNNING. In any other
/// status the task is returned unchanged (200).
#[utoipa::path(
    post,
    path = "/api/v1/tasks/{task_id}/running",
    tag = "tasks",
    params(("task_id" = String, Path,
        description = "The task's id: a UUID, or the original's `<job id>-task-<index>`")),
    responses(
        (status = 200, description = "The task now", body = Task),
        (status = 404, description = "No such task", body = Detail),
        (status = 409, description = "Other writers kept changing the task: send it again", body = Detail),
    )
)]
pub async fn task_running(
    State(service): State<CommandService>,
    principal: Option<Extension<Principal>>,
    Path(task_id): Path<String>,
) -> Result<axum::Json<Task>, ApiError> {
    let service = acting_as(&service, principal.as_ref());
    let id = parse_task_id(&task_id)?;
    match service.start_task(id).await {
        Ok(task) => Ok(axum::Json(Task::from_snapshot(&task))),
        Err(error) => unchanged_or_error(&service, id, &task_id, error, &Value::Null).await,
    }
}

/// An external worker completed the task: COMPLETED. Completing a COMPLETED task again changes
/// nothing (the first result stands), and neither does completing a FAILED task late: both
/// answer 200 with the task as it is, as the original did.
#[utoipa::path(
    post,
    path = "/api/v1/tasks/{task_id}/complete",
    tag = "tasks",
    params(("task_id" = String, Path,
        description = "The task's id: a UUID, or the original's `<job id>-task-<index>`")),
    request_body = CompleteTaskRequest,
    responses(
        (status = 200, description = "The task now", body = Task),
        (status = 404, description = "No such task", body = Detail),
        (status = 409, description = "Other writers kept changing the task: send it again", body = Detail),
        (status = 422, description = "No body, or an invalid one", body = ValidationDetail),
    )
)]
pub async fn task_complete(
    State(service): State<CommandService>,
    principal: Option<Extension<Principal>>,
    Path(task_id): Path<String>,
    body: Bytes,
) -> Result<axum::Json<Task>, ApiError> {
    let service = acting_as(&service, principal.as_ref());
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
            .and_then(|seconds| match seconds {
                Some(s) if s > MAX_PROCESSING_TIME_SECONDS as f64 => Err(FieldError::new(
                    "less_than_equal",
                    body_loc("processing_time_seconds"),
                    format!("Input should be less than or equal to {MAX_PROCESSING_TIME_SECONDS}"),
                    value.clone(),
                )
                .with_ctx(serde_json::json!({ "le": MAX_PROCESSING_TIME_SECONDS }))),
                other => Ok(other),
            })
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
    match service.complete_task(id, result, processing_ms).await {
        Ok(task) => Ok(axum::Json(Task::from_snapshot(&task))),
        Err(error) => unchanged_or_error(&service, id, &task_id, error, &whole).await,
    }
}

/// An external worker's attempt failed: RETRYING while the task's attempt budget allows
/// another attempt (which Shoal then really runs), else FAILED. A COMPLETED task is never
/// moved back, and a FAILED one stays FAILED: both answer 200 with the task as it is, as the
/// original did.
#[utoipa::path(
    post,
    path = "/api/v1/tasks/{task_id}/failed",
    tag = "tasks",
    params(("task_id" = String, Path,
        description = "The task's id: a UUID, or the original's `<job id>-task-<index>`")),
    request_body(content = Option<FailTaskRequest>, description = "Optional"),
    responses(
        (status = 200, description = "The task now", body = Task),
        (status = 404, description = "No such task", body = Detail),
        (status = 409, description = "Other writers kept changing the task: send it again", body = Detail),
        (status = 422, description = "An invalid body", body = ValidationDetail),
    )
)]
pub async fn task_failed(
    State(service): State<CommandService>,
    principal: Option<Extension<Principal>>,
    Path(task_id): Path<String>,
    body: Bytes,
) -> Result<axum::Json<Task>, ApiError> {
    let service = acting_as(&service, principal.as_ref());
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
    match service.fail_task(id, error_message).await {
        Ok(task) => Ok(axum::Json(Task::from_snapshot(&task))),
        Err(error) => unchanged_or_error(&service, id, &task_id, error, &whole).await,
    }
}

/// The answer to a task transition the service refused. A transition the task's status does
/// not allow (`failed` on a COMPLETED task, `complete` on a FAILED one) changes nothing, and the
/// original answered such a report with 200 and the task: its workers treat anything else as
/// an error to retry or crash on. So it is 200 with the task as it is (GraphQL, which has no
/// such clients, says precisely why instead). An unknown task is 404 with the id as it was
/// given (`raw`, in either form); other errors are answered as usual.
async fn unchanged_or_error(
    service: &CommandService,
    id: TaskId,
    raw: &str,
    error: CommandError,
    body: &Value,
) -> Result<axum::Json<Task>, ApiError> {
    let not_found = || ApiError::NotFound(format!("Task {raw} not found"));
    match error {
        CommandError::Rejected(rejection) if rejection.code() == code::INVALID_TRANSITION => {
            match service.task_snapshot(id).await {
                Ok(task) => Ok(axum::Json(Task::from_snapshot(&task))),
                Err(CommandError::NotFound(_)) => Err(not_found()),
                Err(other) => Err(api_error(other, body, "num_tasks")),
            }
        }
        CommandError::NotFound(_) => Err(not_found()),
        other => Err(api_error(other, body, "num_tasks")),
    }
}

/// The service issuing commands as the request's token, if it carried one.
fn acting_as(service: &CommandService, principal: Option<&Extension<Principal>>) -> CommandService {
    service.acting_as(principal.map(|p| p.0.name.as_str()))
}
