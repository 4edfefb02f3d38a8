//! The REST API's JSON objects (`Job`, `Task`, their statuses) and its times: ISO-8601 UTC
//! with `Z` and microseconds.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::snapshot::{JobSnapshot, TaskSnapshot};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_have_z_and_microseconds() {
        let at = DateTime::from_timestamp(1_764_000_000, 5_000).unwrap();
        assert_eq!(iso(at), "2025-11-24T16:00:00.000005Z");
    }
}
