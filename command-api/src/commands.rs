//! The write model: load a stream from the log, decide with the domain, append.
//!
//! [`CommandService`] is what every write API calls (GraphQL now, REST later), so that a REST
//! write and a GraphQL mutation append exactly the same events. It decides only on state folded
//! from the log (never on projections), and a command it refuses appends nothing.
//!
//! Field names in errors ([`CommandError::field`]) are the domain's snake_case names
//! (`total_tasks`, `batch_size`, ...); each API renames them to its own convention.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use serde_json::{Map, Value, json};
use shoal_domain::codec::DecodeError;
use shoal_domain::rejection::code;
use shoal_domain::{
    Event, JobCommand, JobId, JobState, JobStatus, Limits, Rejection, Split, SubmitJob,
    TaskCommand, TaskId, TaskState, TaskStatus, decide_job, decide_task, evolve_job, evolve_task,
    retry_backoff,
};
use shoal_infra::eventlog::{
    AppendBatch, EventLog, ExpectedVersion, LogError, NewEvent, RecordedEvent, StreamAppend,
};
use shoal_infra::queue::TaskQueue;

mod dead_letters;

pub use dead_letters::{DEFAULT_DEAD_LETTER_LIMIT, MAX_DEAD_LETTER_LIMIT, RedriveOutcome};

/// Task streams read, and failed tasks retried, per round trip / per append.
pub const DEFAULT_CHUNK_SIZE: usize = 1_000;

/// How many times a command re-reads and decides again when its append conflicts with a
/// concurrent writer, before it gives up with [`CommandError::Conflict`].
pub const CONFLICT_ATTEMPTS: usize = 5;

/// Longest client idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 256;

/// Longest cancellation reason, in characters.
pub const MAX_REASON_CHARS: usize = 2_000;

/// Items per task when an item split gives no batch size: one task per item.
pub const DEFAULT_BATCH_SIZE: u32 = 1;

/// Worker id recorded in the `TaskStarted` of a task started through the task-transition
/// commands (the REST API's external workers).
pub const EXTERNAL_WORKER: &str = "rest";

/// Longest error message of an externally reported failure, in characters.
pub const MAX_ERROR_CHARS: usize = 10_000;

/// Largest result of an externally completed task, serialized as JSON, in bytes.
pub const MAX_RESULT_BYTES: usize = 1024 * 1024;

/// The error recorded when an external worker reports a failure without a message.
pub const DEFAULT_ERROR_MESSAGE: &str = "failed (no error message given)";

/// Backoff before the next attempt of a task an external worker reported failed: the same
/// exponential backoff as Shoal's workers (base, cap).
const EXTERNAL_RETRY_BASE_MS: u64 = 1_000;
const EXTERNAL_RETRY_MAX_MS: u64 = 60_000;

/// Idempotency keys are global in the log; a command's keys live in their own namespace so a
/// key used for one command can never replay another's result.
const SUBMIT_KEY_NAMESPACE: &str = "submit_job:";

/// Code of [`CommandError::Conflict`].
pub const CONFLICT: &str = "CONFLICT";
/// Code of [`CommandError::Infrastructure`].
pub const INTERNAL: &str = "INTERNAL";

/// Why a command failed, and what the caller does about it. Whatever the variant, a failed
/// command leaves the log as it was, except where [`CommandError::Conflict`] says otherwise.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The domain refused the command for this input or this state (out of range, over a
    /// limit, wrong status). Nothing was appended; the same command gets the same answer, so
    /// do not retry as is. Answer with [`Rejection::code`] (HTTP 422 for input, 409 for a
    /// state) and [`Rejection::field`]; the message is safe to show.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The input is malformed before the domain can judge it (both `total_tasks` and `items`,
    /// neither, a negative number, a NUL character, an unusable idempotency key). Nothing was
    /// appended. HTTP 422 / code `INVALID_INPUT`; fix the input. `field` is snake_case.
    #[error("{message}")]
    Invalid {
        /// The offending input field (snake_case).
        field: &'static str,
        /// What is wrong, safe to show.
        message: String,
    },
    /// The job does not exist (`"Job <id> not found"`). Nothing was appended. HTTP 404 / code
    /// `NOT_FOUND`.
    #[error("{0}")]
    NotFound(String),
    /// Other writers kept changing the streams the command decides on; it re-read and decided
    /// again [`CONFLICT_ATTEMPTS`] times, then gave up. Retryable: send the command again (HTTP
    /// 409 / code `CONFLICT`). For `retry_failed_tasks` with more failed tasks than one chunk,
    /// earlier chunks may already be retried; sending it again retries the rest.
    #[error("the job was changed concurrently; try again")]
    Conflict,
    /// The event log failed, or holds an event this build cannot read. The command may or may
    /// not have been applied: retry later (with the same idempotency key, for a submission).
    /// HTTP 500 / code `INTERNAL`. The message is generic on purpose: log the error (its
    /// `source()` has the details) once at the API's edge and never show them to clients.
    #[error("internal error")]
    Infrastructure(#[source] InfrastructureError),
}

/// What failed below a [`CommandError::Infrastructure`]; for logs only.
#[derive(Debug, thiserror::Error)]
pub enum InfrastructureError {
    /// The log refused or failed an operation.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The task queue failed, or the service has none (see [`CommandService::with_queue`]).
    #[error("task queue: {0}")]
    Queue(String),
    /// A stored event cannot be decoded.
    #[error("cannot decode event {position} of stream {stream_id}: {source}")]
    Decode {
        /// The event's stream.
        stream_id: String,
        /// Its sequence number.
        position: i64,
        /// Why.
        #[source]
        source: DecodeError,
    },
    /// The log holds something the command model cannot explain (a broken invariant).
    #[error("inconsistent event log: {0}")]
    Inconsistent(String),
}

impl CommandError {
    /// A stable machine-readable code: the rejection's code, `INVALID_INPUT`, `NOT_FOUND`,
    /// [`CONFLICT`] or [`INTERNAL`].
    pub fn code(&self) -> &'static str {
        match self {
            Self::Rejected(rejection) => rejection.code(),
            Self::Invalid { .. } => code::INVALID_INPUT,
            Self::NotFound(_) => code::NOT_FOUND,
            Self::Conflict => CONFLICT,
            Self::Infrastructure(_) => INTERNAL,
        }
    }

    /// The input field (snake_case) or state (`"status"`) the error is about; `"job_id"` for an
    /// unknown job; `None` for conflicts and infrastructure errors.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            Self::Rejected(rejection) => Some(rejection.field()),
            Self::Invalid { field, .. } => Some(field),
            Self::NotFound(_) => Some("job_id"),
            Self::Conflict | Self::Infrastructure(_) => None,
        }
    }

    fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            message: message.into(),
        }
    }

    fn not_found(job_id: JobId) -> Self {
        Self::NotFound(format!("Job {job_id} not found"))
    }

    fn inconsistent(message: impl Into<String>) -> Self {
        Self::Infrastructure(InfrastructureError::Inconsistent(message.into()))
    }
}

impl From<LogError> for CommandError {
    fn from(error: LogError) -> Self {
        match error {
            LogError::Conflict { .. } => Self::Conflict,
            other => Self::Infrastructure(InfrastructureError::Log(other)),
        }
    }
}

/// A job submission, as every API gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct SubmitJobInput {
    /// Which handler runs the tasks. May be empty.
    pub job_type: String,
    /// How the job becomes tasks (see [`split_from_input`] to build it from API fields).
    pub split: Split,
    /// A JSON object, or null for none.
    pub parameters: Value,
    /// Attempts per task; `None` for the default (3, capped by the limits).
    pub max_attempts: Option<u32>,
    /// Timeout of one attempt; `None` for the default (300 s, capped by the limits).
    pub timeout_seconds: Option<u32>,
    /// A client-chosen key: submitting again with the same key returns the first job and
    /// appends nothing (whatever the rest of the input is).
    pub idempotency_key: Option<String>,
}

/// An accepted submission.
#[derive(Debug, Clone, PartialEq)]
pub struct SubmittedJob {
    /// The job as its stream now is: PENDING for a new job; for a replay, the first job as it
    /// is now (the orchestrator may have moved it on).
    pub job: JobSnapshot,
    /// True when the idempotency key had been used: nothing was appended and `job` is the job
    /// of the first submission.
    pub replayed: bool,
}

/// What a retry of a job's failed tasks did.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryOutcome {
    /// The job.
    pub job_id: JobId,
    /// How many FAILED tasks were scheduled for another attempt.
    pub retried_tasks: u32,
    /// The job after the retry request.
    pub job: JobSnapshot,
}

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

/// Builds a [`Split`] from an API's fields: `total_tasks`, or `items` cut into batches of
/// `batch_size` (default [`DEFAULT_BATCH_SIZE`]). Exactly one of `total_tasks` and `items` must
/// be given, and `batch_size` only with `items`. Ranges and limits are the domain's to check;
/// only negative numbers are refused here.
pub fn split_from_input(
    total_tasks: Option<i64>,
    items: Option<Vec<Value>>,
    batch_size: Option<i64>,
) -> Result<Split, CommandError> {
    match (total_tasks, items) {
        (Some(_), Some(_)) => Err(CommandError::invalid(
            "items",
            "give either total_tasks or items (with batch_size), not both",
        )),
        (None, None) => Err(CommandError::invalid(
            "total_tasks",
            "either total_tasks or items is required",
        )),
        (Some(total), None) => {
            if batch_size.is_some() {
                return Err(CommandError::invalid(
                    "batch_size",
                    "batch_size applies only to items, not to total_tasks",
                ));
            }
            Ok(Split::Total {
                total_tasks: count("total_tasks", total)?,
            })
        }
        (None, Some(items)) => Ok(Split::Items {
            items,
            batch_size: match batch_size {
                Some(size) => count("batch_size", size)?,
                None => DEFAULT_BATCH_SIZE,
            },
        }),
    }
}

/// A non-negative API integer as the domain's `u32`. Negative is invalid; above `u32::MAX`
/// saturates, so the domain reports it against its limit.
pub fn count(field: &'static str, value: i64) -> Result<u32, CommandError> {
    if value < 0 {
        return Err(CommandError::invalid(
            field,
            format!("{field} must not be negative, got {value}"),
        ));
    }
    Ok(u32::try_from(value).unwrap_or(u32::MAX))
}

/// Takes commands, decides them on state folded from the log, appends the events.
/// Cheap to clone (an `Arc` and a few numbers).
#[derive(Debug, Clone)]
pub struct CommandService {
    log: Arc<dyn EventLog>,
    limits: Limits,
    chunk_size: usize,
    /// The task queue, for the dead-letter commands (see [`CommandService::with_queue`]).
    queue: Option<Arc<dyn TaskQueue>>,
}

impl CommandService {
    /// A service appending to `log`, checking submissions against `limits`.
    pub fn new(log: Arc<dyn EventLog>, limits: Limits) -> Self {
        Self {
            log,
            limits,
            chunk_size: DEFAULT_CHUNK_SIZE,
            queue: None,
        }
    }

    /// Gives the service the task queue, which the dead-letter commands
    /// ([`CommandService::dead_letters`], [`CommandService::redrive_dead_letters`]) need.
    pub fn with_queue(mut self, queue: Arc<dyn TaskQueue>) -> Self {
        self.queue = Some(queue);
        self
    }

    /// Sets how many task streams are read per round trip, and failed tasks retried per
    /// append (default [`DEFAULT_CHUNK_SIZE`]; at least 1).
    pub fn with_chunk_size(mut self, chunk_size: usize) -> Self {
        self.chunk_size = chunk_size.max(1);
        self
    }

    /// The limits submissions are checked against.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The log this service appends to.
    pub fn log(&self) -> &Arc<dyn EventLog> {
        &self.log
    }

    /// Accepts a job: one `JobSubmitted` in a new stream `job-<id>`, with a fresh v7 id.
    ///
    /// It never waits for tasks: a job of a million tasks is one event, and the orchestrator
    /// expands it afterwards. With an idempotency key that was used before, nothing is
    /// appended and the first job is returned (`replayed`).
    #[tracing::instrument(name = "command.submit_job", skip_all, fields(job_type = %input.job_type))]
    pub async fn submit_job(&self, input: SubmitJobInput) -> Result<SubmittedJob, CommandError> {
        check_no_nul(&input)?;
        let idempotency_key = match input.idempotency_key {
            Some(key) => Some(submit_key(&key)?),
            None => None,
        };
        let job_id = JobId::new();
        let events = decide_job(
            &JobState::default(),
            JobCommand::SubmitJob(SubmitJob {
                job_id,
                job_type: input.job_type,
                split: input.split,
                parameters: input.parameters,
                max_attempts: input.max_attempts,
                timeout_seconds: input.timeout_seconds,
                limits: self.limits,
                now: Utc::now(),
            }),
        )?;
        let outcome = self
            .log
            .append(AppendBatch {
                streams: vec![StreamAppend {
                    stream_id: job_id.stream_id(),
                    expected: ExpectedVersion::NoStream,
                    events: encode_all(&events, "submit_job"),
                }],
                idempotency_key,
                checkpoint: None,
            })
            .await?;
        if outcome.replayed {
            let first_job = self.job_of_first_submission(&outcome.positions).await?;
            tracing::debug!(job_id = %first_job, "idempotent submission replayed");
            let job = self.load_job(first_job).await?.snapshot(first_job)?;
            return Ok(SubmittedJob {
                job,
                replayed: true,
            });
        }
        let mut job = JobStream::default();
        for (version, event) in (1..).zip(&events) {
            job.apply(event, version);
        }
        Ok(SubmittedJob {
            job: job.snapshot(job_id)?,
            replayed: false,
        })
    }

    /// Cancels a live job: `JobCancelled`. No further tasks are created; tasks already queued
    /// are left to the orchestrator and workers.
    ///
    /// Errors: unknown job ([`CommandError::NotFound`]); an ended or already cancelled job
    /// ([`Rejection::JobTransition`], [`Rejection::JobAlreadyCancelled`]).
    #[tracing::instrument(name = "command.cancel_job", skip_all, fields(job_id = %job_id))]
    pub async fn cancel_job(
        &self,
        job_id: JobId,
        reason: Option<String>,
    ) -> Result<JobSnapshot, CommandError> {
        if let Some(reason) = &reason {
            if reason.contains('\0') {
                return Err(CommandError::invalid(
                    "reason",
                    "reason must not contain NUL characters",
                ));
            }
            if reason.chars().count() > MAX_REASON_CHARS {
                return Err(CommandError::invalid(
                    "reason",
                    format!("reason must be at most {MAX_REASON_CHARS} characters"),
                ));
            }
        }
        for _ in 0..CONFLICT_ATTEMPTS {
            let mut job = self.load_job(job_id).await?;
            let events = decide_job(
                &job.state,
                JobCommand::CancelJob {
                    reason: reason.clone(),
                    now: Utc::now(),
                },
            )?;
            match self
                .append_to_job(&job, encode_all(&events, "cancel_job"), Vec::new())
                .await
            {
                Ok(()) => {
                    for event in &events {
                        job.apply(event, job.version + 1);
                    }
                    return job.snapshot(job_id);
                }
                Err(CommandError::Conflict) => continue,
                Err(other) => return Err(other),
            }
        }
        Err(CommandError::Conflict)
    }

    /// Retries every FAILED task of a job: a manual `TaskRetryScheduled` (fresh attempt budget,
    /// due now) in each failed task's stream, and one `JobRetryRequested` in the job's stream.
    /// The orchestrator relays the retries to the queue and the job runs again.
    ///
    /// Failed tasks are retried in appends of at most the chunk size; the first append also
    /// carries `JobRetryRequested` at the job stream's version, so two concurrent requests
    /// cannot both retry the same tasks.
    ///
    /// Errors: unknown job ([`CommandError::NotFound`]); no failed task
    /// ([`Rejection::NothingToRetry`]); a job in a status that cannot retry (PENDING,
    /// COMPLETED, CANCELLED: [`Rejection::JobTransition`]).
    #[tracing::instrument(name = "command.retry_failed_tasks", skip_all, fields(job_id = %job_id))]
    pub async fn retry_failed_tasks(&self, job_id: JobId) -> Result<RetryOutcome, CommandError> {
        for _ in 0..CONFLICT_ATTEMPTS {
            let mut job = self.load_job(job_id).await?;
            let task_ids: Vec<TaskId> = (0..job.state.created_upto)
                .map(|index| TaskId::for_task(job_id, index))
                .collect();
            let failed = self.failed_tasks(&task_ids).await?;
            let now = Utc::now();
            let failed_count = u32::try_from(failed.len())
                .map_err(|_| CommandError::inconsistent("more failed tasks than u32"))?;
            let job_events = decide_job(
                &job.state,
                JobCommand::RequestRetry {
                    failed_tasks: failed_count,
                    now,
                },
            )?;
            let mut chunks = failed.chunks(self.chunk_size);
            let first = chunks.next().unwrap_or_default();
            match self
                .append_to_job(
                    &job,
                    encode_all(&job_events, "retry_failed_tasks"),
                    retry_appends(first, now)?,
                )
                .await
            {
                Ok(()) => {}
                Err(CommandError::Conflict) => continue,
                Err(other) => return Err(other),
            }
            for event in &job_events {
                job.apply(event, job.version + 1);
            }
            let mut retried = first.len();
            for chunk in chunks {
                retried += self.retry_chunk(chunk).await?;
            }
            return Ok(RetryOutcome {
                job_id,
                retried_tasks: u32::try_from(retried).unwrap_or(u32::MAX),
                job: job.snapshot(job_id)?,
            });
        }
        Err(CommandError::Conflict)
    }

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
            let mut started_at = task.started_at;
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
                        events: encode_all(&events, command),
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

    /// The job as its stream tells it ([`CommandError::NotFound`] when it does not exist).
    pub async fn job_snapshot(&self, job_id: JobId) -> Result<JobSnapshot, CommandError> {
        self.load_job(job_id).await?.snapshot(job_id)
    }

    /// Reads and folds a job stream; `NotFound` when it is empty.
    async fn load_job(&self, job_id: JobId) -> Result<JobStream, CommandError> {
        let recorded = self.log.read_stream(&job_id.stream_id(), 0).await?;
        if recorded.is_empty() {
            return Err(CommandError::not_found(job_id));
        }
        let mut job = JobStream::default();
        for record in &recorded {
            job.apply(&decode(record)?, record.stream_version);
        }
        Ok(job)
    }

    /// Appends `job_events` to the job stream at the version it was loaded at, together with
    /// `tasks` (other streams), in one transaction.
    async fn append_to_job(
        &self,
        job: &JobStream,
        job_events: Vec<NewEvent>,
        mut tasks: Vec<StreamAppend>,
    ) -> Result<(), CommandError> {
        let job_id = job
            .state
            .job_id()
            .ok_or_else(|| CommandError::inconsistent("job stream without JobSubmitted"))?;
        let mut streams = vec![StreamAppend {
            stream_id: job_id.stream_id(),
            expected: ExpectedVersion::Exact(job.version),
            events: job_events,
        }];
        streams.append(&mut tasks);
        self.log
            .append(AppendBatch {
                streams,
                idempotency_key: None,
                checkpoint: None,
            })
            .await?;
        Ok(())
    }

    /// The FAILED tasks among `task_ids`, with their stream versions, in index order.
    async fn failed_tasks(&self, task_ids: &[TaskId]) -> Result<Vec<LoadedTask>, CommandError> {
        let chunks: Vec<Vec<String>> = task_ids
            .chunks(self.chunk_size)
            .map(|chunk| chunk.iter().map(TaskId::stream_id).collect())
            .collect();
        let loaded: Vec<Vec<LoadedTask>> = futures::stream::iter(chunks)
            .map(|stream_ids| async move {
                let recorded = self.log.read_streams(&stream_ids).await?;
                fold_tasks(&recorded)
            })
            .buffered(4)
            .try_collect()
            .await?;
        Ok(loaded
            .into_iter()
            .flatten()
            .filter(|task| task.state.status == TaskStatus::Failed)
            .collect())
    }

    /// Retries the tasks of `chunk` that are still FAILED, in one append; on a conflict
    /// (a task changed meanwhile, e.g. was dead-lettered), re-reads them and tries again.
    /// Returns how many were retried.
    async fn retry_chunk(&self, chunk: &[LoadedTask]) -> Result<usize, CommandError> {
        let mut pending = chunk.to_vec();
        for _ in 0..CONFLICT_ATTEMPTS {
            if pending.is_empty() {
                return Ok(0);
            }
            let now = Utc::now();
            let streams = retry_appends(&pending, now)?;
            match self
                .log
                .append(AppendBatch {
                    streams,
                    idempotency_key: None,
                    checkpoint: None,
                })
                .await
            {
                Ok(_) => return Ok(pending.len()),
                Err(LogError::Conflict { .. }) => {
                    let ids: Vec<TaskId> = pending.iter().map(|task| task.task_id).collect();
                    pending = self.failed_tasks(&ids).await?;
                }
                Err(other) => return Err(other.into()),
            }
        }
        Err(CommandError::Conflict)
    }

    /// The job id of the `JobSubmitted` a replayed submission's first append wrote.
    async fn job_of_first_submission(&self, positions: &[i64]) -> Result<JobId, CommandError> {
        let first = positions
            .first()
            .ok_or_else(|| CommandError::inconsistent("replayed append without positions"))?;
        let recorded = self.log.read_positions(&[*first]).await?;
        let record = recorded.first().ok_or_else(|| {
            CommandError::inconsistent(format!("replayed append's event {first} is missing"))
        })?;
        match decode(record)? {
            Event::JobSubmitted(e) => Ok(e.job_id),
            other => Err(CommandError::inconsistent(format!(
                "a submission's idempotency key points at a {} event",
                other.event_type()
            ))),
        }
    }
}

/// A job stream folded, with what [`JobSnapshot`] needs beyond [`JobState`].
#[derive(Debug, Default)]
struct JobStream {
    state: JobState,
    version: i64,
    updated_at: Option<DateTime<Utc>>,
    ended_at: Option<DateTime<Utc>>,
    cancel_reason: Option<String>,
}

impl JobStream {
    fn apply(&mut self, event: &Event, version: i64) {
        self.state = evolve_job(std::mem::take(&mut self.state), event);
        self.version = version;
        self.updated_at = Some(event.at());
        match event {
            Event::JobCompleted(e) => self.ended_at = Some(e.at),
            Event::JobFailed(e) => self.ended_at = Some(e.at),
            Event::JobCancelled(e) => {
                self.ended_at = Some(e.at);
                self.cancel_reason.clone_from(&e.reason);
            }
            Event::JobRetryRequested(_) => self.ended_at = None,
            _ => {}
        }
    }

    fn snapshot(&self, job_id: JobId) -> Result<JobSnapshot, CommandError> {
        let job = self.state.submitted.as_ref().ok_or_else(|| {
            CommandError::inconsistent(format!("stream of job {job_id} has no JobSubmitted"))
        })?;
        Ok(JobSnapshot {
            job_id: job.job_id,
            job_type: job.job_type.clone(),
            status: self.state.status,
            total_tasks: job.total_tasks,
            tasks_created: self.state.created_upto,
            batch_size: match &job.split {
                Split::Items { batch_size, .. } => Some(*batch_size),
                Split::Total { .. } => None,
            },
            parameters: job.parameters.clone(),
            max_attempts: job.max_attempts,
            timeout_seconds: job.timeout_seconds,
            submitted_at: job.submitted_at,
            updated_at: self.updated_at.unwrap_or(job.submitted_at),
            ended_at: self.ended_at,
            cancel_reason: self.cancel_reason.clone(),
            version: self.version,
        })
    }
}

/// A task stream folded, with what [`TaskSnapshot`] needs beyond [`TaskState`].
#[derive(Debug, Default)]
struct TaskStream {
    state: TaskState,
    version: i64,
    updated_at: Option<DateTime<Utc>>,
    started_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
    result: Option<Value>,
    duration_ms: Option<u64>,
}

impl TaskStream {
    fn apply(&mut self, event: &Event, version: i64) {
        self.state = evolve_task(std::mem::take(&mut self.state), event);
        self.version = version;
        self.updated_at = Some(event.at());
        match event {
            Event::TaskStarted(e) => self.started_at = Some(e.at),
            Event::TaskCompleted(e) => {
                self.completed_at = Some(e.at);
                self.result.clone_from(&e.result);
                self.duration_ms = Some(e.duration_ms);
                self.state.last_error = None;
            }
            Event::TaskFailed(e) if e.final_failure => self.completed_at = Some(e.at),
            Event::TaskRetryScheduled(_) => self.completed_at = None,
            _ => {}
        }
    }

    /// `TaskStarted` of the current attempt by an external worker.
    fn start(&self, now: DateTime<Utc>) -> Result<Event, CommandError> {
        let mut events = decide_task(
            &self.state,
            TaskCommand::StartTask {
                attempt: self.state.attempt,
                worker: EXTERNAL_WORKER.to_owned(),
                now,
            },
        )?;
        events
            .pop()
            .ok_or_else(|| CommandError::inconsistent("StartTask decided no event"))
    }

    fn snapshot(&self) -> Result<TaskSnapshot, CommandError> {
        let task = self
            .state
            .enqueued
            .as_ref()
            .ok_or_else(|| CommandError::inconsistent("task stream without TaskEnqueued"))?;
        Ok(TaskSnapshot {
            task_id: task.task_id,
            job_id: task.job_id,
            index: task.index,
            status: self.state.status,
            attempt: self.state.attempt,
            max_attempts: task.max_attempts,
            parameters: task.input.clone(),
            result: self.result.clone(),
            error_message: self.state.last_error.clone(),
            worker: self.state.worker.clone(),
            created_at: task.at,
            updated_at: self.updated_at.unwrap_or(task.at),
            started_at: self.started_at,
            completed_at: self.completed_at,
            duration_ms: self.duration_ms,
            version: self.version,
        })
    }
}

/// A task stream folded, at its version.
#[derive(Debug, Clone)]
struct LoadedTask {
    task_id: TaskId,
    state: TaskState,
    version: i64,
}

/// Folds the events of several task streams (grouped by stream, as `read_streams` returns
/// them), in stream order.
fn fold_tasks(recorded: &[RecordedEvent]) -> Result<Vec<LoadedTask>, CommandError> {
    let mut tasks: Vec<LoadedTask> = Vec::new();
    let mut index_of: HashMap<&str, usize> = HashMap::new();
    for record in recorded {
        let event = decode(record)?;
        let slot = match index_of.get(record.stream_id.as_str()) {
            Some(&slot) => slot,
            None => {
                let task_id = event.task_id().ok_or_else(|| {
                    CommandError::inconsistent(format!(
                        "task stream {} holds a {} event",
                        record.stream_id,
                        event.event_type()
                    ))
                })?;
                tasks.push(LoadedTask {
                    task_id,
                    state: TaskState::default(),
                    version: 0,
                });
                index_of.insert(&record.stream_id, tasks.len() - 1);
                tasks.len() - 1
            }
        };
        let task = &mut tasks[slot];
        task.state = evolve_task(std::mem::take(&mut task.state), &event);
        task.version = record.stream_version;
    }
    Ok(tasks)
}

/// One append per task: its manual `TaskRetryScheduled`, at the version it was read at.
fn retry_appends(
    tasks: &[LoadedTask],
    now: DateTime<Utc>,
) -> Result<Vec<StreamAppend>, CommandError> {
    tasks
        .iter()
        .map(|task| {
            let events = decide_task(&task.state, TaskCommand::RetryTask { now })?;
            Ok(StreamAppend {
                stream_id: task.task_id.stream_id(),
                expected: ExpectedVersion::Exact(task.version),
                events: encode_all(&events, "retry_failed_tasks"),
            })
        })
        .collect()
}

fn decode(record: &RecordedEvent) -> Result<Event, CommandError> {
    Event::decode(&record.event_type, record.schema_version, record.data.get()).map_err(|source| {
        CommandError::Infrastructure(InfrastructureError::Decode {
            stream_id: record.stream_id.clone(),
            position: record.log_position.position,
            source,
        })
    })
}

fn encode_all(events: &[Event], command: &str) -> Vec<NewEvent> {
    events
        .iter()
        .map(|event| {
            let encoded = event.encode();
            NewEvent {
                event_type: encoded.event_type.to_owned(),
                schema_version: encoded.schema_version,
                data: encoded.data,
                metadata: match shoal_infra::telemetry::trace::current_traceparent() {
                    Some(traceparent) => json!({ "command": command, "traceparent": traceparent }),
                    None => json!({ "command": command }),
                },
            }
        })
        .collect()
}

/// The log's idempotency key for a client's submission key.
fn submit_key(key: &str) -> Result<String, CommandError> {
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_BYTES {
        return Err(CommandError::invalid(
            "idempotency_key",
            format!("idempotency_key must be 1 to {MAX_IDEMPOTENCY_KEY_BYTES} bytes long"),
        ));
    }
    if key.contains('\0') {
        return Err(CommandError::invalid(
            "idempotency_key",
            "idempotency_key must not contain NUL characters",
        ));
    }
    Ok(format!("{SUBMIT_KEY_NAMESPACE}{key}"))
}

/// The log cannot store NUL characters (Postgres text); refuse them as bad input rather than
/// let the append fail as an internal error.
fn check_no_nul(input: &SubmitJobInput) -> Result<(), CommandError> {
    let nul = |field: &'static str| {
        Err(CommandError::invalid(
            field,
            format!("{field} must not contain NUL characters"),
        ))
    };
    if input.job_type.contains('\0') {
        return nul("job_type");
    }
    if contains_nul(&input.parameters) {
        return nul("parameters");
    }
    if let Split::Items { items, .. } = &input.split
        && items.iter().any(contains_nul)
    {
        return nul("items");
    }
    Ok(())
}

fn contains_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(contains_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || contains_nul(v)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_needs_exactly_one_of_total_and_items() {
        assert_eq!(
            split_from_input(Some(3), None, None).unwrap(),
            Split::Total { total_tasks: 3 }
        );
        assert_eq!(
            split_from_input(None, Some(vec![json!(1)]), None).unwrap(),
            Split::Items {
                items: vec![json!(1)],
                batch_size: 1
            }
        );
        let field = |r: Result<Split, CommandError>| r.unwrap_err().field();
        assert_eq!(
            field(split_from_input(Some(1), Some(vec![]), None)),
            Some("items")
        );
        assert_eq!(
            field(split_from_input(None, None, None)),
            Some("total_tasks")
        );
        assert_eq!(
            field(split_from_input(Some(1), None, Some(2))),
            Some("batch_size")
        );
        assert_eq!(
            field(split_from_input(Some(-1), None, None)),
            Some("total_tasks")
        );
        assert_eq!(
            split_from_input(Some(i64::MAX), None, None).unwrap(),
            Split::Total {
                total_tasks: u32::MAX
            }
        );
    }

    #[test]
    fn codes_and_fields() {
        let e = CommandError::from(Rejection::ItemsEmpty);
        assert_eq!((e.code(), e.field()), ("INVALID_INPUT", Some("items")));
        let e = CommandError::not_found(JobId::new());
        assert_eq!((e.code(), e.field()), ("NOT_FOUND", Some("job_id")));
        assert!(e.to_string().starts_with("Job ") && e.to_string().ends_with(" not found"));
        let e = CommandError::inconsistent("secret detail");
        assert_eq!(e.code(), "INTERNAL");
        assert_eq!(e.to_string(), "internal error");
        assert_eq!(CommandError::Conflict.code(), "CONFLICT");
    }

    #[test]
    fn idempotency_keys_are_namespaced_and_checked() {
        assert_eq!(submit_key("k1").unwrap(), "submit_job:k1");
        assert!(submit_key("").is_err());
        assert!(submit_key(&"x".repeat(MAX_IDEMPOTENCY_KEY_BYTES + 1)).is_err());
        assert!(submit_key("a\0b").is_err());
    }
}
