//! The event log on a SQL database, written once for both dialects (see `crate::dialect`).
//!
//! [`SqlEventLog`] is the log; `PostgresEventLog` and `SqliteEventLog` are its two
//! instances. What differs between them is in [`LogDialect`], implemented side by side in
//! `postgres.rs` and `sqlite.rs`: how the batch insert takes its rows (`UNNEST` of arrays
//! against `json_each` of one JSON array), how `read_all` stays gap-free, how a write
//! transaction begins, and how commits are signalled.

use std::future::Future;
use std::ops::DerefMut;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{Executor, Pool};
use tokio::sync::watch;
use uuid::Uuid;

use super::batch::{self, PreparedBatch};
use super::subscription::{self, CommitSignal};
use super::tail::SharedReads;
use super::{
    AppendBatch, AppendOutcome, DEFAULT_POLL_INTERVAL, EventLog, EventStream, LogError,
    LogPosition, LogResult, RecordedEvent, TxAppend,
};
use crate::dialect::{Bind, Dialect, Get, QueryExt, col};
use crate::queue::{OutgoingMessage, QueueError, QueueRows, Receipt};

/// The columns every read selects, in the order [`event`] decodes them; `$commit` is what the
/// backend orders reads by (`LogPosition::commit`).
macro_rules! event_columns {
    ($prefix:literal, $commit:literal) => {
        concat!(
            $prefix,
            $commit,
            " AS commit_id, ",
            $prefix,
            "position, ",
            $prefix,
            "stream_id, ",
            $prefix,
            "stream_version, ",
            $prefix,
            "event_type, ",
            $prefix,
            "schema_version, ",
            $prefix,
            "data, ",
            $prefix,
            "metadata, ",
            $prefix,
            "recorded_at"
        )
    };
}
pub(crate) use event_columns;

/// One stream's events after a version.
macro_rules! read_stream_sql {
    ($commit:literal) => {
        concat!(
            "SELECT ",
            $crate::eventlog::sql::event_columns!("", $commit),
            " FROM events WHERE stream_id = $1 AND stream_version > $2 ORDER BY stream_version"
        )
    };
}
pub(crate) use read_stream_sql;

const LOAD_CHECKPOINT: &str = "SELECT commit_id, position FROM checkpoints WHERE name = $1";

const CLAIM_KEY: &str =
    "INSERT INTO idempotency_keys (key) VALUES ($1) ON CONFLICT (key) DO NOTHING";
const KEY_OUTCOME: &str = "SELECT outcome FROM idempotency_keys WHERE key = $1";
const SAVE_OUTCOME: &str = "UPDATE idempotency_keys SET outcome = $2 WHERE key = $1";

/// A row the batch insert returned: stream id, version, position, and `LogPosition::commit`.
pub(crate) type Inserted = (String, i64, i64, i64);

/// What the event log does differently on each backend. Implemented for `sqlx::Postgres` and
/// `sqlx::Sqlite`.
pub(crate) trait LogDialect:
    Dialect + for<'q> Bind<'q, Json<&'q AppendOutcome>> + Get<Option<Json<AppendOutcome>>>
{
    /// What clones of a log share: the commit signal and what feeds it (and, on SQLite, the
    /// write lock).
    type Shared: std::fmt::Debug + Send + Sync + 'static;
    /// A write transaction of the log, usable as a connection.
    type WriteTx: DerefMut<Target = Self::Connection> + Send;

    /// One stream's events after `$2` (`read_stream_sql!`).
    const READ_STREAM: &'static str;
    /// The events of the streams `$1` (an id list, see `Dialect::bind_strs`), by stream.
    const READ_STREAMS: &'static str;
    /// [`LogDialect::READ_STREAMS`] recorded at or before `$2` (see
    /// [`LogDialect::recorded_bound`]).
    const READ_STREAMS_UNTIL: &'static str;
    /// The events at the positions `$1` (see `Dialect::bind_i64s`), in that order.
    const READ_POSITIONS: &'static str;
    /// Upserts checkpoint `$1` at (`$2`, `$3`).
    const SAVE_CHECKPOINT: &'static str;
    /// Events of job `$1` (as an id) or `$2` (its text) after (`$3`, `$4`) in read order, at
    /// most `$5` (`events_job_id_idx`, and `events_job_json_idx` for events without a `job_id`).
    const READ_JOB: &'static str;
    /// Streams of job `$1` (text) with a final `TaskFailed`, after stream id `$2`, at most
    /// `$3` (`events_job_final_failures_idx`).
    const JOB_FAILED_TASK_STREAMS: &'static str;

    fn new_shared(pool: &Pool<Self>) -> Self::Shared;

    fn signal(shared: &Self::Shared) -> &watch::Sender<CommitSignal>;

    /// Starts a write transaction for an append of the log's own.
    fn begin_append(
        log: &SqlEventLog<Self>,
    ) -> impl Future<Output = LogResult<Self::WriteTx>> + Send;

    fn commit(tx: Self::WriteTx) -> impl Future<Output = sqlx::Result<()>> + Send;

    fn rollback(tx: Self::WriteTx) -> impl Future<Output = sqlx::Result<()>> + Send;

    /// Inserts the batch in one statement; returns the inserted rows (a stream whose rows are
    /// missing conflicted). Errors that are about the input become `Conflict` or `Invalid`.
    fn insert_events<'c>(
        conn: &'c mut Self::Connection,
        prepared: &'c PreparedBatch,
    ) -> impl Future<Output = LogResult<Vec<Inserted>>> + Send + 'c;

    /// Inserts task-queue rows inside the append's transaction (`append_and_send`); how many
    /// were new. Unless `skip_queued`, a message queued already may fail the insert (and the
    /// transaction) with an error for which `QueueRows::is_queued_already` holds.
    fn insert_messages<'c>(
        conn: &'c mut Self::Connection,
        rows: &'c QueueRows,
        skip_queued: bool,
    ) -> impl Future<Output = LogResult<u64>> + Send + 'c;

    /// Deletes the task queue's messages these receipts hold, inside the caller's transaction
    /// (what `TaskQueue::ack` does on its own); a stale or malformed receipt deletes nothing.
    fn delete_messages<'c>(
        conn: &'c mut Self::Connection,
        receipts: &'c [Receipt],
    ) -> impl Future<Output = LogResult<()>> + Send + 'c;

    /// Tells other processes of a commit (this process's subscriptions are told already).
    fn announce(log: &SqlEventLog<Self>, commit: i64);

    /// Called before a subscription waits: starts whatever feeds the commit signal.
    fn ensure_signal(log: &SqlEventLog<Self>);

    /// [`EventLog::read_all`] from the database (the log serves what it can from what another
    /// reader has just read first, `tail`).
    fn read_all(
        log: &SqlEventLog<Self>,
        after: LogPosition,
        limit: i64,
    ) -> impl Future<Output = LogResult<Vec<RecordedEvent>>> + Send;

    /// Binds the bound of [`LogDialect::READ_STREAMS_UNTIL`]: an instant compared with
    /// `recorded_at` as that column is stored.
    fn bind_recorded_bound(
        query: crate::dialect::Q<'_, Self>,
        until: DateTime<Utc>,
    ) -> crate::dialect::Q<'_, Self>;

    /// See [`EventLog::head`].
    fn head(log: &SqlEventLog<Self>) -> impl Future<Output = LogResult<LogPosition>> + Send;

    /// See [`EventLog::save_checkpoint`] (one statement on Postgres; on SQLite, in a write
    /// transaction of the log).
    fn save_checkpoint_alone(
        log: &SqlEventLog<Self>,
        name: &str,
        position: LogPosition,
    ) -> impl Future<Output = LogResult<()>> + Send;

    /// See [`EventLog::forget_idempotency_keys`].
    fn forget_idempotency_keys(
        log: &SqlEventLog<Self>,
        used_before: DateTime<Utc>,
        limit: i64,
    ) -> impl Future<Output = LogResult<u64>> + Send;
}

/// The event log on a Postgres or SQLite pool (`PostgresEventLog`, `SqliteEventLog`). Cheap to
/// clone; clones share the pool and the commit signalling, so create one per process and
/// database and clone it: subscriptions of one instance wake at once on its own appends (on
/// Postgres, on other instances' appends too, through LISTEN/NOTIFY).
#[allow(private_bounds)]
pub struct SqlEventLog<D: LogDialect> {
    pub(super) pool: Pool<D>,
    pub(super) shared: Arc<D::Shared>,
    /// What this process's readers read last, for the others (see `tail`).
    reads: Arc<SharedReads>,
    poll_interval: Duration,
    /// Postgres only: read without the transaction horizon (`naive_reading_for_tests`).
    pub(super) naive_reading: bool,
}

impl<D: LogDialect> Clone for SqlEventLog<D> {
    fn clone(&self) -> Self {
        SqlEventLog {
            pool: self.pool.clone(),
            shared: self.shared.clone(),
            reads: self.reads.clone(),
            poll_interval: self.poll_interval,
            naive_reading: self.naive_reading,
        }
    }
}

impl<D: LogDialect> std::fmt::Debug for SqlEventLog<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlEventLog")
            .field("backend", &D::BACKEND)
            .field("pool", &self.pool)
            .field("shared", &self.shared)
            .field("poll_interval", &self.poll_interval)
            .finish()
    }
}

#[allow(private_bounds)]
impl<D: LogDialect> SqlEventLog<D> {
    /// An event log on `pool`, whose database has the migrations applied (see `crate::db` for
    /// the connection settings SQLite expects). On Postgres, subscriptions use one connection
    /// of the pool for LISTEN while any is open, and commit announcements one of their own.
    pub fn new(pool: Pool<D>) -> Self {
        SqlEventLog {
            shared: Arc::new(D::new_shared(&pool)),
            reads: Arc::default(),
            pool,
            poll_interval: DEFAULT_POLL_INTERVAL,
            naive_reading: false,
        }
    }

    /// How often subscriptions poll when no commit signal arrives (default 250 ms).
    pub fn with_poll_interval(mut self, poll_interval: Duration) -> Self {
        self.poll_interval = poll_interval;
        self
    }

    /// The pool this log uses.
    pub fn pool(&self) -> &Pool<D> {
        &self.pool
    }

    /// How many events `read_all` has read from the database rather than from what another
    /// reader of this log (or a clone) had just read (see `tail`). For tests.
    #[doc(hidden)]
    pub fn events_read_from_database(&self) -> u64 {
        self.reads.database_rows()
    }

    /// Appends inside the caller's write transaction (on Postgres any READ COMMITTED
    /// transaction, on SQLite one from `SqliteEventLog::begin_write`), for example events and
    /// outbox rows committed together. On `Err` the caller must roll back (a `Conflict` leaves
    /// the transaction unusable). When the outcome is `replayed`, nothing was written and the
    /// caller's own writes are most likely a duplicate too. After the commit, pass the result
    /// to [`SqlEventLog::committed`].
    #[tracing::instrument(
        name = "eventlog.append_in_tx",
        skip_all,
        err(level = "debug"),
        fields(
            backend = D::BACKEND,
            streams = batch.streams.len(),
            idempotency_key = batch.idempotency_key.as_deref(),
        )
    )]
    pub async fn append_in_tx(
        &self,
        conn: &mut D::Connection,
        batch: &AppendBatch,
    ) -> LogResult<TxAppend> {
        let prepared = batch::prepare(batch)?;
        if nothing_to_do(batch, &prepared) {
            return Ok(TxAppend {
                outcome: AppendOutcome::default(),
                commit: None,
            });
        }
        append_prepared::<D>(conn, batch, &prepared).await
    }

    /// One append and, in its transaction, the deletion of the messages `receipts` hold
    /// ([`EventLog::append_many_and_ack`]).
    async fn append_acking(
        &self,
        batch: AppendBatch,
        receipts: Vec<Receipt>,
    ) -> LogResult<AppendOutcome> {
        if receipts.is_empty() {
            return self.append(batch).await;
        }
        // No idempotency key here (`append_many` refuses them), so nothing is ever replayed.
        let prepared = batch::prepare(&batch)?;
        let mut tx = D::begin_append(self).await?;
        let written = async {
            let written = append_prepared::<D>(&mut tx, &batch, &prepared).await?;
            D::delete_messages(&mut tx, &receipts).await?;
            Ok(written)
        }
        .await;
        match written {
            Ok(written) => {
                D::commit(tx).await?;
                self.committed(&written);
                Ok(written.outcome)
            }
            Err(error) => {
                let _ = D::rollback(tx).await;
                Err(error)
            }
        }
    }

    /// Announces a committed [`SqlEventLog::append_in_tx`]: wakes this process's subscriptions
    /// at once (and, on Postgres, other processes' through NOTIFY).
    pub fn committed(&self, append: &TxAppend) {
        let Some(commit) = append.commit else {
            return;
        };
        D::signal(&self.shared).send_if_modified(|signal| signal.raise(commit));
        D::announce(self, commit);
    }
}

#[async_trait::async_trait]
impl<D: LogDialect> EventLog for SqlEventLog<D> {
    #[tracing::instrument(
        name = "eventlog.append",
        skip_all,
        // Errors go back to the caller, which logs them once; a conflict is ordinary flow.
        err(level = "debug"),
        fields(
            backend = D::BACKEND,
            streams = batch.streams.len(),
            idempotency_key = batch.idempotency_key.as_deref(),
        )
    )]
    async fn append(&self, batch: AppendBatch) -> LogResult<AppendOutcome> {
        let prepared = batch::prepare(&batch)?;
        if nothing_to_do(&batch, &prepared) {
            return Ok(AppendOutcome::default());
        }
        let mut tx = D::begin_append(self).await?;
        match append_prepared::<D>(&mut tx, &batch, &prepared).await {
            Ok(written) if written.outcome.replayed => {
                D::rollback(tx).await?;
                Ok(written.outcome)
            }
            Ok(written) => {
                D::commit(tx).await?;
                self.committed(&written);
                Ok(written.outcome)
            }
            Err(error) => {
                // The append's own error is the one to report; a failed rollback only means
                // the connection is gone, which rolls back too.
                let _ = D::rollback(tx).await;
                Err(error)
            }
        }
    }

    #[tracing::instrument(
        name = "eventlog.append_and_send",
        skip_all,
        err(level = "debug"),
        fields(
            backend = D::BACKEND,
            streams = batch.streams.len(),
            messages = messages.len(),
        )
    )]
    async fn append_and_send(
        &self,
        batch: AppendBatch,
        messages: Vec<OutgoingMessage>,
    ) -> LogResult<AppendOutcome> {
        let prepared = batch::prepare(&batch)?;
        // Serialized before the transaction begins, to keep it short.
        let rows = QueueRows::new(&messages).map_err(queue_error)?;
        if nothing_to_do(&batch, &prepared) && rows.is_empty() {
            return Ok(AppendOutcome::default());
        }
        // The messages are taken as new first (the cheaper insert); if one was queued already,
        // the whole append again, skipping those.
        let mut skip_queued = false;
        loop {
            let mut tx = D::begin_append(self).await?;
            let written = match append_prepared::<D>(&mut tx, &batch, &prepared).await {
                Ok(written) if written.outcome.replayed => {
                    D::rollback(tx).await?;
                    return Ok(written.outcome);
                }
                Ok(written) => written,
                Err(error) => {
                    let _ = D::rollback(tx).await;
                    return Err(error);
                }
            };
            if !rows.is_empty()
                && let Err(error) = D::insert_messages(&mut tx, &rows, skip_queued).await
            {
                let _ = D::rollback(tx).await;
                match &error {
                    LogError::Database(db) if !skip_queued && QueueRows::is_queued_already(db) => {
                        skip_queued = true;
                        continue;
                    }
                    _ => return Err(error),
                }
            }
            D::commit(tx).await?;
            self.committed(&written);
            return Ok(written.outcome);
        }
    }

    #[tracing::instrument(
        name = "eventlog.append_many_and_ack",
        skip_all,
        fields(backend = D::BACKEND, batches = batches.len())
    )]
    async fn append_many_and_ack(
        &self,
        batches: Vec<AppendBatch>,
        acks: Vec<Option<Receipt>>,
    ) -> Vec<LogResult<AppendOutcome>> {
        super::append_many_with(batches, acks, |merged, receipts| {
            self.append_acking(merged, receipts)
        })
        .await
    }

    #[tracing::instrument(
        name = "eventlog.read_all",
        skip_all,
        err(level = "debug"),
        fields(backend = D::BACKEND, after.commit = after.commit, after.position = after.position, limit = limit)
    )]
    async fn read_all(&self, after: LogPosition, limit: i64) -> LogResult<Vec<RecordedEvent>> {
        batch::check_limit(limit)?;
        if self.naive_reading {
            return D::read_all(self, after, limit).await;
        }
        self.reads
            .read_all(after, limit, |from, limit| D::read_all(self, from, limit))
            .await
    }

    #[tracing::instrument(
        name = "eventlog.read_stream",
        skip_all,
        err(level = "debug"),
        fields(backend = D::BACKEND, stream_id = stream_id, after_version = after_version)
    )]
    async fn read_stream(
        &self,
        stream_id: &str,
        after_version: i64,
    ) -> LogResult<Vec<RecordedEvent>> {
        batch::check_name("stream id", stream_id)?;
        let query = sqlx::query::<D>(D::READ_STREAM)
            .arg(stream_id)
            .arg(after_version);
        events::<D>(query.all(D::pool(&self.pool)).await?)
    }

    #[tracing::instrument(
        name = "eventlog.read_streams",
        skip_all,
        err(level = "debug"),
        fields(backend = D::BACKEND, streams = stream_ids.len())
    )]
    async fn read_streams(&self, stream_ids: &[String]) -> LogResult<Vec<RecordedEvent>> {
        for stream_id in stream_ids {
            batch::check_name("stream id", stream_id)?;
        }
        if stream_ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = stream_ids.iter().map(String::as_str).collect();
        let query = sqlx::query::<D>(D::READ_STREAMS).strs(ids);
        events::<D>(query.all(D::pool(&self.pool)).await?)
    }

    #[tracing::instrument(
        name = "eventlog.read_job",
        skip_all,
        err(level = "debug"),
        fields(backend = D::BACKEND, %job_id, limit)
    )]
    async fn read_job(
        &self,
        job_id: Uuid,
        after: LogPosition,
        limit: i64,
    ) -> LogResult<Vec<RecordedEvent>> {
        if limit < 1 {
            return Err(LogError::Invalid("limit must be at least 1".into()));
        }
        let query = sqlx::query::<D>(D::READ_JOB)
            .id(job_id)
            .arg(job_id.to_string())
            .arg(after.commit)
            .arg(after.position)
            .arg(limit);
        events::<D>(query.all(D::pool(&self.pool)).await?)
    }

    #[tracing::instrument(
        name = "eventlog.read_streams_until",
        skip_all,
        err(level = "debug"),
        fields(backend = D::BACKEND, streams = stream_ids.len(), %until)
    )]
    async fn read_streams_until(
        &self,
        stream_ids: &[String],
        until: DateTime<Utc>,
    ) -> LogResult<Vec<RecordedEvent>> {
        for stream_id in stream_ids {
            batch::check_name("stream id", stream_id)?;
        }
        if stream_ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = stream_ids.iter().map(String::as_str).collect();
        let query =
            D::bind_recorded_bound(sqlx::query::<D>(D::READ_STREAMS_UNTIL).strs(ids), until);
        events::<D>(query.all(D::pool(&self.pool)).await?)
    }

    #[tracing::instrument(
        name = "eventlog.job_failed_task_streams",
        skip_all,
        err(level = "debug"),
        fields(backend = D::BACKEND, %job_id, limit)
    )]
    async fn job_failed_task_streams(
        &self,
        job_id: Uuid,
        after: Option<&str>,
        limit: i64,
    ) -> LogResult<Vec<String>> {
        if limit < 1 {
            return Err(LogError::Invalid("limit must be at least 1".into()));
        }
        let rows = sqlx::query::<D>(D::JOB_FAILED_TASK_STREAMS)
            .arg(job_id.to_string())
            .arg(after.unwrap_or("").to_owned())
            .arg(limit)
            .all(D::pool(&self.pool))
            .await?;
        rows.iter()
            .map(|row| Ok(col::<D, String>(row, 0)?))
            .collect()
    }

    #[tracing::instrument(
        name = "eventlog.read_positions",
        skip_all,
        err(level = "debug"),
        fields(backend = D::BACKEND, positions = positions.len())
    )]
    async fn read_positions(&self, positions: &[i64]) -> LogResult<Vec<RecordedEvent>> {
        if positions.is_empty() {
            return Ok(Vec::new());
        }
        let query = sqlx::query::<D>(D::READ_POSITIONS).i64s(positions.to_vec());
        events::<D>(query.all(D::pool(&self.pool)).await?)
    }

    #[tracing::instrument(
        name = "eventlog.head",
        skip_all,
        err(level = "debug"),
        fields(backend = D::BACKEND)
    )]
    async fn head(&self) -> LogResult<LogPosition> {
        D::head(self).await
    }

    async fn forget_idempotency_keys(
        &self,
        used_before: DateTime<Utc>,
        limit: i64,
    ) -> LogResult<u64> {
        batch::check_limit(limit)?;
        D::forget_idempotency_keys(self, used_before, limit).await
    }

    async fn load_checkpoint(&self, name: &str) -> LogResult<LogPosition> {
        load_checkpoint::<D, _>(D::pool(&self.pool), name).await
    }

    async fn save_checkpoint(&self, name: &str, position: LogPosition) -> LogResult<()> {
        D::save_checkpoint_alone(self, name, position).await
    }

    fn subscribe(&self, after: LogPosition, batch_size: i64) -> EventStream {
        let reader = self.clone();
        let ensure = self.clone();
        subscription::subscription(
            move |after, limit| {
                let reader = reader.clone();
                async move { EventLog::read_all(&reader, after, limit).await }
            },
            move || D::ensure_signal(&ensure),
            D::signal(&self.shared).subscribe(),
            after,
            batch_size,
            self.poll_interval,
        )
    }
}

/// A consumer's saved checkpoint (`START` when it has none), read with any executor.
#[tracing::instrument(
    name = "eventlog.load_checkpoint",
    skip_all,
    err(level = "debug"),
    fields(backend = D::BACKEND, name = name)
)]
pub(crate) async fn load_checkpoint<'c, D: Dialect, E: Executor<'c, Database = D>>(
    executor: E,
    name: &str,
) -> LogResult<LogPosition> {
    batch::check_name("checkpoint name", name)?;
    let row = sqlx::query::<D>(LOAD_CHECKPOINT)
        .arg(name)
        .optional(executor)
        .await?;
    Ok(match row {
        Some(row) => LogPosition {
            commit: col::<D, _>(&row, 0)?,
            position: col::<D, _>(&row, 1)?,
        },
        None => LogPosition::START,
    })
}

/// Saves a consumer's checkpoint with any executor: pass the consumer's write transaction so
/// the checkpoint moves exactly when its output commits.
#[tracing::instrument(
    name = "eventlog.save_checkpoint",
    skip_all,
    err(level = "debug"),
    fields(backend = D::BACKEND, name = name, commit = position.commit, position = position.position)
)]
pub(crate) async fn save_checkpoint<'c, D: LogDialect, E: Executor<'c, Database = D>>(
    executor: E,
    name: &str,
    position: LogPosition,
) -> LogResult<()> {
    batch::check_name("checkpoint name", name)?;
    sqlx::query::<D>(D::SAVE_CHECKPOINT)
        .arg(name)
        .arg(position.commit)
        .arg(position.position)
        .run(executor)
        .await?;
    Ok(())
}

/// A queue failure inside an append: the database's errors stay retryable, the rest are about
/// the input.
pub(crate) fn queue_error(error: QueueError) -> LogError {
    match error {
        QueueError::Database(error) => LogError::Database(error),
        other => LogError::Invalid(other.to_string()),
    }
}

fn nothing_to_do(batch: &AppendBatch, prepared: &PreparedBatch) -> bool {
    prepared.is_empty() && batch.idempotency_key.is_none() && batch.checkpoint.is_none()
}

/// The statements of an append, inside a write transaction.
async fn append_prepared<D: LogDialect>(
    conn: &mut D::Connection,
    batch: &AppendBatch,
    prepared: &PreparedBatch,
) -> LogResult<TxAppend> {
    if let Some(key) = &batch.idempotency_key {
        // Claims the key. On Postgres a concurrent append with the same key waits here until
        // the first commits (then finds the key taken) or rolls back (then claims it).
        let claimed = sqlx::query::<D>(CLAIM_KEY)
            .arg(key.as_str())
            .run(D::conn(&mut *conn))
            .await?
            == 1;
        if !claimed {
            let row = sqlx::query::<D>(KEY_OUTCOME)
                .arg(key.as_str())
                .optional(D::conn(&mut *conn))
                .await?
                .ok_or(sqlx::Error::RowNotFound)?;
            let Some(Json(first)) = col::<D, Option<Json<AppendOutcome>>>(&row, 0)? else {
                return Err(LogError::Invalid(format!(
                    "idempotency key {key:?} is used twice in one transaction"
                )));
            };
            return Ok(TxAppend {
                outcome: AppendOutcome {
                    replayed: true,
                    ..first
                },
                commit: None,
            });
        }
    }

    let mut positions = Vec::new();
    let mut commit = None;
    if !prepared.is_empty() {
        let rows = D::insert_events(&mut *conn, prepared).await?;
        let mut inserted = Vec::with_capacity(rows.len());
        for (stream_id, version, position, row_commit) in rows {
            commit = commit.max(Some(row_commit));
            inserted.push((stream_id, version, position));
        }
        positions = prepared.positions_in_input_order(inserted)?;
    }
    let outcome = AppendOutcome {
        positions,
        replayed: false,
    };

    if let Some(key) = &batch.idempotency_key {
        sqlx::query::<D>(SAVE_OUTCOME)
            .arg(key.as_str())
            .arg(Json(&outcome))
            .run(D::conn(&mut *conn))
            .await?;
    }
    if let Some(checkpoint) = &batch.checkpoint {
        save_checkpoint::<D, _>(D::conn(&mut *conn), &checkpoint.name, checkpoint.position).await?;
    }
    Ok(TxAppend { outcome, commit })
}

/// Rows selected with `event_columns!`, as events.
pub(crate) fn events<D: Dialect>(rows: Vec<D::Row>) -> LogResult<Vec<RecordedEvent>> {
    Ok(rows.iter().map(event::<D>).collect::<sqlx::Result<_>>()?)
}

/// Decoded by column position (every read selects the columns in this order): looking each
/// column up by name costs a hash lookup per column per row, on the log's hottest path. The
/// batch reads decode each row as it arrives (`Query::try_map`), so that no row outlives its
/// decoding: see `read_all` of each dialect.
pub(crate) fn event<D: Dialect>(row: &D::Row) -> sqlx::Result<RecordedEvent> {
    Ok(RecordedEvent {
        log_position: LogPosition {
            commit: col::<D, _>(row, 0)?,
            position: col::<D, _>(row, 1)?,
        },
        stream_id: col::<D, _>(row, 2)?,
        stream_version: col::<D, _>(row, 3)?,
        event_type: col::<D, _>(row, 4)?,
        schema_version: col::<D, _>(row, 5)?,
        data: col::<D, Json<_>>(row, 6)?.0,
        metadata: col::<D, Json<_>>(row, 7)?.0,
        recorded_at: col::<D, _>(row, 8)?,
    })
}
