//! Task queues: one trait, the same semantics for every adapter (at-least-once delivery, a
//! visibility timeout, a receive count, dead-lettering after too many receives).
//!
//! The queue is a delivery mechanism, not the truth: the event log is. A message may be
//! delivered twice or resent by the orchestrator's relay; workers make that harmless by
//! appending with expected stream versions.
//!
//! Adapters: [`SqlQueue`] (a table in the same Postgres or SQLite database) and [`SqsQueue`]
//! (AWS SQS with a dead-letter queue; its module docs list where SQS differs).

mod sql;
mod sqs;

pub use sql::SqlQueue;
pub(crate) use sql::{QueueRows, ack_in_postgres, ack_in_sqlite};
pub use sqs::{
    SqsCallCounts, SqsCalls, SqsQueue, client_from_env, dead_letter_queue_url, init_queues,
};

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

/// The message body (defined with the domain, where it is also fuzzed): see
/// [`shoal_domain::message`].
pub use shoal_domain::message::{MessageError, TaskMessage};

/// A handle to one received message, used to extend, release, acknowledge or dead-letter it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Receipt(pub String);

/// A received message. `body` is `Err` when the message cannot be parsed (a poison message):
/// the worker must dead-letter it, never crash.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub receipt: Receipt,
    pub body: Result<TaskMessage, PoisonMessage>,
    /// How many times this message has been received, this time included.
    pub receive_count: u32,
    /// Its job's priority when it was received (higher first; 0 where the queue keeps none,
    /// as on SQS): the order in which a worker starts what it holds.
    pub priority: i32,
    /// The body's size in bytes, as stored or sent: what holding the message costs the
    /// receiver (a worker bounds its buffer by it).
    pub size: usize,
}

/// A message whose body is not a valid [`TaskMessage`].
#[derive(Debug, Clone, PartialEq)]
pub struct PoisonMessage {
    pub raw: String,
    pub error: String,
}

/// A message to send, visible after `delay`.
#[derive(Debug, Clone, PartialEq)]
pub struct OutgoingMessage {
    pub body: TaskMessage,
    pub delay: Duration,
}

/// Messages waiting, in flight, and dead-lettered (the autoscaling metric is `visible + in_flight`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct QueueDepth {
    pub visible: u64,
    pub in_flight: u64,
    pub delayed: u64,
    pub dead_lettered: u64,
}

/// A message in the dead-letter queue.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub id: String,
    pub job_id: Option<Uuid>,
    pub task_id: Option<Uuid>,
    pub raw: String,
    pub reason: String,
    pub dead_lettered_at: DateTime<Utc>,
}

/// Why a queue operation failed. Only [`QueueError::StaleReceipt`] is about the caller's
/// receipt; the rest are the backend's (retry with backoff) or the request's (do not retry).
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The receipt is unknown or expired (the message was redelivered to someone else, or
    /// already acknowledged). Not retryable for that receipt; the log decides what happened.
    #[error("receipt is no longer valid: {0}")]
    StaleReceipt(String),
    /// The queue's database failed; retry with backoff.
    #[error("queue database error: {0}")]
    Database(#[from] sqlx::Error),
    /// An SQS call failed: the network, throttling, credentials or permissions, a queue that
    /// does not exist. `code` is AWS's error code when SQS answered (`QueueDoesNotExist`,
    /// `AccessDenied`, ...). Retry with backoff; a missing queue or permission needs fixing
    /// first.
    #[error("SQS {operation}: {detail}")]
    Sqs {
        operation: &'static str,
        code: Option<String>,
        /// AWS's code and message, or the chain of the error that stopped the call.
        detail: String,
        #[source]
        source: BoxError,
    },
    /// SQS refused an entry of a batch call as the sender's fault (a message too large, an
    /// invalid attribute): retrying the same entry cannot help.
    #[error("SQS {operation}: {code}: {message}")]
    EntryRejected {
        operation: &'static str,
        code: String,
        message: String,
    },
    /// Entries of a batch call kept failing on SQS's side through every retry; retry later.
    #[error("SQS {operation}: {entries} entries still failing after {attempts} attempts")]
    BatchRetriesExhausted {
        operation: &'static str,
        entries: usize,
        attempts: u32,
    },
    /// An SQS request could not be built from the given values (a bug, not retryable).
    #[error("SQS {operation}: invalid request: {source}")]
    InvalidRequest {
        operation: &'static str,
        #[source]
        source: aws_sdk_sqs::error::BuildError,
    },
    /// The SQS queue has no dead-letter queue, so nothing can be dead-lettered: create the
    /// queues with `init_queues` (`shoal sqs init`), which sets a redrive policy.
    #[error("this SQS queue has no dead-letter queue")]
    NoDeadLetterQueue,
    /// No AWS region is configured; set `AWS_REGION` or a profile's region.
    #[error("no AWS region is configured: set AWS_REGION (or a profile's region)")]
    NoRegion,
    /// Not the name of a standard SQS queue (empty, or a `.fifo` queue).
    #[error("invalid queue name {0:?}: a standard SQS queue name is required")]
    InvalidQueueName(String),
    /// The queue's redrive policy names no SQS queue to dead-letter to: fix the policy.
    #[error(
        "SQS queue {queue_url} has a redrive policy without an SQS dead-letter queue: {policy}"
    )]
    InvalidRedrivePolicy { queue_url: String, policy: String },
    /// SQS answered a call without something it always returns (an emulator's gap, or an API
    /// change); not retryable.
    #[error("SQS {operation} answered without {missing} for {subject}")]
    IncompleteResponse {
        operation: &'static str,
        missing: &'static str,
        subject: String,
    },
    /// A task message could not be serialized (a bug, not retryable).
    #[error("cannot serialize a task message: {0}")]
    Serialize(#[source] serde_json::Error),
    /// A value does not fit the queue's storage: an attempt beyond the column's range, or a
    /// stored time that is not one. A bug or a corrupt row, not retryable.
    #[error("{what} {value} is out of range")]
    OutOfRange { what: &'static str, value: i64 },
}

/// The error that stopped an SQS call, kept whole (downcast it to the SDK's error type).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

pub type QueueResult<T> = Result<T, QueueError>;

/// A task queue. Cheap to clone behind an `Arc`.
#[async_trait::async_trait]
pub trait TaskQueue: Send + Sync + std::fmt::Debug {
    /// Sends messages. Sending the same (task, attempt) twice is harmless.
    async fn send(&self, messages: Vec<OutgoingMessage>) -> QueueResult<()>;

    /// Receives up to `max` visible messages, hiding each for `visibility`. Waits up to `wait`
    /// for at least one (long polling); returns empty after that. A message received more than
    /// the queue's max receive count is moved to the dead-letter queue instead of delivered.
    async fn receive(
        &self,
        max: usize,
        visibility: Duration,
        wait: Duration,
    ) -> QueueResult<Vec<Delivery>>;

    /// Extends the visibility of messages being worked on (heartbeat). Stale receipts are
    /// skipped, not errors.
    async fn extend(&self, receipts: &[Receipt], visibility: Duration) -> QueueResult<()>;

    /// Makes a message visible again after `delay` without counting it as handled (SIGTERM
    /// release, or postponing a message that arrived before its `not_before`).
    async fn release(&self, receipt: &Receipt, delay: Duration) -> QueueResult<()>;

    /// Deletes handled messages. Stale receipts are skipped, not errors.
    async fn ack(&self, receipts: &[Receipt]) -> QueueResult<()>;

    /// Moves a message to the dead-letter queue with a reason.
    async fn dead_letter(&self, receipt: &Receipt, reason: &str) -> QueueResult<()>;

    /// Drops every queued message of a job (cancellation). Backends that cannot (SQS) do
    /// nothing: workers skip a cancelled job's tasks anyway.
    async fn purge_job(&self, job_id: Uuid) -> QueueResult<u64>;

    /// Sets the priority of a job's messages (higher is received first): those waiting now,
    /// and those sent from now on. Repeating it is harmless. Backends that do not order by
    /// priority (SQS) do nothing.
    async fn set_priority(&self, job_id: Uuid, priority: i32) -> QueueResult<()> {
        let _ = (job_id, priority);
        Ok(())
    }

    async fn depth(&self) -> QueueResult<QueueDepth>;

    /// How long the oldest deliverable message has waited to be received (zero when none
    /// waits); `None` when the backend cannot tell (SQS reports it only to CloudWatch).
    async fn oldest_message_age(&self) -> QueueResult<Option<Duration>> {
        Ok(None)
    }

    /// Which of `task_ids` (tasks of `job_id`) have a message in the queue, and for which
    /// attempts: `(task_id, attempt)` pairs, in no order. A message counts whether it waits,
    /// is delayed or is being handled; dead letters do not. `None` when the backend cannot
    /// tell (SQS cannot look messages up): the reconciler then decides by age and depth.
    async fn live_messages(
        &self,
        job_id: Uuid,
        task_ids: &[Uuid],
    ) -> QueueResult<Option<Vec<(Uuid, u32)>>> {
        let _ = (job_id, task_ids);
        Ok(None)
    }

    /// Dead-lettered messages, oldest first, optionally of one job.
    async fn dead_letters(&self, job_id: Option<Uuid>, limit: i64) -> QueueResult<Vec<DeadLetter>>;

    /// Removes dead letters (after they were redriven through the log).
    async fn remove_dead_letters(&self, ids: &[String]) -> QueueResult<()>;

    /// Messages of this queue were written by someone else, in a transaction that has just
    /// committed (the orchestrator queues a chunk's tasks in the chunk's own transaction:
    /// `EventLog::append_and_send`): wake this queue's waiting receivers now and, where the
    /// backend can, other processes' too. A receiver that misses it finds the messages at its
    /// next poll. Backends that cannot be written that way do nothing.
    fn announce_sent(&self) {}

    /// Whether this queue is a table of the event log's own database, so that the log can
    /// insert its messages in an append's transaction (`EventLog::append_and_send`). Only the
    /// SQL queue is.
    fn is_log_table(&self) -> bool {
        false
    }
}
