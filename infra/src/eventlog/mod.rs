//! The append-only event log: one trait, a Postgres and a SQLite implementation.
//!
//! The log stores raw events (type string, schema version, JSON data and metadata) grouped into
//! streams (`job-<id>`, `task-<id>`). It knows nothing of the domain's event types: the domain
//! encodes and decodes (and upcasts) them, see `shoal_domain::codec`.
//!
//! Guarantees every implementation keeps (and the shared test suite in `tests/` checks):
//! - an append names the version each stream is expected to be at; a mismatch is
//!   [`LogError::Conflict`] and nothing of that append is written;
//! - an append with an idempotency key that was already used writes nothing and returns the
//!   first append's result (`replayed: true`);
//! - reading from a [`LogPosition`] returns every committed event exactly once, in one stable
//!   order, even while other transactions are committing concurrently (gap-free).

mod batch;
mod postgres;
pub(crate) mod sql;
mod sqlite;
mod subscription;
mod tail;

pub use postgres::{PostgresEventLog, load_checkpoint_pg, save_checkpoint_pg};
pub use sql::SqlEventLog;
pub use sqlite::{SqliteEventLog, SqliteWriteTx, load_checkpoint_sqlite, save_checkpoint_sqlite};

use std::pin::Pin;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::Stream;
use serde_json::Value;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::queue::{OutgoingMessage, Receipt};

/// A place in the log's read order. Ordered; [`LogPosition::START`] is before every event.
///
/// On Postgres, `commit` is the id of the transaction that wrote the event (`xid8`) and
/// `position` the event's sequence number: events are read in `(commit, position)` order, and
/// only below the oldest transaction still running, which is what makes reading gap-free (see
/// `docs/adr/0002-gap-free-reading.md`). On SQLite there is one writer at a time, so `commit`
/// equals `position`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct LogPosition {
    pub commit: i64,
    pub position: i64,
}

impl LogPosition {
    pub const START: LogPosition = LogPosition {
        commit: 0,
        position: 0,
    };
}

/// The version a stream must be at for an append to succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// The stream must not exist yet.
    NoStream,
    /// The stream's last event must have exactly this version (versions start at 1;
    /// `Exact(0)` means the same as `NoStream`, a negative version is `Invalid`).
    Exact(i64),
}

impl ExpectedVersion {
    pub fn as_i64(self) -> i64 {
        match self {
            ExpectedVersion::NoStream => 0,
            ExpectedVersion::Exact(v) => v,
        }
    }
}

/// An event to append.
///
/// `schema_version` starts at 1. `data` is the payload already serialized (the log stores the
/// text as it is: `shoal_domain::Event::to_json` serializes an event once, with no JSON tree in
/// between; [`raw_json`] turns a tree into it). `metadata` must be a JSON object (`Null` is
/// stored as `{}`); the log adds `"idempotency_key"` to it when the append has one. Strings
/// must not contain NUL characters (Postgres cannot store them); both are `Invalid` otherwise.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_type: String,
    pub schema_version: i32,
    pub data: Box<RawValue>,
    pub metadata: Value,
}

impl PartialEq for NewEvent {
    fn eq(&self, other: &Self) -> bool {
        self.event_type == other.event_type
            && self.schema_version == other.schema_version
            && self.data.get() == other.data.get()
            && self.metadata == other.metadata
    }
}

/// A JSON tree as the serialized payload of a [`NewEvent`].
#[allow(clippy::expect_used)] // cannot fail: see the comment inside
pub fn raw_json(value: &Value) -> Box<RawValue> {
    // A `Value` always serializes (its maps have string keys, its numbers are finite).
    serde_json::value::to_raw_value(value).expect("a JSON value serializes")
}

/// Events to append to one stream, which must be at `expected` version.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamAppend {
    pub stream_id: String,
    pub expected: ExpectedVersion,
    pub events: Vec<NewEvent>,
}

/// A named consumer's checkpoint to save in the same transaction as an append.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointUpdate {
    pub name: String,
    pub position: LogPosition,
}

/// One atomic append: events across any number of streams, all or nothing.
///
/// Each stream appears at most once (merge a stream's events into one [`StreamAppend`]), and has
/// at least one event. Readers see the events of one append in the order given.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AppendBatch {
    pub streams: Vec<StreamAppend>,
    /// A key chosen by the client; a second append with the same key writes nothing and
    /// returns the first result. Only a committed append uses the key up: after a `Conflict`
    /// the same key can be retried. The log does not compare the second batch to the first.
    pub idempotency_key: Option<String>,
    /// Saved in the same transaction, so a consumer that appends (the orchestrator) moves its
    /// checkpoint exactly when its output is committed.
    pub checkpoint: Option<CheckpointUpdate>,
}

/// What an append wrote.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct AppendOutcome {
    /// The sequence number of each appended event, in the order they were given.
    pub positions: Vec<i64>,
    /// True when the idempotency key had been used before and nothing was written now.
    pub replayed: bool,
}

/// What an append inside the caller's own transaction wrote (`append_in_tx` of a backend).
/// After the caller commits, pass it to the backend's `committed` so subscribers wake at once
/// instead of at their next poll.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "pass it to `committed` after the transaction commits"]
pub struct TxAppend {
    pub outcome: AppendOutcome,
    /// The `LogPosition::commit` of the appended events; `None` when nothing was written.
    pub(crate) commit: Option<i64>,
}

/// An event as stored.
///
/// `data` and `metadata` are the stored JSON text, not parsed: a reader parses the payload once,
/// straight into its own type (`shoal_domain::Event::decode`), instead of into a generic JSON
/// tree first. [`RecordedEvent::data_json`] and [`RecordedEvent::metadata_json`] give the tree
/// where one is wanted.
#[derive(Debug, Clone)]
pub struct RecordedEvent {
    pub log_position: LogPosition,
    pub stream_id: String,
    pub stream_version: i64,
    pub event_type: String,
    pub schema_version: i32,
    pub data: Box<RawValue>,
    pub metadata: Box<RawValue>,
    pub recorded_at: DateTime<Utc>,
}

impl RecordedEvent {
    /// The payload as a JSON tree.
    pub fn data_json(&self) -> Value {
        parse_stored(&self.data)
    }

    /// The metadata as a JSON tree (an object).
    pub fn metadata_json(&self) -> Value {
        parse_stored(&self.metadata)
    }
}

/// Stored JSON is valid JSON (checked on append and again on read): parsing it cannot fail.
fn parse_stored(raw: &RawValue) -> Value {
    serde_json::from_str(raw.get()).unwrap_or(Value::Null)
}

impl PartialEq for RecordedEvent {
    fn eq(&self, other: &Self) -> bool {
        self.log_position == other.log_position
            && self.stream_id == other.stream_id
            && self.stream_version == other.stream_version
            && self.event_type == other.event_type
            && self.schema_version == other.schema_version
            && self.data.get() == other.data.get()
            && self.metadata.get() == other.metadata.get()
            && self.recorded_at == other.recorded_at
    }
}

/// What went wrong, and what the caller should do about it.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A stream was not at the expected version: someone else appended first. Nothing was
    /// written. Re-read the stream, decide again, and retry; never a server error.
    /// (On Postgres, two concurrent appends that touch the same streams in opposite orders can
    /// deadlock; the one the database aborts also gets `Conflict`, naming its first stream.)
    #[error("conflict on stream {stream_id}: expected version {expected}")]
    Conflict { stream_id: String, expected: i64 },
    /// The append was malformed (for example an empty stream id); nothing was written.
    /// A programming error: do not retry.
    #[error("invalid append: {0}")]
    Invalid(String),
    /// The database failed; the append may or may not have committed. Retry with the same
    /// idempotency key to be safe.
    #[error("event log database error: {0}")]
    Database(#[from] sqlx::Error),
}

pub type LogResult<T> = Result<T, LogError>;

/// How often a subscription polls when no commit signal arrives.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// A live stream of events, in log order, from a position on.
pub type EventStream = Pin<Box<dyn Stream<Item = LogResult<RecordedEvent>> + Send>>;

/// The event log. Implementations are cheap to clone and share a connection pool.
#[async_trait::async_trait]
pub trait EventLog: Send + Sync + std::fmt::Debug {
    /// Appends atomically (one transaction, one insert statement for all events).
    /// Returns each event's sequence number. `Err(Conflict)` means nothing was written.
    async fn append(&self, batch: AppendBatch) -> LogResult<AppendOutcome>;

    /// Appends `batch` and, in the same transaction, queues `messages` in the SQL task queue of
    /// this log's own database (the table of `SqlQueue`): both commit, or neither. A message
    /// whose (task, attempt) is queued already is skipped, as by `TaskQueue::send` (on Postgres
    /// the messages are first inserted as new, the cheaper statement, and the append is done
    /// again, skipping those, only if one was queued already); a replayed
    /// idempotency key writes neither. This is how the orchestrator queues a chunk's tasks with
    /// the chunk itself instead of relaying them afterwards. Once it returns `Ok`, call
    /// `TaskQueue::announce_sent` on the queue so that its receivers wake at once.
    ///
    /// `Invalid` from a log that has no such queue (the default); otherwise the errors of
    /// [`EventLog::append`].
    async fn append_and_send(
        &self,
        batch: AppendBatch,
        messages: Vec<OutgoingMessage>,
    ) -> LogResult<AppendOutcome> {
        let _ = (batch, messages);
        Err(LogError::Invalid(
            "this event log has no task queue to write to".into(),
        ))
    }

    /// Reads at most `limit` (>= 1) events after `after`, in log order. An empty result means
    /// the reader is caught up with what is safely visible now. What is visible may lag a
    /// commit briefly: on Postgres, readers stay below the oldest transaction still running on
    /// the cluster, so that nothing can later appear behind them.
    async fn read_all(&self, after: LogPosition, limit: i64) -> LogResult<Vec<RecordedEvent>>;

    /// Reads one stream's events with a version greater than `after_version`, in version order.
    /// Sees every committed event of the stream at once (no lag, unlike `read_all`): this is
    /// the read to decide on before an append at the stream's version.
    async fn read_stream(
        &self,
        stream_id: &str,
        after_version: i64,
    ) -> LogResult<Vec<RecordedEvent>>;

    /// Reads several whole streams at once (for example every task of a job), grouped by
    /// stream in the order of `stream_ids`, each in version order. Unknown streams are absent.
    async fn read_streams(&self, stream_ids: &[String]) -> LogResult<Vec<RecordedEvent>>;

    /// [`EventLog::read_streams`], but only the events recorded at or before `until`
    /// ([`RecordedEvent::recorded_at`], the log's own clock, kept to the millisecond on
    /// SQLite): each stream's prefix as it stood at that instant. This is how a job is folded
    /// as it was at a past moment. The default reads the whole streams and drops the rest;
    /// the SQL logs filter in the database.
    async fn read_streams_until(
        &self,
        stream_ids: &[String],
        until: DateTime<Utc>,
    ) -> LogResult<Vec<RecordedEvent>> {
        let mut events = self.read_streams(stream_ids).await?;
        events.retain(|e| e.recorded_at <= until);
        Ok(events)
    }

    /// Reads the events with these sequence numbers (`RecordedEvent::log_position.position`,
    /// as [`AppendOutcome::positions`] gives them), in the order asked; unknown positions are
    /// absent. Sees every committed event at once (no lag, unlike `read_all`). This is how a
    /// command whose idempotent append was replayed finds what the first append wrote.
    async fn read_positions(&self, positions: &[i64]) -> LogResult<Vec<RecordedEvent>>;

    /// Group commit: appends many independent batches in as few transactions as possible
    /// (one, unless some conflict), and returns one result per batch, in input order. A batch
    /// whose streams conflict gets `Err(Conflict)` and the others are still written; the
    /// batches must not share streams, and must not carry idempotency keys or checkpoints.
    /// This is how a worker writes the events of hundreds of in-flight tasks in one commit.
    async fn append_many(&self, batches: Vec<AppendBatch>) -> Vec<LogResult<AppendOutcome>> {
        append_many_with(batches, Vec::new(), |merged, _| self.append(merged)).await
    }

    /// [`EventLog::append_many`], and in the same transaction the acknowledgement of
    /// `acks[i]`, a message of the SQL task queue in this log's database (`TaskQueue::ack`),
    /// for every batch `i` that is written: a batch's events and the deletion of its message
    /// commit together, or neither does (a conflicting batch's message stays queued). A stale
    /// receipt deletes nothing and does not stop the append. `acks` has one entry per batch (or
    /// none at all). `Invalid` for every batch from a log without a task queue (only the SQL
    /// log has one: see `TaskQueue::is_log_table`).
    async fn append_many_and_ack(
        &self,
        batches: Vec<AppendBatch>,
        acks: Vec<Option<Receipt>>,
    ) -> Vec<LogResult<AppendOutcome>> {
        let _ = acks;
        batches
            .iter()
            .map(|_| {
                Err(LogError::Invalid(
                    "this event log has no task queue to acknowledge in".into(),
                ))
            })
            .collect()
    }

    /// A job's events (every event whose payload's `job_id` is `job_id`: the job's stream and
    /// its tasks'), in log order after `after`, at most `limit` (>= 1). Read through an index
    /// by job, so a page costs what it returns, however big the job. Like `read_stream`, it
    /// sees every committed event at once. `Invalid` from a log without that index.
    async fn read_job(
        &self,
        job_id: Uuid,
        after: LogPosition,
        limit: i64,
    ) -> LogResult<Vec<RecordedEvent>> {
        let _ = (job_id, after, limit);
        Err(LogError::Invalid(
            "this event log has no index by job".into(),
        ))
    }

    /// The task streams of a job that hold a final `TaskFailed` (failed for good at least
    /// once: the candidates of a retry of its failed tasks; read each to see whether it still
    /// is), in stream id order after `after`, at most `limit` (>= 1). Read through a small
    /// index of final failures. `Invalid` from a log without that index.
    async fn job_failed_task_streams(
        &self,
        job_id: Uuid,
        after: Option<&str>,
        limit: i64,
    ) -> LogResult<Vec<String>> {
        let _ = (job_id, after, limit);
        Err(LogError::Invalid(
            "this event log has no index by job".into(),
        ))
    }

    /// The position of the newest event visible to readers (`START` when the log is empty).
    async fn head(&self) -> LogResult<LogPosition>;

    /// Forgets at most `limit` (>= 1) idempotency keys used before `used_before` (retention):
    /// an append with a forgotten key appends again. Keys of appends still in progress are
    /// kept. Returns how many were forgotten.
    async fn forget_idempotency_keys(
        &self,
        used_before: DateTime<Utc>,
        limit: i64,
    ) -> LogResult<u64>;

    /// A consumer's saved checkpoint (`START` when it has none).
    async fn load_checkpoint(&self, name: &str) -> LogResult<LogPosition>;

    /// Saves a consumer's checkpoint on its own (consumers that write other tables save it
    /// in their own transaction: see [`save_checkpoint_pg`] and [`save_checkpoint_sqlite`]).
    async fn save_checkpoint(&self, name: &str, position: LogPosition) -> LogResult<()>;

    /// Every event after `after`, then every new one as it is committed. Wakes on a commit
    /// signal (LISTEN/NOTIFY on Postgres, in-process on SQLite) and also polls every
    /// `poll_interval`, so a lost signal costs latency, never data.
    ///
    /// The stream never ends on its own: a database error is yielded as an `Err` item and
    /// reading resumes from the same place after the poll interval. Drop it to stop.
    fn subscribe(&self, after: LogPosition, batch_size: i64) -> EventStream;
}

/// [`EventLog::append_many`] (and [`EventLog::append_many_and_ack`]) on top of a single append:
/// merge every batch into one `append` (with the receipts of those batches that have one in
/// `acks`: one entry per batch, or none at all); when a stream conflicts, set its batch aside
/// with the conflict and try again with the rest. Conflicts are rare (duplicate deliveries), so
/// the common case is a single commit.
pub(crate) async fn append_many_with<F, Fut>(
    batches: Vec<AppendBatch>,
    acks: Vec<Option<Receipt>>,
    append: F,
) -> Vec<LogResult<AppendOutcome>>
where
    F: Fn(AppendBatch, Vec<Receipt>) -> Fut,
    Fut: Future<Output = LogResult<AppendOutcome>>,
{
    let mut results: Vec<Option<LogResult<AppendOutcome>>> = batches.iter().map(|_| None).collect();
    let mut owner = std::collections::HashMap::new();
    for (i, batch) in batches.iter().enumerate() {
        if batch.idempotency_key.is_some() || batch.checkpoint.is_some() {
            results[i] = Some(Err(LogError::Invalid(
                "append_many takes batches without idempotency keys or checkpoints".into(),
            )));
            continue;
        }
        for stream in &batch.streams {
            if owner
                .insert(stream.stream_id.clone(), i)
                .is_some_and(|other| other != i)
            {
                results[i] = Some(Err(LogError::Invalid(format!(
                    "stream {} appears in two batches of one append_many",
                    stream.stream_id
                ))));
            }
        }
    }
    loop {
        let pending: Vec<usize> = (0..batches.len())
            .filter(|&i| results[i].is_none())
            .collect();
        if pending.is_empty() {
            break;
        }
        let merged = AppendBatch {
            streams: pending
                .iter()
                .flat_map(|&i| batches[i].streams.iter().cloned())
                .collect(),
            ..AppendBatch::default()
        };
        let receipts = pending
            .iter()
            .filter_map(|&i| acks.get(i).cloned().flatten())
            .collect();
        match append(merged, receipts).await {
            Ok(outcome) => {
                let mut positions = outcome.positions.into_iter();
                for &i in &pending {
                    let count: usize = batches[i].streams.iter().map(|s| s.events.len()).sum();
                    results[i] = Some(Ok(AppendOutcome {
                        positions: positions.by_ref().take(count).collect(),
                        replayed: false,
                    }));
                }
            }
            Err(LogError::Conflict {
                stream_id,
                expected,
            }) => {
                let culprit = owner
                    .get(&stream_id)
                    .copied()
                    .filter(|i| pending.contains(i));
                let culprit = culprit.unwrap_or(pending[0]);
                results[culprit] = Some(Err(LogError::Conflict {
                    stream_id,
                    expected,
                }));
            }
            Err(LogError::Invalid(message)) => {
                for &i in &pending {
                    results[i] = Some(Err(LogError::Invalid(message.clone())));
                }
            }
            Err(LogError::Database(error)) => {
                let message = error.to_string();
                for &i in &pending {
                    results[i] = Some(Err(LogError::Database(sqlx::Error::Protocol(
                        message.clone(),
                    ))));
                }
            }
        }
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(LogError::Invalid("no result".into()))))
        .collect()
}
