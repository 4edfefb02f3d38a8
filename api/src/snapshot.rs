//! A job or a task as its own event stream tells it (no projection lag).
//!
//! Commands return these (command-api folds them from the log), and the REST reads answer
//! with them for a write the projector has not reached yet ([`StreamSnapshots`]), so a client
//! that submits and then reads never sees a 404 for what it just wrote.

use std::error::Error;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use shoal_domain::{JobId, JobStatus, TaskId, TaskStatus};

/// A job as its own stream tells it. Task counts by status are not here: they come from task
/// streams, through the projector's read model.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSnapshot {
    /// The job.
    pub job_id: JobId,
    /// Which handler runs its tasks.
    pub job_type: String,
    /// The job stream's status (PENDING, CREATING_TASKS, ENQUEUED, RUNNING after a retry
    /// request, COMPLETED, FAILED, CANCELLED). Read models show RUNNING as soon as a task has
    /// started; this does not.
    pub status: JobStatus,
    /// How many tasks the job has.
    pub total_tasks: u32,
    /// How many of them exist so far (the orchestrator creates them in chunks).
    pub tasks_created: u32,
    /// Items per task, for an item split.
    pub batch_size: Option<u32>,
    /// Parameters given to every task.
    pub parameters: Map<String, Value>,
    /// Attempts each task gets.
    pub max_attempts: u32,
    /// How long one attempt may run.
    pub timeout_seconds: u32,
    /// When it was accepted.
    pub submitted_at: DateTime<Utc>,
    /// When its stream last changed.
    pub updated_at: DateTime<Utc>,
    /// When it COMPLETED, FAILED or was CANCELLED (`None` while it is live).
    pub ended_at: Option<DateTime<Utc>>,
    /// The reason given when it was cancelled.
    pub cancel_reason: Option<String>,
    /// Its current priority (higher runs first).
    pub priority: i32,
    /// The job stream's version (number of job-level events).
    pub version: i64,
}

/// A task as its own stream tells it (no projection lag): what the task-transition commands
/// return.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSnapshot {
    /// The task.
    pub task_id: TaskId,
    /// Its job.
    pub job_id: JobId,
    /// Its index in the job (from 0).
    pub index: u32,
    /// Its status.
    pub status: TaskStatus,
    /// The current attempt: running, or next to run (1 = first).
    pub attempt: u32,
    /// Attempts per budget (a manual retry grants a fresh budget).
    pub max_attempts: u32,
    /// The task's input (the job's parameters, plus its batch of items for an item split).
    pub parameters: Value,
    /// What the completing attempt returned.
    pub result: Option<Value>,
    /// The latest failure's error (cleared when the task completes).
    pub error_message: Option<String>,
    /// The worker of the latest start.
    pub worker: Option<String>,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// When its stream last changed.
    pub updated_at: DateTime<Utc>,
    /// When its latest attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it COMPLETED or FAILED for good (cleared by a retry).
    pub completed_at: Option<DateTime<Utc>>,
    /// How long the completing attempt ran.
    pub duration_ms: Option<u64>,
    /// The task stream's version.
    pub version: i64,
}

/// Reads a job's or a task's own stream: the reads' fallback while the projector has not
/// reached a fresh write (read-your-writes). command-api's `CommandService` implements it;
/// the `shoal` binary hands it to the REST reads.
#[async_trait]
pub trait StreamSnapshots: Send + Sync + std::fmt::Debug {
    /// The job as its stream tells it; `None` when the stream is empty (no such job).
    async fn job_snapshot(&self, job_id: JobId) -> Result<Option<JobSnapshot>, SnapshotError>;

    /// The task as its stream tells it; `None` when the stream is empty (no such task).
    async fn task_snapshot(&self, task_id: TaskId) -> Result<Option<TaskSnapshot>, SnapshotError>;
}

/// A stream could not be read or folded (the log failed, or holds an event this build cannot
/// read). Answer 500 and log the cause (its `source()`) once; never show it to a client.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the stream")]
pub struct SnapshotError(#[source] Box<dyn Error + Send + Sync>);

impl SnapshotError {
    /// A failure caused by `source`.
    pub fn new(source: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        SnapshotError(source.into())
    }
}
