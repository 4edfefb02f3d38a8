//! The event log on Postgres: what [`LogDialect`] says differs from SQLite.
//!
//! Gap-free reading (ADR 0002): a sequence value is taken at insert but becomes visible at
//! commit, so transactions commit out of position order and a reader that keeps only "the last
//! position I saw" can pass an event that commits later, and never see it. Each event therefore
//! records its transaction id (`xid8`), readers order by `(transaction_id, position)`, and read
//! only events of transactions below `pg_snapshot_xmin(pg_current_snapshot())`: every
//! transaction below that horizon has ended, so nothing can ever appear behind a reader. The
//! price is latency: a reader does not pass any transaction that is still running (on the whole
//! cluster), so keep transactions that write short.
//!
//! Commits are announced with `pg_notify('shoal_events', <transaction id>)` after the commit
//! (see `crate::notify`).

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgDatabaseError, PgExecutor, PgPool, PgRow, Postgres};
use sqlx::{Row, Transaction};
use tokio::sync::watch;

use super::batch::PreparedBatch;
use super::sql::{
    Inserted, LogDialect, SqlEventLog, event, event_columns, queue_error, read_stream_sql,
};
use super::subscription::CommitSignal;
use super::{LogError, LogPosition, LogResult, RecordedEvent};
use crate::notify::{Heard, Listener, Notifier};
use crate::queue::{QueueRows, Receipt};

/// The Postgres event log. Cheap to clone; clones share the pool and the commit signalling.
/// Create one per process and clone it: subscriptions of one instance wake at once on its own
/// appends, and on other instances' appends through LISTEN/NOTIFY.
pub type PostgresEventLog = SqlEventLog<Postgres>;

/// The LISTEN/NOTIFY channel on which commits are announced; the payload is the committing
/// transaction's id (`LogPosition::commit`).
pub const NOTIFY_CHANNEL: &str = "shoal_events";

/// All events of a batch in one statement. Rows of a stream whose expected version does not
/// exist yet are filtered out (an append may not leave a hole in a stream's versions); the
/// caller compares what came back with the input, and a stream with missing rows is a
/// `Conflict`. A row whose version is taken violates the unique `(stream_id, stream_version)`,
/// which aborts the transaction and is that stream's `Conflict` (`insert_error`), as a missing
/// row is: either way the append rolls back. No `ON CONFLICT`, which would probe the key before
/// each row and log a second record for it (a speculative insertion), on the worker's hottest
/// path, for a case that is rare and rolls back anyway (docs/benchmarks.md, "Issue 15:
/// statements and WAL per task"). Rows are inserted in input order, so positions (and the read
/// order within the transaction) follow the input.
const INSERT_EVENTS: &str = "
INSERT INTO events (stream_id, stream_version, event_type, schema_version, data, metadata,
                    job_id)
SELECT i.stream_id, i.stream_version, i.event_type, i.schema_version, i.data, i.metadata,
       i.job_id
FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::int[], $6::json[], $7::json[],
            $8::uuid[])
    WITH ORDINALITY
    AS i(stream_id, stream_version, expected, event_type, schema_version, data, metadata, job_id,
         ord)
WHERE i.expected = 0
   OR i.stream_version <> i.expected + 1
   OR EXISTS (
        SELECT 1 FROM events e
        WHERE e.stream_id = i.stream_id AND e.stream_version = i.expected)
ORDER BY i.ord
RETURNING stream_id, stream_version, position, transaction_id";

/// The rows of new streams (expected version 0), when they end the batch (see
/// `PreparedBatch::new_streams_from`): a plain insert. A stream that exists already violates
/// the unique `(stream_id, stream_version)`, which aborts the transaction and is that stream's
/// `Conflict`; without `ON CONFLICT` the database neither probes the key before each row nor
/// logs a second record for it, which is most of what a big expansion chunk costs beyond its
/// rows (docs/benchmarks.md, issue 15).
const INSERT_NEW_STREAMS: &str = "
INSERT INTO events (stream_id, stream_version, event_type, schema_version, data, metadata,
                    job_id)
SELECT i.stream_id, i.stream_version, i.event_type, i.schema_version, i.data, i.metadata,
       i.job_id
FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::int[], $5::json[], $6::json[], $7::uuid[])
    WITH ORDINALITY
    AS i(stream_id, stream_version, event_type, schema_version, data, metadata, job_id, ord)
ORDER BY i.ord
RETURNING stream_id, stream_version, position, transaction_id";

/// Fewest rows of new streams after checked rows for which `INSERT_NEW_STREAMS` is worth its
/// own statement.
const PLAIN_INSERT_MIN_ROWS: usize = 64;

const READ_ALL: &str = concat!(
    "SELECT ",
    event_columns!("", "transaction_id"),
    "
FROM events
WHERE (transaction_id, position) > ($1, $2)
  AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
ORDER BY transaction_id, position
LIMIT $3"
);

/// The broken reader, kept to show the remedy is needed (see `naive_reading_for_tests`).
const READ_ALL_NAIVE: &str = concat!(
    "SELECT ",
    event_columns!("", "transaction_id"),
    " FROM events WHERE position > $1 ORDER BY position LIMIT $2"
);

const HEAD: &str = "
SELECT transaction_id, position
FROM events
WHERE transaction_id < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
ORDER BY transaction_id DESC, position DESC
LIMIT 1";

const HEAD_NAIVE: &str = "
SELECT transaction_id, position FROM events ORDER BY position DESC LIMIT 1";

const READ_STREAMS: &str = concat!(
    "SELECT ",
    event_columns!("e.", "transaction_id"),
    "
FROM UNNEST($1::text[]) WITH ORDINALITY AS s(stream_id, ord)
JOIN events e ON e.stream_id = s.stream_id
ORDER BY s.ord, e.stream_version"
);

/// The job's entries after the cursor, in log order: those with a `job_id` (`events_job_id_idx`,
/// `$1`) and those indexed by their JSON field (`events_job_json_idx`, `$2`: events from before
/// the column, see its migration), each in index order, merged.
const READ_JOB: &str = concat!(
    "SELECT ",
    event_columns!("", "transaction_id"),
    "
FROM ((
    SELECT * FROM events
    WHERE job_id = $1 AND (transaction_id, position) > ($3, $4)
    ORDER BY job_id, transaction_id, position
    LIMIT $5
) UNION ALL (
    SELECT * FROM events
    WHERE job_id IS NULL AND (data->>'job_id') = $2 AND (transaction_id, position) > ($3, $4)
    ORDER BY (data->>'job_id'), transaction_id, position
    LIMIT $5
)) AS e
ORDER BY transaction_id, position
LIMIT $5"
);

/// `events_job_final_failures_idx` (the predicate repeats the index's).
const JOB_FAILED_TASK_STREAMS: &str = "
SELECT DISTINCT stream_id FROM events
WHERE (data->>'job_id') = $1 AND stream_id > $2
  AND event_type = 'TaskFailed' AND (data->>'final_failure') = 'true'
ORDER BY stream_id
LIMIT $3";

const READ_STREAMS_UNTIL: &str = concat!(
    "SELECT ",
    event_columns!("e.", "transaction_id"),
    "
FROM UNNEST($1::text[]) WITH ORDINALITY AS s(stream_id, ord)
JOIN events e ON e.stream_id = s.stream_id
WHERE e.recorded_at <= $2
ORDER BY s.ord, e.stream_version"
);

const READ_POSITIONS: &str = concat!(
    "SELECT ",
    event_columns!("e.", "transaction_id"),
    "
FROM UNNEST($1::bigint[]) WITH ORDINALITY AS p(position, ord)
JOIN events e ON e.position = p.position
ORDER BY p.ord"
);

const SAVE_CHECKPOINT: &str = "
INSERT INTO checkpoints (name, commit_id, position) VALUES ($1, $2, $3)
ON CONFLICT (name) DO UPDATE
SET commit_id = EXCLUDED.commit_id, position = EXCLUDED.position, updated_at = now()";

const FORGET_KEYS: &str = "
DELETE FROM idempotency_keys WHERE key IN (
    SELECT key FROM idempotency_keys
    WHERE created_at < $1 AND outcome IS NOT NULL
    LIMIT $2
    FOR UPDATE SKIP LOCKED)";

#[derive(Debug)]
pub(crate) struct Shared {
    /// Announces the highest transaction id this process committed.
    notifier: Notifier<i64>,
    /// What subscriptions wait on: local commits, and notifications from other processes.
    signal: watch::Sender<CommitSignal>,
    listener: Listener,
}

impl LogDialect for Postgres {
    type Shared = Shared;
    type WriteTx = Transaction<'static, Postgres>;

    const READ_STREAM: &'static str = read_stream_sql!("transaction_id");
    const READ_STREAMS: &'static str = READ_STREAMS;
    const READ_STREAMS_UNTIL: &'static str = READ_STREAMS_UNTIL;
    const READ_POSITIONS: &'static str = READ_POSITIONS;
    const SAVE_CHECKPOINT: &'static str = SAVE_CHECKPOINT;
    const READ_JOB: &'static str = READ_JOB;
    const JOB_FAILED_TASK_STREAMS: &'static str = JOB_FAILED_TASK_STREAMS;

    fn new_shared(pool: &PgPool) -> Shared {
        Shared {
            notifier: Notifier::new(pool.clone(), NOTIFY_CHANNEL, 0),
            signal: watch::Sender::new(CommitSignal::default()),
            listener: Listener::default(),
        }
    }

    fn signal(shared: &Shared) -> &watch::Sender<CommitSignal> {
        &shared.signal
    }

    async fn begin_append(log: &PostgresEventLog) -> LogResult<Self::WriteTx> {
        Ok(crate::dialect::pg_begin(&log.pool).await?)
    }

    async fn commit(tx: Self::WriteTx) -> sqlx::Result<()> {
        tx.commit().await
    }

    async fn rollback(tx: Self::WriteTx) -> sqlx::Result<()> {
        tx.rollback().await
    }

    async fn insert_events(
        conn: &mut sqlx::PgConnection,
        prepared: &PreparedBatch,
    ) -> LogResult<Vec<Inserted>> {
        // Rows of existing streams (checked against their expected version), then rows of new
        // streams (plainly inserted), in input order: positions follow the input either way.
        // A second statement costs a round trip: only for many new rows, or for new streams
        // alone.
        let checked = match prepared.new_streams_from() {
            Some(first) if first == 0 || prepared.len() - first >= PLAIN_INSERT_MIN_ROWS => first,
            _ => prepared.len(),
        };
        let mut rows = Vec::new();
        if checked > 0 {
            rows = sqlx::query(INSERT_EVENTS)
                .bind(&prepared.stream_ids[..checked])
                .bind(&prepared.versions[..checked])
                .bind(&prepared.expected[..checked])
                .bind(&prepared.event_types[..checked])
                .bind(&prepared.schema_versions[..checked])
                .bind(&prepared.data[..checked])
                .bind(&prepared.metadata[..checked])
                .bind(&prepared.job_ids[..checked])
                .fetch_all(&mut *conn)
                .await
                .map_err(|error| insert_error(error, prepared))?;
            if rows.len() < checked {
                // A conflict among them: the caller finds which and rolls back.
                return inserted(rows);
            }
        }
        if checked < prepared.len() {
            let new_rows = sqlx::query(INSERT_NEW_STREAMS)
                .bind(&prepared.stream_ids[checked..])
                .bind(&prepared.versions[checked..])
                .bind(&prepared.event_types[checked..])
                .bind(&prepared.schema_versions[checked..])
                .bind(&prepared.data[checked..])
                .bind(&prepared.metadata[checked..])
                .bind(&prepared.job_ids[checked..])
                .fetch_all(&mut *conn)
                .await
                .map_err(|error| insert_error(error, prepared))?;
            rows.extend(new_rows);
        }
        inserted(rows)
    }

    async fn delete_messages(conn: &mut sqlx::PgConnection, receipts: &[Receipt]) -> LogResult<()> {
        crate::queue::ack_in_postgres(conn, receipts)
            .await
            .map_err(queue_error)
    }

    async fn insert_messages(
        conn: &mut sqlx::PgConnection,
        rows: &QueueRows,
        skip_queued: bool,
    ) -> LogResult<u64> {
        rows.insert_postgres(conn, skip_queued)
            .await
            .map_err(queue_error)
    }

    fn announce(log: &PostgresEventLog, commit: i64) {
        log.shared.notifier.announce(|max| {
            let news = commit > *max;
            *max = (*max).max(commit);
            news
        });
    }

    /// Starts the LISTEN task if no task runs (it stops when no subscription is left).
    fn ensure_signal(log: &PostgresEventLog) {
        log.shared.listener.ensure(
            &log.pool,
            NOTIFY_CHANNEL,
            &log.shared.signal,
            |signal, heard| match heard {
                Heard::Payload(payload) => match payload.parse::<i64>() {
                    Ok(commit) => signal.raise(commit),
                    // Not ours: look again, to be safe.
                    Err(_) => signal.resync(),
                },
                Heard::Gap => signal.resync(),
            },
        );
    }

    async fn read_all(
        log: &PostgresEventLog,
        after: LogPosition,
        limit: i64,
    ) -> LogResult<Vec<RecordedEvent>> {
        let query = if log.naive_reading {
            sqlx::query(READ_ALL_NAIVE).bind(after.position).bind(limit)
        } else {
            sqlx::query(READ_ALL)
                .bind(after.commit)
                .bind(after.position)
                .bind(limit)
        };
        // Each row is decoded as it arrives and dropped at once (as `query_as` did before
        // the dialect rewrite). Collecting a batch's rows first (`fetch_all`, then decode)
        // keeps every row's bytes, and so the connection's read buffers, alive until the
        // whole batch is in, and decodes them from cold memory: a cost per event on the
        // projector's hottest path, with batches of 50,000 (docs/benchmarks.md, issue 9).
        Ok(query
            .try_map(|row| event::<Postgres>(&row))
            .fetch_all(&log.pool)
            .await?)
    }

    fn bind_recorded_bound(
        query: crate::dialect::Q<'_, Self>,
        until: DateTime<Utc>,
    ) -> crate::dialect::Q<'_, Self> {
        query.bind(until)
    }

    async fn head(log: &PostgresEventLog) -> LogResult<LogPosition> {
        let head: Option<(i64, i64)> =
            sqlx::query_as(if log.naive_reading { HEAD_NAIVE } else { HEAD })
                .fetch_optional(&log.pool)
                .await?;
        Ok(
            head.map_or(LogPosition::START, |(commit, position)| LogPosition {
                commit,
                position,
            }),
        )
    }

    async fn save_checkpoint_alone(
        log: &PostgresEventLog,
        name: &str,
        position: LogPosition,
    ) -> LogResult<()> {
        save_checkpoint_pg(&log.pool, name, position).await
    }

    async fn forget_idempotency_keys(
        log: &PostgresEventLog,
        used_before: DateTime<Utc>,
        limit: i64,
    ) -> LogResult<u64> {
        let forgotten = sqlx::query(FORGET_KEYS)
            .bind(used_before)
            .bind(limit)
            .execute(&log.pool)
            .await?
            .rows_affected();
        Ok(forgotten)
    }
}

impl PostgresEventLog {
    /// Reads with `position > $last ORDER BY position`, without the transaction horizon: the
    /// reader that skips events. Only for the test that shows the remedy is needed.
    #[doc(hidden)]
    pub fn naive_reading_for_tests(mut self, naive: bool) -> Self {
        self.naive_reading = naive;
        self
    }
}

/// A consumer's saved checkpoint (`START` when it has none), read with any executor (a pool,
/// or a connection inside the consumer's transaction).
pub async fn load_checkpoint_pg(
    executor: impl PgExecutor<'_>,
    name: &str,
) -> LogResult<LogPosition> {
    super::sql::load_checkpoint::<Postgres, _>(executor, name).await
}

/// Saves a consumer's checkpoint with any executor: pass the consumer's transaction so the
/// checkpoint moves exactly when its output commits.
pub async fn save_checkpoint_pg(
    executor: impl PgExecutor<'_>,
    name: &str,
    position: LogPosition,
) -> LogResult<()> {
    super::sql::save_checkpoint::<Postgres, _>(executor, name, position).await
}

/// The rows an insert returned (`RETURNING stream_id, stream_version, position,
/// transaction_id`), read by position: a lookup by name costs a hash per column per row, and a
/// chunk returns thousands.
fn inserted(rows: Vec<PgRow>) -> LogResult<Vec<Inserted>> {
    let mut inserted = Vec::with_capacity(rows.len());
    for row in rows {
        inserted.push((
            row.try_get(0)?,
            row.try_get(1)?,
            row.try_get(2)?,
            row.try_get(3)?,
        ));
    }
    Ok(inserted)
}

/// The stream a unique violation of `events_stream_version_key` names in its detail
/// (`Key (stream_id, stream_version)=(<stream id>, <version>) already exists.`).
fn violated_stream(detail: &str) -> Option<&str> {
    let key = detail
        .strip_prefix("Key (stream_id, stream_version)=(")?
        .strip_suffix(") already exists.")?;
    Some(key.rsplit_once(", ")?.0)
}

/// Maps the insert's errors that are about the input rather than the database.
fn insert_error(error: sqlx::Error, prepared: &PreparedBatch) -> LogError {
    if let Some(db) = error.as_database_error() {
        match db.code().as_deref() {
            // A version taken already (a stream that moved on, or a new stream that exists), or a
            // deadlock between two appends that overlap on streams in opposite orders: either
            // way, a conflict.
            Some("23505") if db.constraint() == Some("events_stream_version_key") => {
                let detail = db
                    .try_downcast_ref::<PgDatabaseError>()
                    .and_then(PgDatabaseError::detail);
                return match detail.and_then(violated_stream) {
                    Some(stream_id) => prepared.conflict_on(stream_id),
                    None => prepared.first_stream_conflict(),
                };
            }
            Some("40P01") => return prepared.first_stream_conflict(),
            // Text the database cannot store in JSON (validation should have caught it).
            Some("22P05" | "22021") => return LogError::Invalid(db.message().to_owned()),
            _ => {}
        }
    }
    LogError::Database(error)
}

#[cfg(test)]
mod tests {
    use super::violated_stream;

    #[test]
    fn a_unique_violation_names_its_stream() {
        assert_eq!(
            violated_stream("Key (stream_id, stream_version)=(task-a, 1) already exists."),
            Some("task-a")
        );
        assert_eq!(
            violated_stream("Key (stream_id, stream_version)=(odd, name, 12) already exists."),
            Some("odd, name")
        );
        assert_eq!(violated_stream("something else"), None);
    }
}
