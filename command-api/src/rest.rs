//! The original system's REST API, write side: `POST /api/v1/jobs` and the task transitions
//! its external workers call (`/api/v1/tasks/{id}/running|complete|failed`), on top of
//! [`CommandService`], so a REST write appends exactly what the GraphQL mutation or a Shoal
//! worker appends.
//!
//! The conventions both REST halves share (error bodies, lenient JSON input, the `Job` and
//! `Task` objects, times) are `shoal_api::rest`'s; query-api serves the reads, and the `shoal`
//! binary mounts both with the OpenAPI document of the whole API. See `docs/rest-api.md`.

mod errors;
mod handlers;
mod requests;

use axum::Router;
use axum::routing::post;
use shoal_api::rest::{
    Detail, FieldError, Job, RestJobStatus, RestTaskStatus, Task, ValidationDetail,
};
use utoipa::OpenApi;

use crate::commands::CommandService;

pub use errors::api_error;
pub use handlers::{submit_job, task_complete, task_failed, task_running};
pub use requests::{CompleteTaskRequest, FailTaskRequest, SubmitJobRequest};

/// Header carrying a client's idempotency key for `POST /api/v1/jobs`.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// `POST /api/v1/jobs` and the task transitions, on `service`. The binary mounts it with the
/// reads (query-api's `rest::router`) and installs the 405 answer.
pub fn router(service: CommandService) -> Router {
    Router::new()
        .route("/api/v1/jobs", post(submit_job))
        .route("/api/v1/tasks/{task_id}/running", post(task_running))
        .route("/api/v1/tasks/{task_id}/complete", post(task_complete))
        .route("/api/v1/tasks/{task_id}/failed", post(task_failed))
        .with_state(service)
}

/// The task transitions only (`POST /api/v1/tasks/{id}/running|complete|failed`): what the
/// old system's external workers call, for a listener that serves nothing else.
pub fn task_router(service: CommandService) -> Router {
    Router::new()
        .route("/api/v1/tasks/{task_id}/running", post(task_running))
        .route("/api/v1/tasks/{task_id}/complete", post(task_complete))
        .route("/api/v1/tasks/{task_id}/failed", post(task_failed))
        .with_state(service)
}

/// The OpenAPI description of the write endpoints (the binary merges it with the reads').
#[derive(Debug, OpenApi)]
#[openapi(
    paths(
        handlers::submit_job,
        handlers::task_running,
        handlers::task_complete,
        handlers::task_failed
    ),
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

#[cfg(test)]
mod tests {
    use super::*;

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
