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

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The receipt is unknown or expired (the message was redelivered to someone else, or
    /// already acknowledged). Not retryable for that receipt; the log decides what happened.
    #[error("receipt is no longer valid: {0}")]
    StaleReceipt(String),
    /// The queue backend failed; retry with backoff.
    #[error("queue database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Any other backend failure (SQS); retry with backoff.
    #[error("queue error: {0}")]
    Backend(String),
}

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

    async fn depth(&self) -> QueueResult<QueueDepth>;

    /// Dead-lettered messages, oldest first, optionally of one job.
    async fn dead_letters(&self, job_id: Option<Uuid>, limit: i64) -> QueueResult<Vec<DeadLetter>>;

    /// Removes dead letters (after they were redriven through the log).
    async fn remove_dead_letters(&self, ids: &[String]) -> QueueResult<()>;
}
