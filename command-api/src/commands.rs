//! The write model: load a stream from the log, decide with the domain, append.
//!
//! [`CommandService`] is what every write API calls (the GraphQL mutations and the REST
//! writes), so that a REST write and a GraphQL mutation append exactly the same events. It
//! decides only on state folded from the log (never on projections), and a command it refuses
//! appends nothing.
//!
//! Field names in errors ([`CommandError::field`]) are the domain's snake_case names
//! (`total_tasks`, `batch_size`, ...); each API renames them to its own convention.
//!
//! - `error`: why a command failed ([`CommandError`]);
//! - `input`: a submission's fields and their checks ([`SubmitJobInput`], [`split_from_input`]);
//! - `jobs`: submit, cancel, retry the failed tasks of a job, change its priority;
//! - `limits`: set the cluster-wide concurrency and rate limits of a job type or key;
//! - `tasks`: the transitions external workers report (started, completed, failed);
//! - `dead_letters`: list and redrive the task queue's dead letters;
//! - `streams`: a job's and a task's stream folded from the log.

use std::sync::Arc;

use async_trait::async_trait;
use shoal_api::snapshot::{SnapshotError, StreamSnapshots};
use shoal_domain::{JobId, Limits, TaskId};
use shoal_infra::eventlog::EventLog;
use shoal_infra::queue::TaskQueue;

mod dead_letters;
mod error;
mod input;
mod jobs;
mod limits;
mod streams;
mod tasks;

pub use dead_letters::{DEFAULT_DEAD_LETTER_LIMIT, MAX_DEAD_LETTER_LIMIT, RedriveOutcome};
pub use error::{CONFLICT, CommandError, INTERNAL, InfrastructureError};
pub use input::{
    DEFAULT_BATCH_SIZE, MAX_IDEMPOTENCY_KEY_BYTES, SubmitJobInput, count, split_from_input,
};
pub use jobs::{MAX_REASON_CHARS, RetryOutcome, SubmittedJob};
pub use shoal_api::snapshot::{JobSnapshot, TaskSnapshot};
pub use tasks::{
    DEFAULT_ERROR_MESSAGE, EXTERNAL_WORKER, MAX_ERROR_CHARS, MAX_PROCESSING_TIME_SECONDS,
    MAX_RESULT_BYTES,
};

/// Task streams read, and failed tasks retried, per round trip / per append.
pub const DEFAULT_CHUNK_SIZE: usize = 1_000;

/// How many times a command re-reads and decides again when its append conflicts with a
/// concurrent writer, before it gives up with [`CommandError::Conflict`].
pub const CONFLICT_ATTEMPTS: usize = 5;

/// Takes commands, decides them on state folded from the log, appends the events.
/// Cheap to clone (an `Arc` and a few numbers).
#[derive(Debug, Clone)]
pub struct CommandService {
    log: Arc<dyn EventLog>,
    limits: Limits,
    chunk_size: usize,
    /// The task queue, for the dead-letter commands and job priorities (see
    /// [`CommandService::with_queue`]).
    queue: Option<Arc<dyn TaskQueue>>,
    /// Who issues the commands (see [`CommandService::acting_as`]).
    actor: Option<Arc<str>>,
}

impl CommandService {
    /// A service appending to `log`, checking submissions against `limits`.
    pub fn new(log: Arc<dyn EventLog>, limits: Limits) -> Self {
        Self {
            log,
            limits,
            chunk_size: DEFAULT_CHUNK_SIZE,
            queue: None,
            actor: None,
        }
    }

    /// The same service issuing its commands as `actor` (an API token's name), recorded as
    /// `"actor"` in the metadata of every event they append; `None` records none (an API
    /// without tokens).
    pub fn acting_as(&self, actor: Option<&str>) -> Self {
        Self {
            actor: actor.map(Arc::from),
            ..self.clone()
        }
    }

    /// Who issues the commands, if known.
    pub fn actor(&self) -> Option<&str> {
        self.actor.as_deref()
    }

    /// Gives the service the task queue, which the dead-letter commands
    /// ([`CommandService::dead_letters`], [`CommandService::redrive_dead_letters`]) need, and
    /// which job priorities ([`CommandService::set_job_priority`]) order. Without one, a
    /// priority is recorded in the log only.
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
}

/// The REST reads' fallback for a write the projector has not reached yet.
#[async_trait]
impl StreamSnapshots for CommandService {
    async fn job_snapshot(&self, job_id: JobId) -> Result<Option<JobSnapshot>, SnapshotError> {
        snapshot_or_none(CommandService::job_snapshot(self, job_id).await)
    }

    async fn task_snapshot(&self, task_id: TaskId) -> Result<Option<TaskSnapshot>, SnapshotError> {
        snapshot_or_none(CommandService::task_snapshot(self, task_id).await)
    }
}

fn snapshot_or_none<T>(result: Result<T, CommandError>) -> Result<Option<T>, SnapshotError> {
    match result {
        Ok(snapshot) => Ok(Some(snapshot)),
        Err(CommandError::NotFound(_)) => Ok(None),
        Err(CommandError::Infrastructure(cause)) => Err(SnapshotError::new(cause)),
        Err(other) => Err(SnapshotError::new(other)),
    }
}
