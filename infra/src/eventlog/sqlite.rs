//! The event log on SQLite (the embedded default for `shoal dev`).
//!
//! One writer at a time: writes take an in-process lock and then `BEGIN IMMEDIATE` (which
//! also serializes against other processes on the same file, waiting up to the busy timeout).
//! With one writer, positions become visible in order, so reading by position is gap-free and
//! `LogPosition::commit == position`. A batch's events go in as one statement over one JSON
//! array parameter (`json_each`), the way Postgres takes arrays. Commits are signalled to this
//! process's subscriptions directly; appends from another process are seen at the next poll.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::sqlite::{Sqlite, SqliteConnection, SqliteExecutor, SqlitePool};
use sqlx::types::Json;
use sqlx::{Row, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard, watch};

use super::batch::{self, PreparedBatch};
use super::subscription::{self, CommitSignal};
use super::{
    AppendBatch, AppendOutcome, DEFAULT_POLL_INTERVAL, EventLog, EventRow, EventStream, LogError,
    LogPosition, LogResult, RecordedEvent, TxAppend,
};

/// All events of a batch in one statement; see the Postgres `INSERT_EVENTS` for the rules.
/// `?1` is a JSON array of `[stream_id, version, expected, event_type, schema_version,
/// data_text, metadata_text]` rows (data as text, so it is stored exactly as serialized).
const INSERT_EVENTS: &str = "
INSERT INTO events (stream_id, stream_version, event_type, schema_version, data, metadata)
SELECT i.stream_id, i.stream_version, i.event_type, i.schema_version, i.data, i.metadata
FROM (
    SELECT j.key AS ord,
           json_extract(j.value, '$[0]') AS stream_id,
           json_extract(j.value, '$[1]') AS stream_version,
           json_extract(j.value, '$[2]') AS expected,
           json_extract(j.value, '$[3]') AS event_type,
           json_extract(j.value, '$[4]') AS schema_version,
           json_extract(j.value, '$[5]') AS data,
           json_extract(j.value, '$[6]') AS metadata
    FROM json_each(?1) AS j
) AS i
WHERE i.expected = 0
   OR i.stream_version <> i.expected + 1
   OR EXISTS (
        SELECT 1 FROM events e
        WHERE e.stream_id = i.stream_id AND e.stream_version = i.expected)
ORDER BY i.ord
ON CONFLICT (stream_id, stream_version) DO NOTHING
RETURNING stream_id, stream_version, position";

const READ_ALL: &str = "
SELECT position AS commit_id, position, stream_id, stream_version, event_type,
       schema_version, data, metadata, recorded_at
FROM events
WHERE position > ?1
ORDER BY position
LIMIT ?2";

const READ_STREAMS: &str = "
SELECT e.position AS commit_id, e.position, e.stream_id, e.stream_version, e.event_type,
       e.schema_version, e.data, e.metadata, e.recorded_at
FROM json_each(?1) AS s
JOIN events e ON e.stream_id = s.value
ORDER BY s.key, e.stream_version";

const READ_POSITIONS: &str = "
SELECT e.position AS commit_id, e.position, e.stream_id, e.stream_version, e.event_type,
       e.schema_version, e.data, e.metadata, e.recorded_at
FROM json_each(?1) AS p
JOIN events e ON e.position = p.value
ORDER BY p.key";

const READ_STREAM: &str = "
SELECT position AS commit_id, position, stream_id, stream_version, event_type,
       schema_version, data, metadata, recorded_at
FROM events
WHERE stream_id = ?1 AND stream_version > ?2
ORDER BY stream_version";

/// The SQLite event log. Cheap to clone; clones share the pool, the write lock and the commit
/// signal, so create one per database and clone it.
#[derive(Debug, Clone)]
pub struct SqliteEventLog {
    pool: SqlitePool,
    shared: Arc<Shared>,
    poll_interval: Duration,
}

#[derive(Debug)]
struct Shared {
    write_lock: Arc<Mutex<()>>,
    signal: watch::Sender<CommitSignal>,
}

/// A write transaction (`BEGIN IMMEDIATE`) holding the log's write lock; use it as a
/// connection for [`SqliteEventLog::append_in_tx`] and the caller's own statements.
pub struct SqliteWriteTx {
    tx: Transaction<'static, Sqlite>,
    _write_lock: OwnedMutexGuard<()>,
}

impl std::fmt::Debug for SqliteWriteTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteWriteTx").finish_non_exhaustive()
    }
}

impl SqliteWriteTx {
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }

    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.tx.rollback().await
    }
}

impl Deref for SqliteWriteTx {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        &self.tx
    }
}

impl DerefMut for SqliteWriteTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.tx
    }
}

impl SqliteEventLog {
    /// An event log on `pool`, whose database has the migrations applied (see
    /// `crate::db` for the connection settings it expects: WAL, busy timeout).
    pub fn new(pool: SqlitePool) -> Self {
        SqliteEventLog {
            pool,
            shared: Arc::new(Shared {
                write_lock: Arc::new(Mutex::new(())),
                signal: watch::Sender::new(CommitSignal::default()),
            }),
            poll_interval: DEFAULT_POLL_INTERVAL,
        }
    }

    /// How often subscriptions poll when no commit signal arrives (default 250 ms).
    pub fn with_poll_interval(mut self, poll_interval: Duration) -> Self {
        self.poll_interval = poll_interval;
        self
    }

    /// The pool this log uses.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Starts a write transaction: waits for the log's write lock, then `BEGIN IMMEDIATE`.
    /// While it is open, every other write through this log waits: do not call `append` or
    /// `save_checkpoint` on the log while holding one (use `append_in_tx`).
    pub async fn begin_write(&self) -> LogResult<SqliteWriteTx> {
        let write_lock = self.shared.write_lock.clone().lock_owned().await;
        let tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        Ok(SqliteWriteTx {
            tx,
            _write_lock: write_lock,
        })
    }

    /// See [`EventLog::append`].
    #[tracing::instrument(
        name = "eventlog.append",
        skip_all,
        // Errors go back to the caller, which logs them once; a conflict is ordinary flow.
        err(level = "debug"),
        fields(
            backend = "sqlite",
            streams = batch.streams.len(),
            idempotency_key = batch.idempotency_key.as_deref(),
        )
    )]
    pub async fn append(&self, batch: AppendBatch) -> LogResult<AppendOutcome> {
        let prepared = batch::prepare(&batch)?;
        if nothing_to_do(&batch, &prepared) {
            return Ok(AppendOutcome::default());
        }
        let mut tx = self.begin_write().await?;
        match append_prepared(&mut tx, &batch, &prepared).await {
            Ok(written) if written.outcome.replayed => {
                tx.rollback().await?;
                Ok(written.outcome)
            }
            Ok(written) => {
                tx.commit().await?;
                self.committed(&written);
                Ok(written.outcome)
            }
            Err(error) => {
                let _ = tx.rollback().await;
                Err(error)
            }
        }
    }

    /// Appends inside the caller's write transaction (from [`SqliteEventLog::begin_write`]).
    /// On `Err` the caller must roll back; when the outcome is `replayed`, nothing was
    /// written. After the commit, pass the result to [`SqliteEventLog::committed`].
    #[tracing::instrument(
        name = "eventlog.append_in_tx",
        skip_all,
        err(level = "debug"),
        fields(
            backend = "sqlite",
            streams = batch.streams.len(),
            idempotency_key = batch.idempotency_key.as_deref(),
        )
    )]
    pub async fn append_in_tx(
        &self,
        conn: &mut SqliteConnection,
        batch: &AppendBatch,
    ) -> LogResult<TxAppend> {
        let prepared = batch::prepare(batch)?;
        if nothing_to_do(batch, &prepared) {
            return Ok(TxAppend {
                outcome: AppendOutcome::default(),
                commit: None,
            });
        }
        append_prepared(conn, batch, &prepared).await
    }

    /// Announces a committed [`SqliteEventLog::append_in_tx`] to this process's subscriptions.
    pub fn committed(&self, append: &TxAppend) {
        if let Some(commit) = append.commit {
            self.shared
                .signal
                .send_if_modified(|signal| signal.raise(commit));
        }
    }

    /// See [`EventLog::read_all`].
    #[tracing::instrument(
        name = "eventlog.read_all",
        skip_all,
        err(level = "debug"),
        fields(backend = "sqlite", after.position = after.position, limit = limit)
    )]
    pub async fn read_all(&self, after: LogPosition, limit: i64) -> LogResult<Vec<RecordedEvent>> {
        batch::check_limit(limit)?;
        let rows: Vec<EventRow> = sqlx::query_as(READ_ALL)
            .bind(after.position)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(RecordedEvent::from).collect())
    }

    /// See [`EventLog::read_stream`].
    #[tracing::instrument(
        name = "eventlog.read_stream",
        skip_all,
        err(level = "debug"),
        fields(backend = "sqlite", stream_id = stream_id, after_version = after_version)
    )]
    pub async fn read_stream(
        &self,
        stream_id: &str,
        after_version: i64,
    ) -> LogResult<Vec<RecordedEvent>> {
        batch::check_name("stream id", stream_id)?;
        let rows: Vec<EventRow> = sqlx::query_as(READ_STREAM)
            .bind(stream_id)
            .bind(after_version)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(RecordedEvent::from).collect())
    }

    /// See [`EventLog::read_streams`].
    #[tracing::instrument(
        name = "eventlog.read_streams",
        skip_all,
        err(level = "debug"),
        fields(backend = "sqlite", streams = stream_ids.len())
    )]
    pub async fn read_streams(&self, stream_ids: &[String]) -> LogResult<Vec<RecordedEvent>> {
        for stream_id in stream_ids {
            batch::check_name("stream id", stream_id)?;
        }
        if stream_ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<EventRow> = sqlx::query_as(READ_STREAMS)
            .bind(serde_json::to_string(stream_ids).map_err(|e| LogError::Invalid(e.to_string()))?)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(RecordedEvent::from).collect())
    }

    /// See [`EventLog::read_positions`].
    #[tracing::instrument(
        name = "eventlog.read_positions",
        skip_all,
        err(level = "debug"),
        fields(backend = "sqlite", positions = positions.len())
    )]
    pub async fn read_positions(&self, positions: &[i64]) -> LogResult<Vec<RecordedEvent>> {
        if positions.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<EventRow> = sqlx::query_as(READ_POSITIONS)
            .bind(serde_json::to_string(positions).map_err(|e| LogError::Invalid(e.to_string()))?)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(RecordedEvent::from).collect())
    }

    /// See [`EventLog::head`].
    #[tracing::instrument(
        name = "eventlog.head",
        skip_all,
        err(level = "debug"),
        fields(backend = "sqlite")
    )]
    pub async fn head(&self) -> LogResult<LogPosition> {
        let head: Option<i64> =
            sqlx::query_scalar("SELECT position FROM events ORDER BY position DESC LIMIT 1")
                .fetch_optional(&self.pool)
                .await?;
        Ok(head.map_or(LogPosition::START, |position| LogPosition {
            commit: position,
            position,
        }))
    }

    /// See [`EventLog::subscribe`].
    pub fn subscribe(&self, after: LogPosition, batch_size: i64) -> EventStream {
        let reader = self.clone();
        subscription::subscription(
            move |after, limit| {
                let reader = reader.clone();
                async move { reader.read_all(after, limit).await }
            },
            || {},
            self.shared.signal.subscribe(),
            after,
            batch_size,
            self.poll_interval,
        )
    }
}

#[async_trait::async_trait]
impl EventLog for SqliteEventLog {
    async fn append(&self, batch: AppendBatch) -> LogResult<AppendOutcome> {
        SqliteEventLog::append(self, batch).await
    }

    async fn read_all(&self, after: LogPosition, limit: i64) -> LogResult<Vec<RecordedEvent>> {
        SqliteEventLog::read_all(self, after, limit).await
    }

    async fn read_stream(
        &self,
        stream_id: &str,
        after_version: i64,
    ) -> LogResult<Vec<RecordedEvent>> {
        SqliteEventLog::read_stream(self, stream_id, after_version).await
    }

    async fn read_streams(&self, stream_ids: &[String]) -> LogResult<Vec<RecordedEvent>> {
        SqliteEventLog::read_streams(self, stream_ids).await
    }

    async fn read_positions(&self, positions: &[i64]) -> LogResult<Vec<RecordedEvent>> {
        SqliteEventLog::read_positions(self, positions).await
    }

    async fn head(&self) -> LogResult<LogPosition> {
        SqliteEventLog::head(self).await
    }

    async fn forget_idempotency_keys(
        &self,
        used_before: DateTime<Utc>,
        limit: i64,
    ) -> LogResult<u64> {
        batch::check_limit(limit)?;
        // `created_at` is stored as `%Y-%m-%dT%H:%M:%fZ` text, which sorts as time does.
        let bound = used_before.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
        let mut tx = self.begin_write().await?;
        let forgotten = sqlx::query(
            "DELETE FROM idempotency_keys WHERE key IN (
                 SELECT key FROM idempotency_keys
                 WHERE created_at < ?1 AND outcome IS NOT NULL
                 LIMIT ?2)",
        )
        .bind(bound)
        .bind(limit)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(forgotten)
    }

    async fn load_checkpoint(&self, name: &str) -> LogResult<LogPosition> {
        load_checkpoint_sqlite(&self.pool, name).await
    }

    async fn save_checkpoint(&self, name: &str, position: LogPosition) -> LogResult<()> {
        let mut tx = self.begin_write().await?;
        save_checkpoint_sqlite(&mut *tx, name, position).await?;
        tx.commit().await?;
        Ok(())
    }

    fn subscribe(&self, after: LogPosition, batch_size: i64) -> EventStream {
        SqliteEventLog::subscribe(self, after, batch_size)
    }
}

/// A consumer's saved checkpoint (`START` when it has none), read with any executor.
#[tracing::instrument(
    name = "eventlog.load_checkpoint",
    skip_all,
    err(level = "debug"),
    fields(backend = "sqlite", name = name)
)]
pub async fn load_checkpoint_sqlite(
    executor: impl SqliteExecutor<'_>,
    name: &str,
) -> LogResult<LogPosition> {
    batch::check_name("checkpoint name", name)?;
    let row: Option<(i64, i64)> =
        sqlx::query_as("SELECT commit_id, position FROM checkpoints WHERE name = ?1")
            .bind(name)
            .fetch_optional(executor)
            .await?;
    Ok(
        row.map_or(LogPosition::START, |(commit, position)| LogPosition {
            commit,
            position,
        }),
    )
}

/// Saves a consumer's checkpoint with any executor: pass the consumer's write transaction
/// (begun with `BEGIN IMMEDIATE`) so the checkpoint moves exactly when its output commits.
#[tracing::instrument(
    name = "eventlog.save_checkpoint",
    skip_all,
    err(level = "debug"),
    fields(backend = "sqlite", name = name, commit = position.commit, position = position.position)
)]
pub async fn save_checkpoint_sqlite(
    executor: impl SqliteExecutor<'_>,
    name: &str,
    position: LogPosition,
) -> LogResult<()> {
    batch::check_name("checkpoint name", name)?;
    sqlx::query(
        "INSERT INTO checkpoints (name, commit_id, position) VALUES (?1, ?2, ?3)
         ON CONFLICT (name) DO UPDATE
         SET commit_id = excluded.commit_id, position = excluded.position,
             updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
    )
    .bind(name)
    .bind(position.commit)
    .bind(position.position)
    .execute(executor)
    .await?;
    Ok(())
}

fn nothing_to_do(batch: &AppendBatch, prepared: &PreparedBatch) -> bool {
    prepared.is_empty() && batch.idempotency_key.is_none() && batch.checkpoint.is_none()
}

/// The statements of an append, inside a write transaction.
async fn append_prepared(
    conn: &mut SqliteConnection,
    batch: &AppendBatch,
    prepared: &PreparedBatch,
) -> LogResult<TxAppend> {
    if let Some(key) = &batch.idempotency_key {
        let claimed = sqlx::query(
            "INSERT INTO idempotency_keys (key) VALUES (?1) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .execute(&mut *conn)
        .await?
        .rows_affected()
            == 1;
        if !claimed {
            let outcome: Option<Json<AppendOutcome>> =
                sqlx::query_scalar("SELECT outcome FROM idempotency_keys WHERE key = ?1")
                    .bind(key)
                    .fetch_optional(&mut *conn)
                    .await?
                    .ok_or(sqlx::Error::RowNotFound)?;
            let Some(Json(first)) = outcome else {
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
        let rows = sqlx::query(INSERT_EVENTS)
            .bind(rows_as_json(prepared))
            .fetch_all(&mut *conn)
            .await
            .map_err(|error| insert_error(error, prepared))?;
        let mut inserted = Vec::with_capacity(rows.len());
        for row in rows {
            let position: i64 = row.try_get("position")?;
            commit = commit.max(Some(position));
            inserted.push((
                row.try_get("stream_id")?,
                row.try_get("stream_version")?,
                position,
            ));
        }
        positions = prepared.positions_in_input_order(inserted)?;
    }
    let outcome = AppendOutcome {
        positions,
        replayed: false,
    };

    if let Some(key) = &batch.idempotency_key {
        sqlx::query("UPDATE idempotency_keys SET outcome = ?2 WHERE key = ?1")
            .bind(key)
            .bind(Json(&outcome))
            .execute(&mut *conn)
            .await?;
    }
    if let Some(checkpoint) = &batch.checkpoint {
        save_checkpoint_sqlite(&mut *conn, &checkpoint.name, checkpoint.position).await?;
    }
    Ok(TxAppend { outcome, commit })
}

/// The batch as the one JSON array parameter of `INSERT_EVENTS`.
fn rows_as_json(prepared: &PreparedBatch) -> String {
    let rows: Vec<Value> = (0..prepared.len())
        .map(|i| {
            Value::Array(vec![
                prepared.stream_ids[i].clone().into(),
                prepared.versions[i].into(),
                prepared.expected[i].into(),
                prepared.event_types[i].clone().into(),
                prepared.schema_versions[i].into(),
                prepared.data[i].clone().into(),
                prepared.metadata[i].clone().into(),
            ])
        })
        .collect();
    Value::Array(rows).to_string()
}

fn insert_error(error: sqlx::Error, prepared: &PreparedBatch) -> LogError {
    if let Some(db) = error.as_database_error() {
        // SQLITE_CONSTRAINT_UNIQUE despite ON CONFLICT: never a server error.
        if db.code().as_deref() == Some("2067") && db.message().contains("events.stream_id") {
            return prepared.first_stream_conflict();
        }
    }
    LogError::Database(error)
}
