//! The events of the log: what happened, in the past tense.
//!
//! Job-level events live in the stream `job-<id>`, task events in `task-<id>`. Every event is
//! self-describing: it carries its `job_id` (and a task event its `task_id` and `index`), so a
//! reader of the whole log never needs another lookup to route it. The payload structs'
//! serialized forms are the stored format: a change to a field is a new schema version with an
//! upcast in [`crate::codec`], never an edit in place.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::ids::{JobId, StreamRef, TaskId};
use crate::split::Split;

/// A job was accepted. First event of `job-<id>`; the job is PENDING.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSubmitted {
    /// The job.
    pub job_id: JobId,
    /// Which handler runs its tasks. May be empty (the original allowed it).
    pub job_type: String,
    /// How it becomes tasks.
    pub split: Split,
    /// Parameters given to every task (an empty object when none were given).
    pub parameters: Map<String, Value>,
    /// Attempts each task gets before it is FAILED (>= 1).
    pub max_attempts: u32,
    /// How long one attempt may run.
    pub timeout_seconds: u32,
    /// `split.task_count()`, denormalized for readers.
    pub total_tasks: u32,
    /// When it was accepted.
    pub submitted_at: DateTime<Utc>,
    /// The handler for its tasks when no worker registered one under `job_type` and
    /// `parameters.work_type` names none (`cpu_bound` for jobs of the original system's REST
    /// API; absent otherwise, and in events written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_handler: Option<String>,
    /// Its priority: higher runs first (see [`crate::priority`]). Absent when it is the default
    /// 0, and in events written before priorities existed, which read back as 0.
    #[serde(default, skip_serializing_if = "crate::priority::is_default")]
    pub priority: i32,
}

/// Tasks `from_index..to_index` (end exclusive) were created: one per expansion chunk, in the
/// job stream, appended with an expected version together with the chunk's `TaskEnqueued`
/// events. It is what makes expansion resumable and duplicate-free. `to_index == total_tasks`
/// means expansion is done (the job is ENQUEUED), otherwise it is CREATING_TASKS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TasksCreated {
    /// The job.
    pub job_id: JobId,
    /// First index of the chunk.
    pub from_index: u32,
    /// One past the last index of the chunk.
    pub to_index: u32,
    /// When the chunk was created.
    pub at: DateTime<Utc>,
}

/// Every task of the job completed. The job is COMPLETED, for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobCompleted {
    /// The job.
    pub job_id: JobId,
    /// When.
    pub at: DateTime<Utc>,
}

/// Every task of the job is terminal and `failed_tasks` of them FAILED. The job is FAILED
/// (a later [`JobRetryRequested`] can bring it back to RUNNING).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobFailed {
    /// The job.
    pub job_id: JobId,
    /// How many tasks FAILED.
    pub failed_tasks: u32,
    /// When.
    pub at: DateTime<Utc>,
}

/// The job was cancelled: no further tasks are created and it never completes or fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobCancelled {
    /// The job.
    pub job_id: JobId,
    /// Why, as given by the user.
    pub reason: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// A user asked to retry the job's `tasks` failed tasks; each gets a manual
/// [`TaskRetryScheduled`] in its own stream. A FAILED or ENQUEUED job is RUNNING again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRetryRequested {
    /// The job.
    pub job_id: JobId,
    /// How many failed tasks are retried.
    pub tasks: u32,
    /// When.
    pub at: DateTime<Utc>,
}

/// A task exists and is ready to be sent to the queue: first event of `task-<id>`, status
/// ENQUEUED. It carries everything a worker needs, so the outbox relay builds the queue message
/// from it alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskEnqueued {
    /// Its job.
    pub job_id: JobId,
    /// The task (`TaskId::for_task(job_id, index)` for tasks Shoal created).
    pub task_id: TaskId,
    /// Its position in the job, from 0.
    pub index: u32,
    /// The job's type: which handler runs it.
    pub job_type: String,
    /// The task's parameters: the job's parameters, plus its `"items"` batch for item splits.
    pub input: Value,
    /// The first attempt's number (always 1).
    pub attempt: u32,
    /// Attempts the task gets.
    pub max_attempts: u32,
    /// How long one attempt may run.
    pub timeout_seconds: u32,
    /// When.
    pub at: DateTime<Utc>,
    /// The handler for its tasks when no worker registered one under `job_type` and
    /// `parameters.work_type` names none (`cpu_bound` for jobs of the original system's REST
    /// API; absent otherwise, and in events written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_handler: Option<String>,
}

/// A worker started `attempt` of the task: RUNNING. Only one `TaskStarted` per attempt exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStarted {
    /// Its job.
    pub job_id: JobId,
    /// The task.
    pub task_id: TaskId,
    /// Its position in the job.
    pub index: u32,
    /// The attempt that started (1 = first).
    pub attempt: u32,
    /// Who runs it (worker id).
    pub worker: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// `attempt` succeeded: COMPLETED, for good.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskCompleted {
    /// Its job.
    pub job_id: JobId,
    /// The task.
    pub task_id: TaskId,
    /// Its position in the job.
    pub index: u32,
    /// The attempt that succeeded.
    pub attempt: u32,
    /// What the handler returned.
    pub result: Option<Value>,
    /// How long the attempt ran.
    pub duration_ms: u64,
    /// When.
    pub at: DateTime<Utc>,
}

/// `attempt` failed. `final_failure`: the task is FAILED; otherwise it is RETRYING and a
/// [`TaskRetryScheduled`] follows in the same append.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFailed {
    /// Its job.
    pub job_id: JobId,
    /// The task.
    pub task_id: TaskId,
    /// Its position in the job.
    pub index: u32,
    /// The attempt that failed.
    pub attempt: u32,
    /// What went wrong.
    pub error: String,
    /// True: status FAILED. False: a retry follows.
    pub final_failure: bool,
    /// When.
    pub at: DateTime<Utc>,
}

/// Attempt `attempt` (the new number) will run no earlier than `not_before`: RETRYING.
/// `manual`: a user retried a FAILED task, which gets a fresh budget of `max_attempts`;
/// otherwise it follows a non-final [`TaskFailed`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRetryScheduled {
    /// Its job.
    pub job_id: JobId,
    /// The task.
    pub task_id: TaskId,
    /// Its position in the job.
    pub index: u32,
    /// The number of the attempt to come.
    pub attempt: u32,
    /// Earliest start of that attempt (the backoff).
    pub not_before: DateTime<Utc>,
    /// Asked for by a user, rather than an automatic retry.
    pub manual: bool,
    /// When.
    pub at: DateTime<Utc>,
}

/// The FAILED task's message went to the dead-letter queue. The status stays FAILED.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskDeadLettered {
    /// Its job.
    pub job_id: JobId,
    /// The task.
    pub task_id: TaskId,
    /// Its position in the job.
    pub index: u32,
    /// The attempt that failed last.
    pub attempt: u32,
    /// Why it was dead-lettered.
    pub reason: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// The task's current attempt had no live queue message (it was lost, or dead-lettered after
/// too many receives before any worker started it), so a new one is sent: the orchestrator's
/// reconciler appends this, and its relay sends the message. The status does not change
/// (ENQUEUED or RETRYING).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRequeued {
    /// Its job.
    pub job_id: JobId,
    /// The task.
    pub task_id: TaskId,
    /// Its position in the job.
    pub index: u32,
    /// The attempt the new message is for (the current one).
    pub attempt: u32,
    /// Earliest start of that attempt, when it is a retry's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<DateTime<Utc>>,
    /// Why the message was sent again.
    pub reason: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// The Step Functions driver started the job's execution (one per job; a retry of a FAILED
/// job's tasks starts another). Bookkeeping of that driver: it changes no status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobExecutionStarted {
    /// The job.
    pub job_id: JobId,
    /// The execution's ARN (`arn:aws:states:<region>:<account>:execution:<machine>:<name>`).
    pub execution_arn: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// A transition of a state of the job's Step Functions execution (`CreateTasks`,
/// `EnqueueTasks`, `Monitor`, `CompleteJob`, `FailJob`), as the driver saw it: the payload of
/// `JobStepStarted`, `JobStepSucceeded`, `JobStepRetried` and `JobStepFailed`. Bookkeeping of
/// that driver: it changes no status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStep {
    /// The job.
    pub job_id: JobId,
    /// The state machine's state.
    pub step: String,
    /// Which try of the state this is (0 = first; Step Functions' `RetryCount`).
    pub retry_count: u32,
    /// The step's result or error, for the history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// An API token was created (`shoal token create`). First event of the stream
/// `token-<token_id>`. The secret itself is never in the log: only the server's table keeps its
/// hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenCreated {
    /// The token.
    pub token_id: Uuid,
    /// Its name: the actor recorded on every command it issues.
    pub name: String,
    /// What it may do (`read`, `submit`, `operate`, `worker`, `admin`).
    pub scopes: Vec<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// An API token was revoked (`shoal token revoke`): it is refused from then on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRevoked {
    /// The token.
    pub token_id: Uuid,
    /// Its name.
    pub name: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// A user changed the job's priority (see [`crate::priority`]): its tasks still waiting in
/// the queue, and those queued later, are taken in the new order. It changes no status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobPriorityChanged {
    /// The job.
    pub job_id: JobId,
    /// The new priority.
    pub priority: i32,
    /// The priority before the change.
    pub previous: i32,
    /// When.
    pub at: DateTime<Utc>,
}

/// The orchestrator admitted `attempt` of a task whose job is subject to admission (a
/// concurrency or rate limit, or the fair-share window of a queue that cannot reorder): the
/// task's message for that attempt is sent to the queue from this event on, as the outbox
/// relay reads it. While it waits for admission the task stays ENQUEUED (or RETRYING) with no
/// message; its slot is taken from this event until the attempt ends (or is retried). The
/// status does not change. See `docs/limits-and-rates.md`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskReleased {
    /// Its job.
    pub job_id: JobId,
    /// The task.
    pub task_id: TaskId,
    /// Its position in the job.
    pub index: u32,
    /// The attempt admitted (the current one).
    pub attempt: u32,
    /// When.
    pub at: DateTime<Utc>,
}

/// What a cluster-wide limit applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LimitKind {
    /// Every task of the jobs of one job type (`name` is the type).
    JobType,
    /// Every task of the jobs whose concurrency key is `name` (`*`: each key on its own).
    Key,
}

/// A cluster-wide limit was set, changed or removed (both values `None`), in the stream
/// `limits`. Each `LimitSet` replaces the whole limit of its (kind, name).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LimitSet {
    /// What it applies to.
    pub kind: LimitKind,
    /// The job type or the key (`*` for every key, each on its own).
    pub name: String,
    /// Most tasks of that type or key admitted and not ended at any instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    /// Most tasks of that type or key admitted per second (a token bucket of one second's
    /// worth, at least one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_per_second: Option<f64>,
    /// When.
    pub at: DateTime<Utc>,
}

/// The job's own concurrency settings, given at submission (appended with its `JobSubmitted`,
/// in the job stream): at most `max_concurrency` of its tasks admitted and not ended at once,
/// and its concurrency key, the value of its parameter `key_parameter`, which the limits of
/// that key apply to. It changes no status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobConcurrencySet {
    /// The job.
    pub job_id: JobId,
    /// Most of its tasks admitted and not ended at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    /// Its concurrency key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_key: Option<String>,
    /// The parameter the key was taken from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_parameter: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// Every event of the log. The variant name is the stored event type (see
/// [`Event::event_type`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// See [`JobSubmitted`].
    JobSubmitted(JobSubmitted),
    /// See [`TasksCreated`].
    TasksCreated(TasksCreated),
    /// See [`JobCompleted`].
    JobCompleted(JobCompleted),
    /// See [`JobFailed`].
    JobFailed(JobFailed),
    /// See [`JobCancelled`].
    JobCancelled(JobCancelled),
    /// See [`JobRetryRequested`].
    JobRetryRequested(JobRetryRequested),
    /// See [`TaskEnqueued`].
    TaskEnqueued(TaskEnqueued),
    /// See [`TaskStarted`].
    TaskStarted(TaskStarted),
    /// See [`TaskCompleted`].
    TaskCompleted(TaskCompleted),
    /// See [`TaskFailed`].
    TaskFailed(TaskFailed),
    /// See [`TaskRetryScheduled`].
    TaskRetryScheduled(TaskRetryScheduled),
    /// See [`TaskDeadLettered`].
    TaskDeadLettered(TaskDeadLettered),
    /// See [`JobExecutionStarted`].
    JobExecutionStarted(JobExecutionStarted),
    /// A state of the job's execution started (see [`JobStep`]).
    JobStepStarted(JobStep),
    /// A state of the job's execution succeeded (see [`JobStep`]).
    JobStepSucceeded(JobStep),
    /// A state of the job's execution is tried again after a failure or a timeout (see
    /// [`JobStep`]).
    JobStepRetried(JobStep),
    /// A state of the job's execution failed for good (see [`JobStep`]).
    JobStepFailed(JobStep),
    /// See [`TaskRequeued`].
    TaskRequeued(TaskRequeued),
    /// See [`TokenCreated`].
    TokenCreated(TokenCreated),
    /// See [`TokenRevoked`].
    TokenRevoked(TokenRevoked),
    /// See [`JobPriorityChanged`].
    JobPriorityChanged(JobPriorityChanged),
    /// See [`TaskReleased`].
    TaskReleased(TaskReleased),
    /// See [`LimitSet`].
    LimitSet(LimitSet),
    /// See [`JobConcurrencySet`].
    JobConcurrencySet(JobConcurrencySet),
}

impl Event {
    /// The job this event belongs to; `None` for the events that are about no job (API
    /// tokens).
    pub fn job_id(&self) -> Option<JobId> {
        Some(match self {
            Self::JobSubmitted(e) => e.job_id,
            Self::TasksCreated(e) => e.job_id,
            Self::JobCompleted(e) => e.job_id,
            Self::JobFailed(e) => e.job_id,
            Self::JobCancelled(e) => e.job_id,
            Self::JobRetryRequested(e) => e.job_id,
            Self::TaskEnqueued(e) => e.job_id,
            Self::TaskStarted(e) => e.job_id,
            Self::TaskCompleted(e) => e.job_id,
            Self::TaskFailed(e) => e.job_id,
            Self::TaskRetryScheduled(e) => e.job_id,
            Self::TaskDeadLettered(e) => e.job_id,
            Self::TaskRequeued(e) => e.job_id,
            Self::JobExecutionStarted(e) => e.job_id,
            Self::JobStepStarted(e)
            | Self::JobStepSucceeded(e)
            | Self::JobStepRetried(e)
            | Self::JobStepFailed(e) => e.job_id,
            Self::JobPriorityChanged(e) => e.job_id,
            Self::TaskReleased(e) => e.job_id,
            Self::JobConcurrencySet(e) => e.job_id,
            Self::TokenCreated(_) | Self::TokenRevoked(_) | Self::LimitSet(_) => return None,
        })
    }

    /// The task and its index, for task events; `None` for job events.
    pub fn task(&self) -> Option<(TaskId, u32)> {
        match self {
            Self::JobSubmitted(_)
            | Self::TasksCreated(_)
            | Self::JobCompleted(_)
            | Self::JobFailed(_)
            | Self::JobCancelled(_)
            | Self::JobRetryRequested(_)
            | Self::JobExecutionStarted(_)
            | Self::JobStepStarted(_)
            | Self::JobStepSucceeded(_)
            | Self::JobStepRetried(_)
            | Self::JobStepFailed(_)
            | Self::TokenCreated(_)
            | Self::TokenRevoked(_)
            | Self::JobPriorityChanged(_)
            | Self::LimitSet(_)
            | Self::JobConcurrencySet(_) => None,
            Self::TaskEnqueued(e) => Some((e.task_id, e.index)),
            Self::TaskReleased(e) => Some((e.task_id, e.index)),
            Self::TaskStarted(e) => Some((e.task_id, e.index)),
            Self::TaskCompleted(e) => Some((e.task_id, e.index)),
            Self::TaskFailed(e) => Some((e.task_id, e.index)),
            Self::TaskRetryScheduled(e) => Some((e.task_id, e.index)),
            Self::TaskDeadLettered(e) => Some((e.task_id, e.index)),
            Self::TaskRequeued(e) => Some((e.task_id, e.index)),
        }
    }

    /// The task this event belongs to, for task events.
    pub fn task_id(&self) -> Option<TaskId> {
        self.task().map(|(id, _)| id)
    }

    /// The stream the event is appended to.
    pub fn stream(&self) -> StreamRef {
        match self {
            Self::TaskEnqueued(e) => StreamRef::Task(e.task_id),
            Self::TaskStarted(e) => StreamRef::Task(e.task_id),
            Self::TaskCompleted(e) => StreamRef::Task(e.task_id),
            Self::TaskFailed(e) => StreamRef::Task(e.task_id),
            Self::TaskRetryScheduled(e) => StreamRef::Task(e.task_id),
            Self::TaskDeadLettered(e) => StreamRef::Task(e.task_id),
            Self::TaskRequeued(e) => StreamRef::Task(e.task_id),
            Self::JobSubmitted(e) => StreamRef::Job(e.job_id),
            Self::TasksCreated(e) => StreamRef::Job(e.job_id),
            Self::JobCompleted(e) => StreamRef::Job(e.job_id),
            Self::JobFailed(e) => StreamRef::Job(e.job_id),
            Self::JobCancelled(e) => StreamRef::Job(e.job_id),
            Self::JobRetryRequested(e) => StreamRef::Job(e.job_id),
            Self::JobExecutionStarted(e) => StreamRef::Job(e.job_id),
            Self::JobStepStarted(e)
            | Self::JobStepSucceeded(e)
            | Self::JobStepRetried(e)
            | Self::JobStepFailed(e) => StreamRef::Job(e.job_id),
            Self::TokenCreated(e) => StreamRef::Token(e.token_id),
            Self::TokenRevoked(e) => StreamRef::Token(e.token_id),
            Self::JobPriorityChanged(e) => StreamRef::Job(e.job_id),
            Self::TaskReleased(e) => StreamRef::Task(e.task_id),
            Self::LimitSet(_) => StreamRef::Limits,
            Self::JobConcurrencySet(e) => StreamRef::Job(e.job_id),
        }
    }

    /// The stream id the event is appended to: `job-<id>` or `task-<id>`.
    pub fn stream_id(&self) -> String {
        self.stream().stream_id()
    }

    /// When it happened, by the clock of whoever decided it (`submitted_at` for
    /// `JobSubmitted`). The log's own recorded time may differ slightly.
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            Self::JobSubmitted(e) => e.submitted_at,
            Self::TasksCreated(e) => e.at,
            Self::JobCompleted(e) => e.at,
            Self::JobFailed(e) => e.at,
            Self::JobCancelled(e) => e.at,
            Self::JobRetryRequested(e) => e.at,
            Self::TaskEnqueued(e) => e.at,
            Self::TaskStarted(e) => e.at,
            Self::TaskCompleted(e) => e.at,
            Self::TaskFailed(e) => e.at,
            Self::TaskRetryScheduled(e) => e.at,
            Self::TaskDeadLettered(e) => e.at,
            Self::TaskRequeued(e) => e.at,
            Self::JobExecutionStarted(e) => e.at,
            Self::JobStepStarted(e)
            | Self::JobStepSucceeded(e)
            | Self::JobStepRetried(e)
            | Self::JobStepFailed(e) => e.at,
            Self::TokenCreated(e) => e.at,
            Self::TokenRevoked(e) => e.at,
            Self::JobPriorityChanged(e) => e.at,
            Self::TaskReleased(e) => e.at,
            Self::LimitSet(e) => e.at,
            Self::JobConcurrencySet(e) => e.at,
        }
    }
}

macro_rules! impl_from_payload {
    ($($name:ident),* $(,)?) => {
        $(impl From<$name> for Event {
            fn from(e: $name) -> Self {
                Self::$name(e)
            }
        })*
    };
}

impl_from_payload!(
    JobSubmitted,
    TasksCreated,
    JobCompleted,
    JobFailed,
    JobCancelled,
    JobRetryRequested,
    TaskEnqueued,
    TaskStarted,
    TaskCompleted,
    TaskFailed,
    TaskRetryScheduled,
    TaskDeadLettered,
    JobExecutionStarted,
    TaskRequeued,
    TokenCreated,
    TokenRevoked,
    JobPriorityChanged,
    TaskReleased,
    LimitSet,
    JobConcurrencySet,
);

impl Event {
    /// Whether this event is bookkeeping of the Step Functions driver (its execution and the
    /// transitions of its states), which no status depends on: the two drivers' logs are equal
    /// without these.
    pub fn is_driver_bookkeeping(&self) -> bool {
        matches!(
            self,
            Self::JobExecutionStarted(_)
                | Self::JobStepStarted(_)
                | Self::JobStepSucceeded(_)
                | Self::JobStepRetried(_)
                | Self::JobStepFailed(_)
        )
    }
}
