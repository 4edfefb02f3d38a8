//! The original system's REST API, read side: `GET /`, `GET /health`, jobs, tasks, analytics
//! ([`router`]), and their OpenAPI description ([`ReadApiDoc`]). The `shoal` binary mounts them
//! together with command-api's REST writes, and serves the whole document (`/openapi.json`)
//! with Swagger UI (`/docs`). The conventions (error bodies, `Job` and `Task`, times) are
//! `shoal_api::rest`'s.
//!
//! Reads come from the projector's read tables. A job or task the tables do not have yet (the
//! projector is a few milliseconds behind a submission) is answered from its event stream
//! instead ([`StreamSnapshots`]), so a client that submits and then reads never sees a 404 for
//! what it just wrote.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use chrono::Utc;
use serde::Serialize;
use serde_json::json;
use shoal_api::rest::{
    ApiError, Detail, FieldError, Job, RestJobStatus, Task, ValidationDetail, iso, parse_task_id,
    query_int,
};
use shoal_api::snapshot::StreamSnapshots;
use shoal_domain::JobId;
use shoal_infra::db::Database;
use shoal_infra::readmodel::{JobFilter, JobRow, JobSort, ReadModelError, ReadModelStore, TaskRow};
use utoipa::{OpenApi, ToSchema};

/// Largest `page_size` of `GET /api/v1/jobs` (the original's).
pub const MAX_JOBS_PAGE_SIZE: i64 = 100;
/// Default `page_size` of `GET /api/v1/jobs`.
pub const DEFAULT_JOBS_PAGE_SIZE: i64 = 20;
/// Default cap on the tasks one `GET /api/v1/jobs/{id}/tasks` returns.
pub const DEFAULT_MAX_TASKS_PER_RESPONSE: u32 = 10_000;
/// How long `GET /health` waits for the database.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(3);

/// What the REST reads need.
#[derive(Debug, Clone)]
pub struct RestConfig {
    /// Most tasks one `GET /api/v1/jobs/{id}/tasks` returns (without `page`/`page_size`, the
    /// first this many; `page_size` may not exceed it).
    pub max_tasks_per_response: u32,
}

impl Default for RestConfig {
    fn default() -> Self {
        RestConfig {
            max_tasks_per_response: DEFAULT_MAX_TASKS_PER_RESPONSE,
        }
    }
}

#[derive(Debug, Clone)]
struct Reads {
    store: ReadModelStore,
    streams: Arc<dyn StreamSnapshots>,
    config: RestConfig,
}

/// The REST reads, from `store`; a job or task it does not have yet is read from `streams`.
/// The binary mounts it with the writes, and installs the original's 405
/// (`{"detail":"Method Not Allowed"}`) and 404 under `/api` (`{"detail":"Not Found"}`).
pub fn router(
    store: ReadModelStore,
    streams: Arc<dyn StreamSnapshots>,
    config: RestConfig,
) -> Router {
    let reads = Reads {
        store,
        streams,
        config,
    };
    Router::new()
        .route("/", get(root))
        .route("/health", get(health))
        .route("/api/v1/jobs", get(list_jobs))
        .route("/api/v1/jobs/{job_id}", get(get_job))
        .route("/api/v1/jobs/{job_id}/tasks", get(job_tasks))
        .route("/api/v1/tasks/{task_id}", get(get_task))
        .route("/api/v1/analytics/overview", get(overview))
        .route("/api/v1/analytics/jobs-by-type", get(jobs_by_type))
        .route("/api/v1/analytics/jobs-by-status", get(jobs_by_status))
        .route("/api/v1/analytics/tasks-by-status", get(tasks_by_status))
        .route("/api/v1/analytics/timeline", get(timeline))
        .route(
            "/api/v1/analytics/processing-time-stats",
            get(processing_time_stats),
        )
        .route("/api/v1/analytics/recent-jobs", get(recent_jobs))
        .with_state(reads)
}

/// The OpenAPI description of the reads, with the document's title (the binary merges the
/// writes' into it).
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Shoal REST API",
        description = "The REST API of the system Shoal replaces, kept compatible. \
                       See docs/rest-api.md."
    ),
    paths(
        root, health, list_jobs, get_job, job_tasks, get_task, overview, jobs_by_type,
        jobs_by_status, tasks_by_status, timeline, processing_time_stats, recent_jobs
    ),
    components(schemas(
        Service, Health, JobList, TaskList, OverviewBody, TypeCount, StatusCount, DayCount,
        ProcessingStats, RecentJob
    )),
    tags(
        (name = "service", description = "Service status"),
        (name = "analytics", description = "Counts and statistics"),
    )
)]
pub struct ReadApiDoc;

// ---------------------------------------------------------------------------------------------
// Bodies

/// `GET /`.
#[derive(Debug, Serialize, ToSchema)]
struct Service {
    /// Always `healthy` when it answers.
    status: &'static str,
    /// `shoal`.
    service: &'static str,
    /// Shoal's version.
    version: &'static str,
}

/// `GET /health`.
#[derive(Debug, Serialize, ToSchema)]
struct Health {
    /// `healthy` or `unhealthy`.
    status: &'static str,
    /// `connected` or `disconnected`.
    database: &'static str,
}

/// A page of jobs.
#[derive(Debug, Serialize, ToSchema)]
struct JobList {
    /// Newest first.
    jobs: Vec<Job>,
    /// How many jobs match.
    total: i64,
    page: i64,
    page_size: i64,
    /// `ceil(total / page_size)`; 0 when nothing matches.
    total_pages: i64,
}

/// A job's tasks.
#[derive(Debug, Serialize, ToSchema)]
struct TaskList {
    /// In `task_index` order.
    tasks: Vec<Task>,
    /// How many tasks the job has.
    total: i64,
    /// Only when `page` or `page_size` was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    page: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    page_size: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    total_pages: Option<i64>,
}

/// `GET /api/v1/analytics/overview`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Overview)]
struct OverviewBody {
    total_jobs: i64,
    completed_jobs: i64,
    failed_jobs: i64,
    running_jobs: i64,
    /// PENDING, CREATING_TASKS or ENQUEUED.
    pending_jobs: i64,
    /// Shoal: CANCELLED jobs.
    cancelled_jobs: i64,
    /// Completed jobs in percent of all jobs, 2 decimals.
    success_rate: f64,
    total_tasks: i64,
    completed_tasks: i64,
    failed_tasks: i64,
    running_tasks: i64,
    /// PENDING or ENQUEUED.
    pending_tasks: i64,
    /// Shoal: RETRYING tasks.
    retrying_tasks: i64,
    /// Over completed tasks, 2 decimals.
    avg_processing_time_seconds: f64,
    total_processing_time_seconds: f64,
}

#[derive(Debug, Serialize, ToSchema)]
struct TypeCount {
    job_type: String,
    count: i64,
}

#[derive(Debug, Serialize, ToSchema)]
struct StatusCount {
    status: String,
    count: i64,
}

/// Jobs submitted on one UTC day.
#[derive(Debug, Serialize, ToSchema)]
struct DayCount {
    /// `YYYY-MM-DD`.
    date: String,
    count: i64,
}

/// Processing times of completed tasks, in seconds with 2 decimals.
#[derive(Debug, Serialize, ToSchema)]
struct ProcessingStats {
    /// 0 without data.
    min_seconds: f64,
    /// 0 without data.
    max_seconds: f64,
    /// 0 without data.
    avg_seconds: f64,
    /// Null without data.
    median_seconds: Option<f64>,
    /// Shoal: 95th percentile.
    p95_seconds: Option<f64>,
    /// Shoal: 99th percentile.
    p99_seconds: Option<f64>,
    /// Shoal: how many completed tasks.
    count: i64,
}

#[derive(Debug, Serialize, ToSchema)]
struct RecentJob {
    id: String,
    job_type: String,
    #[schema(value_type = RestJobStatus)]
    status: RestJobStatus,
    total_tasks: u32,
    completed_tasks: u32,
    failed_tasks: u32,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    completed_at: Option<String>,
}

fn job_body(row: &JobRow) -> Job {
    Job {
        id: row.id.to_string(),
        job_type: row.job_type.clone(),
        status: row.status.into(),
        total_tasks: row.total_tasks(),
        completed_tasks: row.progress.completed,
        failed_tasks: row.progress.failed,
        parameters: (!row.parameters.is_null()).then(|| row.parameters.clone()),
        created_at: iso(row.created_at),
        updated_at: Some(iso(row.updated_at)),
        started_at: row.started_at.map(iso),
        completed_at: row.completed_at.map(iso),
        error_message: row
            .error_message
            .clone()
            .or_else(|| row.cancel_reason.clone()),
    }
}

fn task_body(row: &TaskRow) -> Task {
    Task {
        id: row.id.to_string(),
        job_id: row.job_id.to_string(),
        status: row.status.into(),
        task_index: row.task_index,
        retry_count: row.retry_count(),
        max_retries: row.max_retries(),
        parameters: (!row.parameters.is_null()).then(|| row.parameters.clone()),
        result: row.result.clone(),
        error_message: row.error_message.clone(),
        created_at: iso(row.created_at),
        updated_at: Some(iso(row.updated_at)),
        started_at: row.started_at.map(iso),
        completed_at: row.completed_at.map(iso),
        processing_time_seconds: row.processing_time_seconds(),
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn read_error(error: ReadModelError) -> ApiError {
    ApiError::internal(error)
}

fn validation(errors: Vec<FieldError>) -> Result<(), ApiError> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Validation(errors))
    }
}

// ---------------------------------------------------------------------------------------------
// Handlers

/// The service answers.
#[utoipa::path(get, path = "/", tag = "service",
    responses((status = 200, body = Service)))]
async fn root() -> Json<Service> {
    Json(Service {
        status: "healthy",
        service: "shoal",
        version: env!("CARGO_PKG_VERSION"),
    })
}

/// The service and its database answer (503 when the database does not, within 3 s).
#[utoipa::path(get, path = "/health", tag = "service",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
async fn health(State(reads): State<Reads>) -> Result<Json<Health>, ApiError> {
    let database: &Database = reads.store.database();
    match tokio::time::timeout(HEALTH_TIMEOUT, database.ping()).await {
        Ok(Ok(())) => Ok(Json(Health {
            status: "healthy",
            database: "connected",
        })),
        outcome => {
            let error = match outcome {
                Ok(Err(e)) => e.to_string(),
                _ => format!("no answer within {HEALTH_TIMEOUT:?}"),
            };
            tracing::warn!(%error, "health check: the database does not answer");
            Err(ApiError::Unavailable(json!({
                "status": "unhealthy",
                "database": "disconnected",
            })))
        }
    }
}

/// A page of jobs, newest first, optionally searched (a case-insensitive substring of the id
/// or the job type).
#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs",
    params(
        ("page" = Option<i64>, Query, minimum = 1, description = "From 1 (default 1)"),
        ("page_size" = Option<i64>, Query, minimum = 1, maximum = 100, description = "Default 20"),
        ("search" = Option<String>, Query, description = "Substring of the id or job type"),
    ),
    responses((status = 200, body = JobList), (status = 422, body = ValidationDetail)))]
async fn list_jobs(
    State(reads): State<Reads>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<JobList>, ApiError> {
    let mut errors = Vec::new();
    let page = query_int(&params, "page", 1, 1, None).unwrap_or_else(|e| {
        errors.push(e);
        1
    });
    let page_size = query_int(
        &params,
        "page_size",
        DEFAULT_JOBS_PAGE_SIZE,
        1,
        Some(MAX_JOBS_PAGE_SIZE),
    )
    .unwrap_or_else(|e| {
        errors.push(e);
        1
    });
    validation(errors)?;
    let filter = JobFilter {
        search: params
            .get("search")
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty()),
        ..JobFilter::default()
    };
    let page_u32 = u32::try_from(page).unwrap_or(u32::MAX);
    let (rows, total) = reads
        .store
        .page_jobs(&filter, JobSort::Newest, page_u32, page_size as u32)
        .await
        .map_err(read_error)?;
    Ok(Json(JobList {
        jobs: rows.iter().map(job_body).collect(),
        total,
        page,
        page_size,
        total_pages: (total + page_size - 1) / page_size,
    }))
}

/// A job.
#[utoipa::path(get, path = "/api/v1/jobs/{job_id}", tag = "jobs",
    params(("job_id" = String, Path)),
    responses((status = 200, body = Job), (status = 404, body = Detail)))]
async fn get_job(
    State(reads): State<Reads>,
    Path(job_id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    let not_found = || ApiError::NotFound(format!("Job {job_id} not found"));
    let id = JobId::parse(&job_id).map_err(|_| not_found())?;
    if let Some(row) = reads.store.get_job(id).await.map_err(read_error)? {
        return Ok(Json(job_body(&row)));
    }
    // Not projected yet: the job's own stream.
    match reads
        .streams
        .job_snapshot(id)
        .await
        .map_err(ApiError::internal)?
    {
        Some(job) => Ok(Json(Job::from_snapshot(&job))),
        None => Err(not_found()),
    }
}

/// A job's tasks in `task_index` order. Without `page`/`page_size`, all of them up to the
/// server's cap (default 10,000); `total` is always the job's number of tasks. An unknown job
/// has no tasks.
#[utoipa::path(get, path = "/api/v1/jobs/{job_id}/tasks", tag = "jobs",
    params(
        ("job_id" = String, Path),
        ("page" = Option<i64>, Query, minimum = 1, description = "Shoal: from 1"),
        ("page_size" = Option<i64>, Query, minimum = 1,
            description = "Shoal: up to the server's cap (default 100 when `page` is given)"),
    ),
    responses((status = 200, body = TaskList), (status = 422, body = ValidationDetail)))]
async fn job_tasks(
    State(reads): State<Reads>,
    Path(job_id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<TaskList>, ApiError> {
    let cap = i64::from(reads.config.max_tasks_per_response.max(1));
    let paginated = params.contains_key("page") || params.contains_key("page_size");
    let mut errors = Vec::new();
    let page = query_int(&params, "page", 1, 1, None).unwrap_or_else(|e| {
        errors.push(e);
        1
    });
    let page_size =
        query_int(&params, "page_size", 100.min(cap), 1, Some(cap)).unwrap_or_else(|e| {
            errors.push(e);
            1
        });
    validation(errors)?;
    let Ok(id) = JobId::parse(&job_id) else {
        return Ok(Json(TaskList {
            tasks: Vec::new(),
            total: 0,
            page: paginated.then_some(page),
            page_size: paginated.then_some(page_size),
            total_pages: paginated.then_some(0),
        }));
    };
    let (offset, limit) = if paginated {
        ((page - 1).saturating_mul(page_size), page_size)
    } else {
        (0, cap)
    };
    let (rows, total) = reads
        .store
        .page_tasks_of_job(id, &[], offset, limit)
        .await
        .map_err(read_error)?;
    Ok(Json(TaskList {
        tasks: rows.iter().map(task_body).collect(),
        total,
        page: paginated.then_some(page),
        page_size: paginated.then_some(page_size),
        total_pages: paginated.then_some((total + page_size - 1) / page_size),
    }))
}

/// A task.
#[utoipa::path(get, path = "/api/v1/tasks/{task_id}", tag = "tasks",
    params(("task_id" = String, Path)),
    responses((status = 200, body = Task), (status = 404, body = Detail)))]
async fn get_task(
    State(reads): State<Reads>,
    Path(task_id): Path<String>,
) -> Result<Json<Task>, ApiError> {
    let id = parse_task_id(&task_id)?;
    if let Some(row) = reads.store.get_task(id).await.map_err(read_error)? {
        return Ok(Json(task_body(&row)));
    }
    // Not projected yet: the task's own stream.
    match reads
        .streams
        .task_snapshot(id)
        .await
        .map_err(ApiError::internal)?
    {
        Some(task) => Ok(Json(Task::from_snapshot(&task))),
        None => Err(ApiError::NotFound(format!("Task {id} not found"))),
    }
}

/// Counts of jobs and tasks, success rate and processing times.
#[utoipa::path(get, path = "/api/v1/analytics/overview", tag = "analytics",
    responses((status = 200, body = OverviewBody)))]
async fn overview(State(reads): State<Reads>) -> Result<Json<OverviewBody>, ApiError> {
    let o = reads.store.overview().await.map_err(read_error)?;
    Ok(Json(OverviewBody {
        total_jobs: o.total_jobs,
        completed_jobs: o.completed_jobs,
        failed_jobs: o.failed_jobs,
        running_jobs: o.running_jobs,
        pending_jobs: o.pending_jobs,
        cancelled_jobs: o.cancelled_jobs,
        success_rate: round2(o.success_rate),
        total_tasks: o.total_tasks,
        completed_tasks: o.completed_tasks,
        failed_tasks: o.failed_tasks,
        running_tasks: o.running_tasks,
        pending_tasks: o.pending_tasks,
        retrying_tasks: o.retrying_tasks,
        avg_processing_time_seconds: round2(o.avg_processing_time_seconds),
        total_processing_time_seconds: round2(o.total_processing_time_seconds),
    }))
}

/// Jobs per type, most frequent first.
#[utoipa::path(get, path = "/api/v1/analytics/jobs-by-type", tag = "analytics",
    responses((status = 200, body = Vec<TypeCount>)))]
async fn jobs_by_type(State(reads): State<Reads>) -> Result<Json<Vec<TypeCount>>, ApiError> {
    let counts = reads.store.jobs_by_type().await.map_err(read_error)?;
    Ok(Json(
        counts
            .into_iter()
            .filter(|(_, count)| *count > 0)
            .map(|(job_type, count)| TypeCount { job_type, count })
            .collect(),
    ))
}

/// Jobs per status (statuses present only).
#[utoipa::path(get, path = "/api/v1/analytics/jobs-by-status", tag = "analytics",
    responses((status = 200, body = Vec<StatusCount>)))]
async fn jobs_by_status(State(reads): State<Reads>) -> Result<Json<Vec<StatusCount>>, ApiError> {
    let counts = reads.store.jobs_by_status().await.map_err(read_error)?;
    Ok(Json(
        counts
            .into_iter()
            .filter(|(_, count)| *count > 0)
            .map(|(status, count)| StatusCount {
                status: status.as_str().to_owned(),
                count,
            })
            .collect(),
    ))
}

/// Tasks per status (statuses present only).
#[utoipa::path(get, path = "/api/v1/analytics/tasks-by-status", tag = "analytics",
    responses((status = 200, body = Vec<StatusCount>)))]
async fn tasks_by_status(State(reads): State<Reads>) -> Result<Json<Vec<StatusCount>>, ApiError> {
    let counts = reads.store.tasks_by_status().await.map_err(read_error)?;
    Ok(Json(
        counts
            .into_iter()
            .filter(|(_, count)| *count > 0)
            .map(|(status, count)| StatusCount {
                status: status.as_str().to_owned(),
                count,
            })
            .collect(),
    ))
}

/// Jobs submitted per UTC day over the last `days` days (today included), oldest first, one
/// entry per day (days without jobs count 0).
#[utoipa::path(get, path = "/api/v1/analytics/timeline", tag = "analytics",
    params(("days" = Option<i64>, Query, minimum = 1, maximum = 30, description = "Default 7")),
    responses((status = 200, body = Vec<DayCount>), (status = 422, body = ValidationDetail)))]
async fn timeline(
    State(reads): State<Reads>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Vec<DayCount>>, ApiError> {
    let days = query_int(&params, "days", 7, 1, Some(30)).map_err(ApiError::invalid)?;
    let days = reads
        .store
        .timeline(days as u32, Utc::now())
        .await
        .map_err(read_error)?;
    Ok(Json(
        days.into_iter()
            .map(|d| DayCount {
                date: d.date.format("%Y-%m-%d").to_string(),
                count: d.jobs_submitted,
            })
            .collect(),
    ))
}

/// Processing-time statistics over every completed task.
#[utoipa::path(get, path = "/api/v1/analytics/processing-time-stats", tag = "analytics",
    responses((status = 200, body = ProcessingStats)))]
async fn processing_time_stats(
    State(reads): State<Reads>,
) -> Result<Json<ProcessingStats>, ApiError> {
    let s = reads.store.processing_time().await.map_err(read_error)?;
    Ok(Json(ProcessingStats {
        min_seconds: round2(s.min_seconds.unwrap_or(0.0)),
        max_seconds: round2(s.max_seconds.unwrap_or(0.0)),
        avg_seconds: round2(s.avg_seconds.unwrap_or(0.0)),
        median_seconds: s.p50_seconds.map(round2),
        p95_seconds: s.p95_seconds.map(round2),
        p99_seconds: s.p99_seconds.map(round2),
        count: s.count,
    }))
}

/// The newest jobs.
#[utoipa::path(get, path = "/api/v1/analytics/recent-jobs", tag = "analytics",
    params(("limit" = Option<i64>, Query, minimum = 1, maximum = 50, description = "Default 10")),
    responses((status = 200, body = Vec<RecentJob>), (status = 422, body = ValidationDetail)))]
async fn recent_jobs(
    State(reads): State<Reads>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Vec<RecentJob>>, ApiError> {
    let limit = query_int(&params, "limit", 10, 1, Some(50)).map_err(ApiError::invalid)?;
    let rows = reads.store.recent_jobs(limit).await.map_err(read_error)?;
    Ok(Json(
        rows.iter()
            .map(|row| RecentJob {
                id: row.id.to_string(),
                job_type: row.job_type.clone(),
                status: row.status.into(),
                total_tasks: row.total_tasks(),
                completed_tasks: row.progress.completed,
                failed_tasks: row.progress.failed,
                created_at: iso(row.created_at),
                completed_at: row.completed_at.map(iso),
            })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_has_the_reads() {
        let doc = serde_json::to_value(ReadApiDoc::openapi()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["info"]["title"], "Shoal REST API");
        assert!(doc["paths"]["/api/v1/jobs"]["get"].is_object());
        for path in [
            "/",
            "/health",
            "/api/v1/jobs/{job_id}/tasks",
            "/api/v1/tasks/{task_id}",
            "/api/v1/analytics/recent-jobs",
        ] {
            assert!(doc["paths"][path].is_object(), "{path} missing");
        }
    }

    #[test]
    fn rounding_to_two_decimals() {
        assert_eq!(round2(66.666_666), 66.67);
        assert_eq!(round2(0.0), 0.0);
    }
}
