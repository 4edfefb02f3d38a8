//! The event log on SQLite (the embedded default for `shoal dev`): what [`LogDialect`] says
//! differs from Postgres.
//!
//! One writer at a time: writes take the database's in-process write lock
//! ([`crate::sqlite_writer`], shared with every other writer of this process) and then
//! `BEGIN IMMEDIATE` (which also serializes against other processes on the same file, waiting
//! up to the busy timeout).
//! With one writer, positions become visible in order, so reading by position is gap-free and
//! `LogPosition::commit == position`. A batch's events go in as bound rows of a `VALUES` list
//! (`crate::sqlite_rows`), where Postgres takes arrays. Commits are signalled to this
//! process's subscriptions directly; appends from another process are seen at the next poll.

use std::ops::{Deref, DerefMut};

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::Row;
use sqlx::sqlite::{
    Sqlite, SqliteConnection, SqliteExecutor, SqlitePool, SqliteQueryResult, SqliteRow,
};
use tokio::sync::watch;

use super::batch::PreparedBatch;
use super::sql::{
    Inserted, LogDialect, SqlEventLog, event, event_columns, queue_error, read_stream_sql,
};
use super::subscription::CommitSignal;
use super::{LogError, LogPosition, LogResult, RecordedEvent};
use crate::dialect::{Dialect, WriteTx};
use crate::queue::{QueueRows, Receipt};
use crate::sqlite_rows::{self, RowsStatement};

/// The SQLite event log. Cheap to clone; clones share the pool, the write lock and the commit
/// signal, so create one per database and clone it.
pub type SqliteEventLog = SqlEventLog<Sqlite>;

/// The statements of a batch's events: these, then the `VALUES` rows, then
/// `insert_events_select!`.
const INSERT_EVENTS_VALUES: &str = "
WITH i(ord, stream_id, stream_version, expected, event_type, schema_version, data, metadata,
       job_id)
AS (VALUES ";

macro_rules! insert_events_select {
    () => {
        ")
INSERT INTO events (stream_id, stream_version, event_type, schema_version, data, metadata,
                    job_id)
SELECT i.stream_id, i.stream_version, i.event_type, i.schema_version, i.data, i.metadata,
       i.job_id
FROM i
WHERE i.expected = 0
   OR i.stream_version <> i.expected + 1
   OR EXISTS (
        SELECT 1 FROM events e
        WHERE e.stream_id = i.stream_id AND e.stream_version = i.expected)
ORDER BY i.ord"
    };
}

/// A batch's events (in chunks, see `crate::sqlite_rows`); see the Postgres `INSERT_EVENTS` for
/// the rules. Each row is `[ord, stream_id, version, expected, event_type, schema_version,
/// data_text, metadata_text, job_id]` (data as text, so it is stored exactly as serialized).
/// A version taken already fails the statement (SQLite then undoes all of it, and
/// `insert_events` runs [`INSERT_EVENTS_RETURNING`] to see which stream it was); rows whose
/// expected version is missing are left out.
static INSERT_EVENTS: RowsStatement =
    RowsStatement::new(INSERT_EVENTS_VALUES, 9, insert_events_select!());

/// [`INSERT_EVENTS`] skipping taken versions too, and returning the rows it inserted.
static INSERT_EVENTS_RETURNING: RowsStatement = RowsStatement::new(
    INSERT_EVENTS_VALUES,
    9,
    concat!(
        insert_events_select!(),
        "
ON CONFLICT (stream_id, stream_version) DO NOTHING
RETURNING stream_id, stream_version, position"
    ),
);

/// The rows inserted after position `$1` (see `insert_events`).
const INSERTED_AFTER: &str =
    "SELECT stream_id, stream_version, position FROM events WHERE position > $1 ORDER BY position";

const READ_ALL: &str = concat!(
    "SELECT ",
    event_columns!("", "position"),
    " FROM events WHERE position > $1 ORDER BY position LIMIT $2"
);

const READ_STREAMS: &str = concat!(
    "SELECT ",
    event_columns!("e.", "position"),
    "
FROM json_each($1) AS s
JOIN events e ON e.stream_id = s.value
ORDER BY s.key, e.stream_version"
);

/// See the Postgres `READ_JOB` (`commit` is `position` here: the cursor is both).
const READ_JOB: &str = concat!(
    "SELECT ",
    event_columns!("", "position"),
    "
FROM (
    SELECT * FROM (
        SELECT * FROM events
        WHERE job_id = $1 AND position >= $3 AND position > $4
        ORDER BY position
        LIMIT $5)
    UNION ALL
    SELECT * FROM (
        SELECT * FROM events
        WHERE job_id IS NULL AND json_extract(data, '$.job_id') = $2
          AND position >= $3 AND position > $4
        ORDER BY position
        LIMIT $5)
)
ORDER BY position
LIMIT $5"
);

/// `events_job_final_failures_idx` (the predicate repeats the index's).
const JOB_FAILED_TASK_STREAMS: &str = "
SELECT DISTINCT stream_id FROM events
WHERE json_extract(data, '$.job_id') = $1 AND stream_id > $2
  AND event_type = 'TaskFailed' AND json_extract(data, '$.final_failure') = 1
ORDER BY stream_id
LIMIT $3";

const READ_STREAMS_UNTIL: &str = concat!(
    "SELECT ",
    event_columns!("e.", "position"),
    "
FROM json_each($1) AS s
JOIN events e ON e.stream_id = s.value
WHERE e.recorded_at <= $2
ORDER BY s.key, e.stream_version"
);

const READ_POSITIONS: &str = concat!(
    "SELECT ",
    event_columns!("e.", "position"),
    "
FROM json_each($1) AS p
JOIN events e ON e.position = p.value
ORDER BY p.key"
);

const SAVE_CHECKPOINT: &str = "
INSERT INTO checkpoints (name, commit_id, position) VALUES ($1, $2, $3)
ON CONFLICT (name) DO UPDATE
SET commit_id = excluded.commit_id, position = excluded.position,
    updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

const FORGET_KEYS: &str = "
DELETE FROM idempotency_keys WHERE key IN (
    SELECT key FROM idempotency_keys
    WHERE created_at < $1 AND outcome IS NOT NULL
    LIMIT $2)";

#[derive(Debug)]
pub(crate) struct Shared {
    signal: watch::Sender<CommitSignal>,
}

/// A write transaction (`BEGIN IMMEDIATE`) holding the database's in-process write lock
/// ([`Dialect::begin_write`]); use it as a connection for [`SqlEventLog::append_in_tx`] and the
/// caller's own statements.
pub struct SqliteWriteTx(WriteTx<Sqlite>);

impl std::fmt::Debug for SqliteWriteTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteWriteTx").finish_non_exhaustive()
    }
}

impl SqliteWriteTx {
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.0.commit().await
    }

    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.0.rollback().await
    }
}

impl Deref for SqliteWriteTx {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        &self.0
    }
}

impl DerefMut for SqliteWriteTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.0
    }
}

impl SqliteEventLog {
    /// Starts a write transaction: waits for the database's write lock, then `BEGIN IMMEDIATE`.
    /// While it is open, every other write through this log waits: do not call `append` or
    /// `save_checkpoint` on the log while holding one (use `append_in_tx`).
    pub async fn begin_write(&self) -> LogResult<SqliteWriteTx> {
        Ok(SqliteWriteTx(Sqlite::begin_write(&self.pool).await?))
    }
}

impl LogDialect for Sqlite {
    type Shared = Shared;
    type WriteTx = SqliteWriteTx;

    const READ_STREAM: &'static str = read_stream_sql!("position");
    const READ_STREAMS: &'static str = READ_STREAMS;
    const READ_STREAMS_UNTIL: &'static str = READ_STREAMS_UNTIL;
    const READ_POSITIONS: &'static str = READ_POSITIONS;
    const SAVE_CHECKPOINT: &'static str = SAVE_CHECKPOINT;
    const READ_JOB: &'static str = READ_JOB;
    const JOB_FAILED_TASK_STREAMS: &'static str = JOB_FAILED_TASK_STREAMS;

    fn new_shared(_pool: &SqlitePool) -> Shared {
        Shared {
            signal: watch::Sender::new(CommitSignal::default()),
        }
    }

    fn signal(shared: &Shared) -> &watch::Sender<CommitSignal> {
        &shared.signal
    }

    async fn begin_append(log: &SqliteEventLog) -> LogResult<SqliteWriteTx> {
        SqliteEventLog::begin_write(log).await
    }

    async fn commit(tx: SqliteWriteTx) -> sqlx::Result<()> {
        tx.commit().await
    }

    async fn rollback(tx: SqliteWriteTx) -> sqlx::Result<()> {
        tx.rollback().await
    }

    async fn insert_events(
        conn: &mut SqliteConnection,
        prepared: &PreparedBatch,
    ) -> LogResult<Vec<Inserted>> {
        let rows = event_rows(prepared);
        let mut inserted = Vec::with_capacity(prepared.len());
        let mut first = 0;
        for chunk in sqlite_rows::chunks(&rows) {
            match INSERT_EVENTS.execute_chunk(&mut *conn, chunk).await {
                Ok(done) => {
                    let len = chunk.len();
                    inserted_rows(&mut *conn, prepared, first, len, &done, &mut inserted).await?;
                }
                Err(error) if is_version_taken(&error) => {
                    let rows = INSERT_EVENTS_RETURNING
                        .fetch_chunk(&mut *conn, chunk)
                        .await
                        .map_err(|error| insert_error(error, prepared))?;
                    read_back(&rows, &mut inserted)?;
                }
                Err(error) => return Err(insert_error(error, prepared)),
            }
            first += chunk.len();
        }
        Ok(inserted)
    }

    async fn delete_messages(conn: &mut SqliteConnection, receipts: &[Receipt]) -> LogResult<()> {
        crate::queue::ack_in_sqlite(conn, receipts)
            .await
            .map_err(queue_error)
    }

    async fn insert_messages(
        conn: &mut SqliteConnection,
        rows: &QueueRows,
        _skip_queued: bool,
    ) -> LogResult<u64> {
        rows.insert_sqlite(conn).await.map_err(queue_error)
    }

    /// Other processes see the commit at their next poll.
    fn announce(_log: &SqliteEventLog, _commit: i64) {}

    /// The signal is fed by this process's commits only.
    fn ensure_signal(_log: &SqliteEventLog) {}

    async fn read_all(
        log: &SqliteEventLog,
        after: LogPosition,
        limit: i64,
    ) -> LogResult<Vec<RecordedEvent>> {
        // Decoded row by row as they arrive, as on Postgres.
        Ok(sqlx::query(READ_ALL)
            .bind(after.position)
            .bind(limit)
            .try_map(|row| event::<Sqlite>(&row))
            .fetch_all(&log.pool)
            .await?)
    }

    fn bind_recorded_bound(
        query: crate::dialect::Q<'_, Self>,
        until: DateTime<Utc>,
    ) -> crate::dialect::Q<'_, Self> {
        // `recorded_at` is `%Y-%m-%dT%H:%M:%fZ` text (milliseconds), which sorts as time
        // does; the bound is truncated to the millisecond in the same form.
        query.bind(until.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
    }

    async fn head(log: &SqliteEventLog) -> LogResult<LogPosition> {
        let head: Option<i64> =
            sqlx::query_scalar("SELECT position FROM events ORDER BY position DESC LIMIT 1")
                .fetch_optional(&log.pool)
                .await?;
        Ok(head.map_or(LogPosition::START, |position| LogPosition {
            commit: position,
            position,
        }))
    }

    async fn save_checkpoint_alone(
        log: &SqliteEventLog,
        name: &str,
        position: LogPosition,
    ) -> LogResult<()> {
        let mut tx = log.begin_write().await?;
        save_checkpoint_sqlite(&mut *tx, name, position).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn forget_idempotency_keys(
        log: &SqliteEventLog,
        used_before: DateTime<Utc>,
        limit: i64,
    ) -> LogResult<u64> {
        // `created_at` is stored as `%Y-%m-%dT%H:%M:%fZ` text, which sorts as time does.
        let bound = used_before.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
        let mut tx = log.begin_write().await?;
        let forgotten = sqlx::query(FORGET_KEYS)
            .bind(bound)
            .bind(limit)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(forgotten)
    }
}

/// A consumer's saved checkpoint (`START` when it has none), read with any executor.
pub async fn load_checkpoint_sqlite(
    executor: impl SqliteExecutor<'_>,
    name: &str,
) -> LogResult<LogPosition> {
    super::sql::load_checkpoint::<Sqlite, _>(executor, name).await
}

/// Saves a consumer's checkpoint with any executor: pass the consumer's write transaction
/// (begun with `BEGIN IMMEDIATE`) so the checkpoint moves exactly when its output commits.
pub async fn save_checkpoint_sqlite(
    executor: impl SqliteExecutor<'_>,
    name: &str,
    position: LogPosition,
) -> LogResult<()> {
    super::sql::save_checkpoint::<Sqlite, _>(executor, name, position).await
}

/// The batch as the rows of `INSERT_EVENTS`, in input order.
fn event_rows(prepared: &PreparedBatch) -> Vec<Vec<Value>> {
    (0..prepared.len())
        .map(|i| {
            vec![
                i.into(),
                prepared.stream_ids[i].clone().into(),
                prepared.versions[i].into(),
                prepared.expected[i].into(),
                prepared.event_types[i].clone().into(),
                prepared.schema_versions[i].into(),
                prepared.data[i].clone().into(),
                prepared.metadata[i].clone().into(),
                prepared.job_ids[i].map(|id| id.to_string()).into(),
            ]
        })
        .collect()
}

/// What a statement of [`INSERT_EVENTS`] that ran inserted, from its count and last rowid:
/// its rows took positions one after another (one writer; a row left out takes none), in input
/// order (`ORDER BY i.ord`), ending at its last rowid. Every row in: each one's position without
/// sending the rows back; some left out (a conflict, so the caller rolls back): read back.
async fn inserted_rows(
    conn: &mut SqliteConnection,
    prepared: &PreparedBatch,
    first: usize,
    len: usize,
    done: &SqliteQueryResult,
    inserted: &mut Vec<Inserted>,
) -> LogResult<()> {
    let added = i64::try_from(done.rows_affected()).unwrap_or(i64::MAX);
    // With no row in, the last rowid is an older statement's.
    if added == 0 {
        return Ok(());
    }
    let start = done.last_insert_rowid() - added + 1;
    if usize::try_from(added) == Ok(len) {
        for (i, position) in (first..first + len).zip(start..) {
            let stream_id = prepared.stream_ids[i].clone();
            inserted.push((stream_id, prepared.versions[i], position, position));
        }
        return Ok(());
    }
    let rows = sqlx::query(INSERTED_AFTER)
        .bind(start - 1)
        .fetch_all(&mut *conn)
        .await?;
    Ok(read_back(&rows, inserted)?)
}

/// Rows `stream_id, stream_version, position` into `inserted`, read by position (as on
/// Postgres).
fn read_back(rows: &[SqliteRow], inserted: &mut Vec<Inserted>) -> sqlx::Result<()> {
    for row in rows {
        let position: i64 = row.try_get(2)?;
        inserted.push((row.try_get(0)?, row.try_get(1)?, position, position));
    }
    Ok(())
}

/// SQLITE_CONSTRAINT_UNIQUE on the stream's version: the statement inserted nothing.
fn is_version_taken(error: &sqlx::Error) -> bool {
    error.as_database_error().is_some_and(|db| {
        db.code().as_deref() == Some("2067") && db.message().contains("events.stream_id")
    })
}

fn insert_error(error: sqlx::Error, prepared: &PreparedBatch) -> LogError {
    // A version taken despite ON CONFLICT: never a server error.
    if is_version_taken(&error) {
        return prepared.first_stream_conflict();
    }
    LogError::Database(error)
}
