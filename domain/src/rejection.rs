//! Why the domain refused a command.
//!
//! A [`Rejection`] means "the command is wrong for this input or this state": nothing was
//! appended, and sending the same command again gives the same answer. It is never an
//! infrastructure failure and never a version conflict (those belong to `infra`). The message
//! (`Display`) is meant for users: it names the field and the limit or state, and never leaks
//! internals.

use crate::ids::{JobId, TaskId};
use crate::job::JobStatus;
use crate::task::TaskStatus;

/// Machine-readable rejection codes (see [`Rejection::code`]).
pub mod code {
    /// The input is malformed or out of its valid range. HTTP 422 (400 for GraphQL errors).
    pub const INVALID_INPUT: &str = "INVALID_INPUT";
    /// The input is well-formed but over a configured limit. HTTP 422 (413 for body size).
    pub const LIMIT_EXCEEDED: &str = "LIMIT_EXCEEDED";
    /// The job or task does not exist. HTTP 404.
    pub const NOT_FOUND: &str = "NOT_FOUND";
    /// A job with this id already exists. HTTP 409.
    pub const ALREADY_EXISTS: &str = "ALREADY_EXISTS";
    /// The command does not apply in the current status. HTTP 409.
    pub const INVALID_TRANSITION: &str = "INVALID_TRANSITION";
    /// The command names an attempt that is not the task's current one (typically a duplicate
    /// or late queue delivery). HTTP 409; a worker drops the message.
    pub const STALE_ATTEMPT: &str = "STALE_ATTEMPT";
}

/// A command refused by the domain. See the module docs for what it promises.
///
/// Each variant documents what a caller does about it. [`Rejection::code`] gives a stable
/// machine-readable code, [`Rejection::field`] the input field (snake_case) or state it is
/// about, and [`Rejection::is_duplicate`] whether the command's effect already holds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    // ----- submission input -----
    /// `total_tasks` is 0 or above the limit. Fix the input; do not retry as is.
    #[error("total_tasks must be between 1 and {max}, got {got}")]
    TotalTasksOutOfRange {
        /// The value given.
        got: u32,
        /// The configured maximum.
        max: u32,
    },
    /// An item split without items. Fix the input.
    #[error("items must not be empty")]
    ItemsEmpty,
    /// More items than the limit allows. Split the work into several jobs.
    #[error("items has {got} entries, the limit is {max}")]
    TooManyItems {
        /// The number of items given.
        got: usize,
        /// The configured maximum.
        max: u32,
    },
    /// The items, serialized as JSON, are larger than the limit. Send smaller items (e.g.
    /// references instead of contents) or several jobs.
    #[error("items are {bytes} bytes, the limit is {max}")]
    ItemsTooLarge {
        /// Serialized size of the items.
        bytes: usize,
        /// The configured maximum.
        max: usize,
    },
    /// `batch_size` is 0 or above the limit. Fix the input.
    #[error("batch_size must be between 1 and {max}, got {got}")]
    BatchSizeOutOfRange {
        /// The value given.
        got: u32,
        /// The configured maximum.
        max: u32,
    },
    /// The items in batches of `batch_size` give more tasks than allowed. Raise `batch_size`.
    #[error("{items} items in batches of {batch_size} give {tasks} tasks, the limit is {max}")]
    TooManyTasks {
        /// The number of items.
        items: usize,
        /// The batch size given.
        batch_size: u32,
        /// The resulting number of tasks.
        tasks: usize,
        /// The configured maximum.
        max: u32,
    },
    /// The job's tasks together would carry more input than the per-job budget: every task
    /// gets a copy of `parameters` (plus its batch of items), stored in the log, the tasks
    /// table and the queue. Fewer tasks or smaller parameters (put large data elsewhere and
    /// pass a reference).
    #[error(
        "the job's {tasks} tasks would carry {bytes} bytes of input ({tasks} copies of the \
         parameters, plus the items), the limit is {max} per job"
    )]
    JobTooLarge {
        /// Task input bytes of the whole job.
        bytes: u64,
        /// The job's tasks.
        tasks: u32,
        /// The configured maximum.
        max: u64,
    },
    /// One task's queue message would be larger than a queue message may be (256 KiB on SQS
    /// by default). Smaller parameters, or a smaller `batch_size`.
    #[error(
        "task {index}'s queue message would be {bytes} bytes, the limit is {max} (smaller \
         parameters or a smaller batch_size)"
    )]
    TaskMessageTooLarge {
        /// The task with the largest message.
        index: u32,
        /// Its message's size.
        bytes: usize,
        /// The configured maximum.
        max: usize,
    },
    /// `parameters` is neither a JSON object nor null. Fix the input.
    #[error("parameters must be a JSON object")]
    ParametersNotObject,
    /// `parameters`, serialized as JSON, are larger than the limit. Fix the input.
    #[error("parameters are {bytes} bytes, the limit is {max}")]
    ParametersTooLarge {
        /// Serialized size of the parameters.
        bytes: usize,
        /// The configured maximum.
        max: usize,
    },
    /// An item split whose parameters already have an `"items"` key, which each task's batch
    /// would silently replace. Rename the parameter.
    #[error("parameters must not contain \"items\" when the job is split by items")]
    ParametersContainItems,
    /// `max_attempts` is 0 or above the limit. Fix the input.
    #[error("max_attempts must be between 1 and {max}, got {got}")]
    MaxAttemptsOutOfRange {
        /// The value given.
        got: u32,
        /// The configured maximum.
        max: u32,
    },
    /// `timeout_seconds` is 0 or above the limit. Fix the input.
    #[error("timeout_seconds must be between 1 and {max}, got {got}")]
    TimeoutOutOfRange {
        /// The value given.
        got: u32,
        /// The configured maximum.
        max: u32,
    },
    /// `priority` is outside its range (see [`crate::priority`]). Fix the input.
    #[error("priority must be between {min} and {max}, got {got}")]
    PriorityOutOfRange {
        /// The value given.
        got: i64,
        /// The lowest priority.
        min: i32,
        /// The highest priority.
        max: i32,
    },
    /// `job_type` is longer than the limit (in characters). Fix the input.
    #[error("job_type is {len} characters, the limit is {max}")]
    JobTypeTooLong {
        /// Its length in characters.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// `max_chunk` of `CreateTasks` is 0: a caller bug, not user input.
    #[error("max_chunk must be at least 1, got 0")]
    ChunkSizeZero,
    /// A retry backoff so large that the retry time is not representable. A caller bug.
    #[error("backoff_ms {backoff_ms} is out of range")]
    BackoffOutOfRange {
        /// The value given.
        backoff_ms: u64,
    },

    // ----- jobs -----
    /// No `JobSubmitted` in the job's stream. HTTP 404 (`"Job <id> not found"`).
    #[error("job not found")]
    JobNotFound,
    /// `SubmitJob` for an id that already has a stream. HTTP 409; submit with a new id (an
    /// idempotent client retry is answered from the idempotency key before the domain).
    #[error("job {job_id} already exists")]
    JobAlreadyExists {
        /// The job.
        job_id: JobId,
    },
    /// The job's status does not allow the command (e.g. cancelling a COMPLETED job,
    /// completing a job whose tasks are still being created). HTTP 409; do not retry.
    #[error("job {job_id} is {status} and cannot {action}")]
    JobTransition {
        /// The job.
        job_id: JobId,
        /// Its current status.
        status: JobStatus,
        /// What was asked, as a verb phrase ("be cancelled", "create tasks").
        action: &'static str,
    },
    /// `CancelJob` on a job that is already cancelled. Callers may treat it as success.
    #[error("job {job_id} is already CANCELLED")]
    JobAlreadyCancelled {
        /// The job.
        job_id: JobId,
    },
    /// `CreateTasks` on a job whose tasks all exist. The orchestrator moves on (a no-op).
    #[error("job {job_id} already has all its {total_tasks} tasks")]
    AllTasksCreated {
        /// The job.
        job_id: JobId,
        /// Its number of tasks.
        total_tasks: u32,
    },
    /// `RequestRetry` with no failed task to retry. HTTP 409.
    #[error("job {job_id} has no failed tasks to retry")]
    NothingToRetry {
        /// The job.
        job_id: JobId,
    },

    // ----- tasks -----
    /// No `TaskEnqueued` in the task's stream. HTTP 404 (`"Task <id> not found"`).
    #[error("task not found")]
    TaskNotFound,
    /// The task's status does not allow the command (e.g. starting a COMPLETED task, retrying
    /// a RUNNING one). HTTP 409; do not retry.
    #[error("task {task_id} is {status} and cannot {action}")]
    TaskTransition {
        /// The task.
        task_id: TaskId,
        /// Its current status.
        status: TaskStatus,
        /// What was asked, as a verb phrase ("be started").
        action: &'static str,
    },
    /// `CompleteTask` on a COMPLETED task (any attempt). Callers treat it as a no-op success;
    /// the first result stands.
    #[error("task {task_id} is already COMPLETED")]
    AlreadyCompleted {
        /// The task.
        task_id: TaskId,
    },
    /// `StartTask` for the attempt that is already RUNNING: a duplicate delivery. The worker
    /// drops the message without running the handler.
    #[error("attempt {attempt} of task {task_id} already started")]
    AttemptAlreadyStarted {
        /// The task.
        task_id: TaskId,
        /// The attempt given (= the current one).
        attempt: u32,
    },
    /// The command names an attempt other than the current one: a late or duplicate message
    /// from an earlier attempt (or a bogus one). The caller drops it.
    #[error("task {task_id} is on attempt {current}, not attempt {attempt}")]
    WrongAttempt {
        /// The task.
        task_id: TaskId,
        /// The attempt given.
        attempt: u32,
        /// The task's current attempt.
        current: u32,
    },
    /// `DeadLetterTask` on a task already dead-lettered. Callers may treat it as success.
    #[error("task {task_id} is already dead-lettered")]
    AlreadyDeadLettered {
        /// The task.
        task_id: TaskId,
    },
    /// The attempt counter cannot grow any further (billions of retries). Do not retry.
    #[error("task {task_id} has used every attempt number")]
    AttemptsExhausted {
        /// The task.
        task_id: TaskId,
    },
    /// A concurrency or rate limit, or a job's concurrency key, is malformed or out of range
    /// (`message` says which bound). Fix the input; do not retry as is.
    #[error("{field}: {message}")]
    InvalidLimit {
        /// The input field (`max_concurrency`, `rate_per_second`, `name`, `concurrency_key`).
        field: &'static str,
        /// What is wrong, for users.
        message: String,
    },
}

impl Rejection {
    /// A stable, machine-readable code: one of the constants in [`code`].
    pub fn code(&self) -> &'static str {
        match self {
            Self::TotalTasksOutOfRange { got: 0, .. }
            | Self::BatchSizeOutOfRange { got: 0, .. }
            | Self::MaxAttemptsOutOfRange { got: 0, .. }
            | Self::TimeoutOutOfRange { got: 0, .. }
            | Self::ItemsEmpty
            | Self::ParametersNotObject
            | Self::ParametersContainItems
            | Self::ChunkSizeZero
            | Self::PriorityOutOfRange { .. }
            | Self::BackoffOutOfRange { .. }
            | Self::InvalidLimit { .. } => code::INVALID_INPUT,
            Self::TotalTasksOutOfRange { .. }
            | Self::BatchSizeOutOfRange { .. }
            | Self::MaxAttemptsOutOfRange { .. }
            | Self::TimeoutOutOfRange { .. }
            | Self::TooManyItems { .. }
            | Self::ItemsTooLarge { .. }
            | Self::TooManyTasks { .. }
            | Self::ParametersTooLarge { .. }
            | Self::JobTooLarge { .. }
            | Self::TaskMessageTooLarge { .. }
            | Self::JobTypeTooLong { .. }
            | Self::AttemptsExhausted { .. } => code::LIMIT_EXCEEDED,
            Self::JobNotFound | Self::TaskNotFound => code::NOT_FOUND,
            Self::JobAlreadyExists { .. } => code::ALREADY_EXISTS,
            Self::JobTransition { .. }
            | Self::JobAlreadyCancelled { .. }
            | Self::AllTasksCreated { .. }
            | Self::NothingToRetry { .. }
            | Self::TaskTransition { .. }
            | Self::AlreadyCompleted { .. }
            | Self::AlreadyDeadLettered { .. } => code::INVALID_TRANSITION,
            Self::AttemptAlreadyStarted { .. } | Self::WrongAttempt { .. } => code::STALE_ATTEMPT,
        }
    }

    /// The input field the rejection is about, in snake_case as in the REST API (`"items"`,
    /// `"batch_size"`, ...), or `"status"` / `"attempt"` for state rejections and
    /// `"job_id"` / `"task_id"` for unknown or existing ids.
    pub fn field(&self) -> &'static str {
        match self {
            Self::TotalTasksOutOfRange { .. } => "total_tasks",
            Self::ItemsEmpty | Self::TooManyItems { .. } | Self::ItemsTooLarge { .. } => "items",
            Self::BatchSizeOutOfRange { .. } | Self::TooManyTasks { .. } => "batch_size",
            Self::ParametersNotObject
            | Self::ParametersTooLarge { .. }
            | Self::JobTooLarge { .. }
            | Self::TaskMessageTooLarge { .. }
            | Self::ParametersContainItems => "parameters",
            Self::MaxAttemptsOutOfRange { .. } => "max_attempts",
            Self::TimeoutOutOfRange { .. } => "timeout_seconds",
            Self::JobTypeTooLong { .. } => "job_type",
            Self::PriorityOutOfRange { .. } => "priority",
            Self::ChunkSizeZero => "max_chunk",
            Self::BackoffOutOfRange { .. } => "backoff_ms",
            Self::JobNotFound | Self::JobAlreadyExists { .. } => "job_id",
            Self::TaskNotFound => "task_id",
            Self::NothingToRetry { .. } => "failed_tasks",
            Self::InvalidLimit { field, .. } => field,
            Self::JobTransition { .. }
            | Self::JobAlreadyCancelled { .. }
            | Self::AllTasksCreated { .. }
            | Self::TaskTransition { .. }
            | Self::AlreadyCompleted { .. }
            | Self::AlreadyDeadLettered { .. } => "status",
            Self::AttemptAlreadyStarted { .. }
            | Self::WrongAttempt { .. }
            | Self::AttemptsExhausted { .. } => "attempt",
        }
    }

    /// True when the command repeats one whose effect already holds (already completed,
    /// cancelled, dead-lettered, started, or all tasks created). A caller that may deliver a
    /// command more than once treats these as success and changes nothing.
    pub fn is_duplicate(&self) -> bool {
        matches!(
            self,
            Self::AlreadyCompleted { .. }
                | Self::JobAlreadyCancelled { .. }
                | Self::AlreadyDeadLettered { .. }
                | Self::AttemptAlreadyStarted { .. }
                | Self::AllTasksCreated { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_field_and_the_limit() {
        let r = Rejection::TotalTasksOutOfRange {
            got: 0,
            max: 1_000_000,
        };
        assert_eq!(
            r.to_string(),
            "total_tasks must be between 1 and 1000000, got 0"
        );
        assert_eq!(r.code(), code::INVALID_INPUT);
        assert_eq!(r.field(), "total_tasks");

        let r = Rejection::TotalTasksOutOfRange {
            got: 2_000_000,
            max: 1_000_000,
        };
        assert_eq!(r.code(), code::LIMIT_EXCEEDED);

        let r = Rejection::ParametersTooLarge {
            bytes: 70_000,
            max: 65_536,
        };
        assert_eq!(
            r.to_string(),
            "parameters are 70000 bytes, the limit is 65536"
        );
        assert_eq!(r.field(), "parameters");
        assert_eq!(r.code(), code::LIMIT_EXCEEDED);
    }

    #[test]
    fn transition_messages_name_the_state() {
        let task_id = TaskId::for_task(JobId::new(), 0);
        let r = Rejection::TaskTransition {
            task_id,
            status: TaskStatus::Completed,
            action: "be started",
        };
        assert_eq!(
            r.to_string(),
            format!("task {task_id} is COMPLETED and cannot be started")
        );
        assert_eq!(r.code(), code::INVALID_TRANSITION);
        assert_eq!(r.field(), "status");
        assert!(!r.is_duplicate());
        assert!(Rejection::AlreadyCompleted { task_id }.is_duplicate());
    }
}
