//! The task transitions external workers report through the REST API (started, completed,
//! failed), appending what a Shoal worker would; and a task as its stream tells it.

use chrono::{DateTime, Utc};
use serde_json::Value;
use shoal_domain::{
    Event, TaskCommand, TaskId, TaskStatus, decide_task, evolve_task, retry_backoff,
};
use shoal_infra::eventlog::{AppendBatch, ExpectedVersion, LogError, StreamAppend};

use super::input::contains_nul;
use super::streams::{TaskStream, decode, encode_all};
use super::{CONFLICT_ATTEMPTS, CommandError, CommandService, TaskSnapshot};
#[cfg(doc)]
use shoal_domain::Rejection;

/// Worker id recorded in the `TaskStarted` of a task started through the task-transition
/// commands (the REST API's external workers).
pub const EXTERNAL_WORKER: &str = "rest";

/// Longest error message of an externally reported failure, in characters.
pub const MAX_ERROR_CHARS: usize = 10_000;

/// Largest result of an externally completed task, serialized as JSON, in bytes.
pub const MAX_RESULT_BYTES: usize = 1024 * 1024;

/// Longest processing time an external worker may report, in seconds (30 days: longer than
/// any attempt may run). A larger figure is refused at the edge, so that no sum over tasks in
/// the analytics can overflow.
pub const MAX_PROCESSING_TIME_SECONDS: u64 = 30 * 86_400;

/// The error recorded when an external worker reports a failure without a message.
pub const DEFAULT_ERROR_MESSAGE: &str = "failed (no error message given)";

/// Backoff before the next attempt of a task an external worker reported failed: the same
/// exponential backoff as Shoal's workers (base, cap).
const EXTERNAL_RETRY_BASE_MS: u64 = 1_000;
const EXTERNAL_RETRY_MAX_MS: u64 = 60_000;

impl CommandService {
    /// The task as its stream tells it ([`CommandError::NotFound`], `"Task <id> not found"`,
    /// when it does not exist).
    pub async fn task_snapshot(&self, task_id: TaskId) -> Result<TaskSnapshot, CommandError> {
        self.load_task(task_id).await?.snapshot()
    }

    /// An external worker starts the task: ENQUEUED or RETRYING -> RUNNING (`TaskStarted` of
    /// the current attempt, worker [`EXTERNAL_WORKER`]). In any other status nothing is
    /// appended and the task is returned as it is.
    #[tracing::instrument(name = "command.start_task", skip_all, fields(task_id = %task_id))]
    pub async fn start_task(&self, task_id: TaskId) -> Result<TaskSnapshot, CommandError> {
        self.transition_task(task_id, "start_task", |task, now| match task.state.status {
            TaskStatus::Pending | TaskStatus::Enqueued | TaskStatus::Retrying => {
                Ok(vec![task.start(now)?])
            }
            TaskStatus::Running | TaskStatus::Completed | TaskStatus::Failed => Ok(Vec::new()),
        })
        .await
    }

    /// An external worker completed the task: `TaskCompleted` of the current attempt (preceded
    /// by its `TaskStarted` when the worker never reported the start). `processing_ms` is how
    /// long it ran; `None` measures it from the attempt's start. Completing a COMPLETED task
    /// appends nothing and returns it (the first result stands).
    ///
    /// Errors: unknown task ([`CommandError::NotFound`]); a FAILED task
    /// ([`Rejection::TaskTransition`]); a result that is not an object, too large or holds
    /// NUL characters ([`CommandError::Invalid`], field `result`).
    #[tracing::instrument(name = "command.complete_task", skip_all, fields(task_id = %task_id))]
    pub async fn complete_task(
        &self,
        task_id: TaskId,
        result: Option<Value>,
        processing_ms: Option<u64>,
    ) -> Result<TaskSnapshot, CommandError> {
        if processing_ms.is_some_and(|ms| ms > MAX_PROCESSING_TIME_SECONDS * 1000) {
            return Err(CommandError::invalid(
                "processing_time_seconds",
                format!(
                    "processing_time_seconds must be at most {MAX_PROCESSING_TIME_SECONDS} (30 days)"
                ),
            ));
        }
        let result = result.filter(|r| !r.is_null());
        if let Some(result) = &result {
            if !result.is_object() {
                return Err(CommandError::invalid(
                    "result",
                    "result must be a JSON object",
                ));
            }
            if contains_nul(result) {
                return Err(CommandError::invalid(
                    "result",
                    "result must not contain NUL characters",
                ));
            }
            let bytes = serde_json::to_vec(result).map_or(usize::MAX, |v| v.len());
            if bytes > MAX_RESULT_BYTES {
                return Err(CommandError::invalid(
                    "result",
                    format!("result is {bytes} bytes, the limit is {MAX_RESULT_BYTES}"),
                ));
            }
        }
        self.transition_task(task_id, "complete_task", |task, now| {
            let mut events = Vec::new();
            let mut started_at = task.view.as_ref().and_then(|view| view.started_at);
            match task.state.status {
                TaskStatus::Completed => return Ok(Vec::new()),
                TaskStatus::Pending | TaskStatus::Enqueued | TaskStatus::Retrying => {
                    events.push(task.start(now)?);
                    started_at = Some(now);
                }
                TaskStatus::Running | TaskStatus::Failed => {}
            }
            let state = events.iter().fold(task.state.clone(), evolve_task);
            let duration_ms = processing_ms.unwrap_or_else(|| {
                started_at.map_or(0, |at| {
                    u64::try_from((now - at).num_milliseconds()).unwrap_or(0)
                })
            });
            events.extend(decide_task(
                &state,
                TaskCommand::CompleteTask {
                    attempt: state.attempt,
                    result: result.clone(),
                    duration_ms,
                    now,
                },
            )?);
            Ok(events)
        })
        .await
    }

    /// An external worker's attempt failed: `TaskFailed` of the current attempt (preceded by
    /// its `TaskStarted` when the worker never reported the start), and `TaskRetryScheduled`
    /// with Shoal's backoff while the attempt budget allows another attempt (RETRYING), else
    /// the task is FAILED. The orchestrator relays the retry to the queue, so it really runs
    /// again. A FAILED task is returned unchanged.
    ///
    /// Errors: unknown task ([`CommandError::NotFound`]); a COMPLETED task
    /// ([`Rejection::TaskTransition`]: a completed task is never moved back); an error message
    /// too long or with NUL characters ([`CommandError::Invalid`], field `error_message`).
    #[tracing::instrument(name = "command.fail_task", skip_all, fields(task_id = %task_id))]
    pub async fn fail_task(
        &self,
        task_id: TaskId,
        error_message: Option<String>,
    ) -> Result<TaskSnapshot, CommandError> {
        let error = match error_message {
            Some(message) => {
                if message.contains('\0') {
                    return Err(CommandError::invalid(
                        "error_message",
                        "error_message must not contain NUL characters",
                    ));
                }
                if message.chars().count() > MAX_ERROR_CHARS {
                    return Err(CommandError::invalid(
                        "error_message",
                        format!("error_message must be at most {MAX_ERROR_CHARS} characters"),
                    ));
                }
                message
            }
            None => DEFAULT_ERROR_MESSAGE.to_owned(),
        };
        self.transition_task(task_id, "fail_task", |task, now| {
            let mut events = Vec::new();
            match task.state.status {
                TaskStatus::Failed => return Ok(Vec::new()),
                TaskStatus::Pending | TaskStatus::Enqueued | TaskStatus::Retrying => {
                    events.push(task.start(now)?);
                }
                TaskStatus::Running | TaskStatus::Completed => {}
            }
            let state = events.iter().fold(task.state.clone(), evolve_task);
            let backoff_ms = retry_backoff(
                state.attempt,
                EXTERNAL_RETRY_BASE_MS,
                EXTERNAL_RETRY_MAX_MS,
                rand::random::<f64>(),
            );
            events.extend(decide_task(
                &state,
                TaskCommand::FailTask {
                    attempt: state.attempt,
                    error: error.clone(),
                    retryable: true,
                    backoff_ms,
                    now,
                },
            )?);
            Ok(events)
        })
        .await
    }

    /// Loads the task, lets `decide` choose the events (none: return the task as it is), and
    /// appends them at the version it was loaded at; on a conflict, loads and decides again.
    async fn transition_task(
        &self,
        task_id: TaskId,
        command: &str,
        decide: impl Fn(&TaskStream, DateTime<Utc>) -> Result<Vec<Event>, CommandError>,
    ) -> Result<TaskSnapshot, CommandError> {
        for _ in 0..CONFLICT_ATTEMPTS {
            let mut task = self.load_task(task_id).await?;
            let events = decide(&task, Utc::now())?;
            if events.is_empty() {
                return task.snapshot();
            }
            match self
                .log
                .append(AppendBatch {
                    streams: vec![StreamAppend {
                        stream_id: task_id.stream_id(),
                        expected: ExpectedVersion::Exact(task.version),
                        events: encode_all(&events, command, self.actor()),
                    }],
                    idempotency_key: None,
                    checkpoint: None,
                })
                .await
            {
                Ok(_) => {
                    for event in &events {
                        task.apply(event, task.version + 1);
                    }
                    return task.snapshot();
                }
                Err(LogError::Conflict { .. }) => continue,
                Err(other) => return Err(other.into()),
            }
        }
        Err(CommandError::Conflict)
    }

    /// Reads and folds a task stream; `NotFound` when it is empty.
    async fn load_task(&self, task_id: TaskId) -> Result<TaskStream, CommandError> {
        let recorded = self.log.read_stream(&task_id.stream_id(), 0).await?;
        if recorded.is_empty() {
            return Err(CommandError::NotFound(format!("Task {task_id} not found")));
        }
        let mut task = TaskStream::default();
        for record in &recorded {
            task.apply(&decode(record)?, record.stream_version);
        }
        Ok(task)
    }
}
