//! The event log on Postgres.
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
//! Commits are announced with `pg_notify('shoal_events', <transaction id>)` after the commit,
//! from a background task on its own connection: a NOTIFY inside the append transaction would
//! hold a cluster-wide lock through the commit's flush and serialize all committing appenders.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnection, PgExecutor, PgListener, PgPool};
use sqlx::types::Json;
use sqlx::{Connection, Row};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::batch::{self, PreparedBatch};
use super::subscription::{self, CommitSignal};
use super::{
    AppendBatch, AppendOutcome, DEFAULT_POLL_INTERVAL, EventLog, EventRow, EventStream, LogError,
    LogPosition, LogResult, RecordedEvent, TxAppend,
};

/// The LISTEN/NOTIFY channel on which commits are announced; the payload is the committing
/// transaction's id (`LogPosition::commit`).
pub const NOTIFY_CHANNEL: &str = "shoal_events";

/// All events of a batch in one statement. Rows of a stream whose expected version does not
/// exist yet are filtered out (an append may not leave a hole in a stream's versions), and rows
/// whose version is taken are skipped; the caller compares what came back with the input, and
/// a stream with missing rows is a `Conflict`. Rows are inserted in input order, so positions
/// (and the read order within the transaction) follow the input.
const INSERT_EVENTS: &str = "
INSERT INTO events (stream_id, stream_version, event_type, schema_version, data, metadata)
SELECT i.stream_id, i.stream_version, i.event_type, i.schema_version, i.data, i.metadata
FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::int[], $6::json[], $7::json[])
    WITH ORDINALITY
    AS i(stream_id, stream_version, expected, event_type, schema_version, data, metadata, ord)
WHERE i.expected = 0
   OR i.stream_version <> i.expected + 1
   OR EXISTS (
        SELECT 1 FROM events e
        WHERE e.stream_id = i.stream_id AND e.stream_version = i.expected)
ORDER BY i.ord
ON CONFLICT (stream_id, stream_version) DO NOTHING
RETURNING stream_id, stream_version, position, transaction_id";

const READ_ALL: &str = "
SELECT transaction_id AS commit_id, position, stream_id, stream_version, event_type,
       schema_version, data, metadata, recorded_at
FROM events
WHERE (transaction_id, position) > ($1, $2)
  AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
ORDER BY transaction_id, position
LIMIT $3";

/// The broken reader, kept to show the remedy is needed (see `naive_reading_for_tests`).
const READ_ALL_NAIVE: &str = "
SELECT transaction_id AS commit_id, position, stream_id, stream_version, event_type,
       schema_version, data, metadata, recorded_at
FROM events
WHERE position > $1
ORDER BY position
LIMIT $2";

const HEAD: &str = "
SELECT transaction_id, position
FROM events
WHERE transaction_id < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
ORDER BY transaction_id DESC, position DESC
LIMIT 1";

const HEAD_NAIVE: &str = "
SELECT transaction_id, position FROM events ORDER BY position DESC LIMIT 1";

const READ_STREAMS: &str = "
SELECT e.transaction_id AS commit_id, e.position, e.stream_id, e.stream_version, e.event_type,
       e.schema_version, e.data, e.metadata, e.recorded_at
FROM UNNEST($1::text[]) WITH ORDINALITY AS s(stream_id, ord)
JOIN events e ON e.stream_id = s.stream_id
ORDER BY s.ord, e.stream_version";

const READ_POSITIONS: &str = "
SELECT e.transaction_id AS commit_id, e.position, e.stream_id, e.stream_version, e.event_type,
       e.schema_version, e.data, e.metadata, e.recorded_at
FROM UNNEST($1::bigint[]) WITH ORDINALITY AS p(position, ord)
JOIN events e ON e.position = p.position
ORDER BY p.ord";

const READ_STREAM: &str = "
SELECT transaction_id AS commit_id, position, stream_id, stream_version, event_type,
       schema_version, data, metadata, recorded_at
FROM events
WHERE stream_id = $1 AND stream_version > $2
ORDER BY stream_version";

/// The Postgres event log. Cheap to clone; clones share the pool and the commit signalling.
/// Create one per process and clone it: subscriptions of one instance wake at once on its own
/// appends, and on other instances' appends through LISTEN/NOTIFY.
#[derive(Debug, Clone)]
pub struct PostgresEventLog {
    pool: PgPool,
    shared: Arc<Shared>,
    poll_interval: Duration,
    naive_reading: bool,
}

#[derive(Debug)]
struct Shared {
    /// The highest transaction id this process committed, for the notifier to announce.
    committed: watch::Sender<i64>,
    notifier: Mutex<Option<JoinHandle<()>>>,
    /// What subscriptions wait on: local commits, and notifications from other processes.
    signal: watch::Sender<CommitSignal>,
    listener: Mutex<Option<JoinHandle<()>>>,
}

impl PostgresEventLog {
    /// An event log on `pool`, whose database has the migrations applied. Subscriptions use
    /// one connection of the pool for LISTEN while any is open; commit announcements use one
    /// connection of their own.
    pub fn new(pool: PgPool) -> Self {
        PostgresEventLog {
            pool,
            shared: Arc::new(Shared {
                committed: watch::Sender::new(0),
                notifier: Mutex::new(None),
                signal: watch::Sender::new(CommitSignal::default()),
                listener: Mutex::new(None),
            }),
            poll_interval: DEFAULT_POLL_INTERVAL,
            naive_reading: false,
        }
    }

    /// How often subscriptions poll when no notification arrives (default 250 ms).
    pub fn with_poll_interval(mut self, poll_interval: Duration) -> Self {
        self.poll_interval = poll_interval;
        self
    }

    /// Reads with `position > $last ORDER BY position`, without the transaction horizon: the
    /// reader that skips events. Only for the test that shows the remedy is needed.
    #[doc(hidden)]
    pub fn naive_reading_for_tests(mut self, naive: bool) -> Self {
        self.naive_reading = naive;
        self
    }

    /// The pool this log uses.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// See [`EventLog::append`].
    #[tracing::instrument(
        name = "eventlog.append",
        skip_all,
        // Errors go back to the caller, which logs them once; a conflict is ordinary flow.
        err(level = "debug"),
        fields(
            backend = "postgres",
            streams = batch.streams.len(),
            idempotency_key = batch.idempotency_key.as_deref(),
        )
    )]
    pub async fn append(&self, batch: AppendBatch) -> LogResult<AppendOutcome> {
        let prepared = batch::prepare(&batch)?;
        if nothing_to_do(&batch, &prepared) {
            return Ok(AppendOutcome::default());
        }
        let mut tx = self.pool.begin().await?;
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
                // The append's own error is the one to report; a failed rollback only means
                // the connection is gone, which rolls back too.
                let _ = tx.rollback().await;
                Err(error)
            }
        }
    }

    /// Appends inside the caller's transaction (for example, events and outbox rows committed
    /// together). The transaction must be READ COMMITTED. On `Err` the caller must roll back
    /// (a `Conflict` leaves the transaction unusable). When the outcome is `replayed`, nothing
    /// was written and the caller's own writes are most likely a duplicate too. After the
    /// commit, pass the result to [`PostgresEventLog::committed`].
    #[tracing::instrument(
        name = "eventlog.append_in_tx",
        skip_all,
        err(level = "debug"),
        fields(
            backend = "postgres",
            streams = batch.streams.len(),
            idempotency_key = batch.idempotency_key.as_deref(),
        )
    )]
    pub async fn append_in_tx(
        &self,
        conn: &mut PgConnection,
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

    /// Announces a committed [`PostgresEventLog::append_in_tx`]: wakes this process's
    /// subscriptions at once, and other processes' through NOTIFY.
    pub fn committed(&self, append: &TxAppend) {
        let Some(commit) = append.commit else {
            return;
        };
        self.shared
            .signal
            .send_if_modified(|signal| signal.raise(commit));
        ensure_task(&self.shared.notifier, || {
            let mut committed = self.shared.committed.subscribe();
            // Announce the current value too: it may have been raised before this task ran.
            committed.mark_changed();
            announce_commits(self.pool.clone(), committed)
        });
        self.shared.committed.send_if_modified(|max| {
            let news = commit > *max;
            *max = (*max).max(commit);
            news
        });
    }

    /// See [`EventLog::read_all`].
    #[tracing::instrument(
        name = "eventlog.read_all",
        skip_all,
        err(level = "debug"),
        fields(backend = "postgres", after.commit = after.commit, after.position = after.position, limit = limit)
    )]
    pub async fn read_all(&self, after: LogPosition, limit: i64) -> LogResult<Vec<RecordedEvent>> {
        batch::check_limit(limit)?;
        let rows: Vec<EventRow> = if self.naive_reading {
            sqlx::query_as(READ_ALL_NAIVE)
                .bind(after.position)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
        } else {
            sqlx::query_as(READ_ALL)
                .bind(after.commit)
                .bind(after.position)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
        };
        Ok(rows.into_iter().map(RecordedEvent::from).collect())
    }

    /// See [`EventLog::read_stream`].
    #[tracing::instrument(
        name = "eventlog.read_stream",
        skip_all,
        err(level = "debug"),
        fields(backend = "postgres", stream_id = stream_id, after_version = after_version)
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
        fields(backend = "postgres", streams = stream_ids.len())
    )]
    pub async fn read_streams(&self, stream_ids: &[String]) -> LogResult<Vec<RecordedEvent>> {
        for stream_id in stream_ids {
            batch::check_name("stream id", stream_id)?;
        }
        if stream_ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<EventRow> = sqlx::query_as(READ_STREAMS)
            .bind(stream_ids)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(RecordedEvent::from).collect())
    }

    /// See [`EventLog::read_positions`].
    #[tracing::instrument(
        name = "eventlog.read_positions",
        skip_all,
        err(level = "debug"),
        fields(backend = "postgres", positions = positions.len())
    )]
    pub async fn read_positions(&self, positions: &[i64]) -> LogResult<Vec<RecordedEvent>> {
        if positions.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<EventRow> = sqlx::query_as(READ_POSITIONS)
            .bind(positions)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(RecordedEvent::from).collect())
    }

    /// See [`EventLog::head`].
    #[tracing::instrument(
        name = "eventlog.head",
        skip_all,
        err(level = "debug"),
        fields(backend = "postgres")
    )]
    pub async fn head(&self) -> LogResult<LogPosition> {
        let head: Option<(i64, i64)> =
            sqlx::query_as(if self.naive_reading { HEAD_NAIVE } else { HEAD })
                .fetch_optional(&self.pool)
                .await?;
        Ok(
            head.map_or(LogPosition::START, |(commit, position)| LogPosition {
                commit,
                position,
            }),
        )
    }

    /// See [`EventLog::subscribe`].
    pub fn subscribe(&self, after: LogPosition, batch_size: i64) -> EventStream {
        let reader = self.clone();
        let ensure = self.clone();
        subscription::subscription(
            move |after, limit| {
                let reader = reader.clone();
                async move { reader.read_all(after, limit).await }
            },
            move || ensure.ensure_listener(),
            self.shared.signal.subscribe(),
            after,
            batch_size,
            self.poll_interval,
        )
    }

    /// Starts the LISTEN task if no task runs (it stops when no subscription is left).
    fn ensure_listener(&self) {
        ensure_task(&self.shared.listener, || {
            listen_for_commits(self.pool.clone(), self.shared.signal.clone())
        });
    }
}

#[async_trait::async_trait]
impl EventLog for PostgresEventLog {
    async fn append(&self, batch: AppendBatch) -> LogResult<AppendOutcome> {
        PostgresEventLog::append(self, batch).await
    }

    async fn read_all(&self, after: LogPosition, limit: i64) -> LogResult<Vec<RecordedEvent>> {
        PostgresEventLog::read_all(self, after, limit).await
    }

    async fn read_stream(
        &self,
        stream_id: &str,
        after_version: i64,
    ) -> LogResult<Vec<RecordedEvent>> {
        PostgresEventLog::read_stream(self, stream_id, after_version).await
    }

    async fn read_streams(&self, stream_ids: &[String]) -> LogResult<Vec<RecordedEvent>> {
        PostgresEventLog::read_streams(self, stream_ids).await
    }

    async fn read_positions(&self, positions: &[i64]) -> LogResult<Vec<RecordedEvent>> {
        PostgresEventLog::read_positions(self, positions).await
    }

    async fn head(&self) -> LogResult<LogPosition> {
        PostgresEventLog::head(self).await
    }

    async fn forget_idempotency_keys(
        &self,
        used_before: DateTime<Utc>,
        limit: i64,
    ) -> LogResult<u64> {
        batch::check_limit(limit)?;
        let forgotten = sqlx::query(
            "DELETE FROM idempotency_keys WHERE key IN (
                 SELECT key FROM idempotency_keys
                 WHERE created_at < $1 AND outcome IS NOT NULL
                 LIMIT $2
                 FOR UPDATE SKIP LOCKED)",
        )
        .bind(used_before)
        .bind(limit)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(forgotten)
    }

    async fn load_checkpoint(&self, name: &str) -> LogResult<LogPosition> {
        load_checkpoint_pg(&self.pool, name).await
    }

    async fn save_checkpoint(&self, name: &str, position: LogPosition) -> LogResult<()> {
        save_checkpoint_pg(&self.pool, name, position).await
    }

    fn subscribe(&self, after: LogPosition, batch_size: i64) -> EventStream {
        PostgresEventLog::subscribe(self, after, batch_size)
    }
}

/// A consumer's saved checkpoint (`START` when it has none), read with any executor (a pool,
/// or a connection inside the consumer's transaction).
#[tracing::instrument(
    name = "eventlog.load_checkpoint",
    skip_all,
    err(level = "debug"),
    fields(backend = "postgres", name = name)
)]
pub async fn load_checkpoint_pg(
    executor: impl PgExecutor<'_>,
    name: &str,
) -> LogResult<LogPosition> {
    batch::check_name("checkpoint name", name)?;
    let row: Option<(i64, i64)> =
        sqlx::query_as("SELECT commit_id, position FROM checkpoints WHERE name = $1")
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

/// Saves a consumer's checkpoint with any executor: pass the consumer's transaction so the
/// checkpoint moves exactly when its output commits.
#[tracing::instrument(
    name = "eventlog.save_checkpoint",
    skip_all,
    err(level = "debug"),
    fields(backend = "postgres", name = name, commit = position.commit, position = position.position)
)]
pub async fn save_checkpoint_pg(
    executor: impl PgExecutor<'_>,
    name: &str,
    position: LogPosition,
) -> LogResult<()> {
    batch::check_name("checkpoint name", name)?;
    sqlx::query(
        "INSERT INTO checkpoints (name, commit_id, position) VALUES ($1, $2, $3)
         ON CONFLICT (name) DO UPDATE
         SET commit_id = EXCLUDED.commit_id, position = EXCLUDED.position, updated_at = now()",
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

/// The statements of an append, inside a transaction.
async fn append_prepared(
    conn: &mut PgConnection,
    batch: &AppendBatch,
    prepared: &PreparedBatch,
) -> LogResult<TxAppend> {
    if let Some(key) = &batch.idempotency_key {
        // Claims the key. A concurrent append with the same key waits here until the first
        // commits (then finds the key taken) or rolls back (then claims it).
        let claimed = sqlx::query(
            "INSERT INTO idempotency_keys (key) VALUES ($1) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .execute(&mut *conn)
        .await?
        .rows_affected()
            == 1;
        if !claimed {
            let outcome: Option<Json<AppendOutcome>> =
                sqlx::query_scalar("SELECT outcome FROM idempotency_keys WHERE key = $1")
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
            .bind(&prepared.stream_ids)
            .bind(&prepared.versions)
            .bind(&prepared.expected)
            .bind(&prepared.event_types)
            .bind(&prepared.schema_versions)
            .bind(&prepared.data)
            .bind(&prepared.metadata)
            .fetch_all(&mut *conn)
            .await
            .map_err(|error| insert_error(error, prepared))?;
        let mut inserted = Vec::with_capacity(rows.len());
        for row in rows {
            commit = Some(row.try_get::<i64, _>("transaction_id")?);
            inserted.push((
                row.try_get("stream_id")?,
                row.try_get("stream_version")?,
                row.try_get("position")?,
            ));
        }
        positions = prepared.positions_in_input_order(inserted)?;
    }
    let outcome = AppendOutcome {
        positions,
        replayed: false,
    };

    if let Some(key) = &batch.idempotency_key {
        sqlx::query("UPDATE idempotency_keys SET outcome = $2 WHERE key = $1")
            .bind(key)
            .bind(Json(&outcome))
            .execute(&mut *conn)
            .await?;
    }
    if let Some(checkpoint) = &batch.checkpoint {
        save_checkpoint_pg(&mut *conn, &checkpoint.name, checkpoint.position).await?;
    }
    Ok(TxAppend { outcome, commit })
}

/// Maps the insert's errors that are about the input rather than the database.
fn insert_error(error: sqlx::Error, prepared: &PreparedBatch) -> LogError {
    if let Some(db) = error.as_database_error() {
        match db.code().as_deref() {
            // A version taken despite ON CONFLICT (cannot happen today; kept so that a unique
            // violation can never surface as a server error), or a deadlock between two
            // appends that overlap on streams in opposite orders: either way, a conflict.
            Some("23505") if db.constraint() == Some("events_stream_version_key") => {
                return prepared.first_stream_conflict();
            }
            Some("40P01") => return prepared.first_stream_conflict(),
            // Text the database cannot store in JSON (validation should have caught it).
            Some("22P05" | "22021") => return LogError::Invalid(db.message().to_owned()),
            _ => {}
        }
    }
    LogError::Database(error)
}

/// Starts a background task in `slot` unless one is running. Outside a Tokio runtime it does
/// nothing: subscribers then learn of commits by polling.
fn ensure_task<F>(slot: &Mutex<Option<JoinHandle<()>>>, task: impl FnOnce() -> F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
    if slot.as_ref().is_some_and(|running| !running.is_finished()) {
        return;
    }
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        *slot = Some(runtime.spawn(task()));
    }
}

/// Announces this process's commits with NOTIFY, coalescing those that come in faster than a
/// round trip. Ends when the log is dropped.
async fn announce_commits(pool: PgPool, mut committed: watch::Receiver<i64>) {
    let mut conn: Option<PgConnection> = None;
    while committed.changed().await.is_ok() {
        let commit = *committed.borrow_and_update();
        for attempt in 1..=2 {
            if conn.is_none() {
                match connect_notifier(&pool).await {
                    Ok(connected) => conn = Some(connected),
                    Err(error) => {
                        tracing::warn!(%error, "cannot announce commits; subscribers will poll");
                        break;
                    }
                }
            }
            let Some(c) = conn.as_mut() else { break };
            match sqlx::query("SELECT pg_notify($1, $2)")
                .bind(NOTIFY_CHANNEL)
                .bind(commit.to_string())
                .execute(&mut *c)
                .await
            {
                Ok(_) => break,
                Err(error) => {
                    tracing::warn!(%error, attempt, "cannot announce a commit; subscribers will poll");
                    conn = None;
                }
            }
        }
    }
}

async fn connect_notifier(pool: &PgPool) -> Result<PgConnection, sqlx::Error> {
    let mut conn = PgConnection::connect_with(&pool.connect_options()).await?;
    // A NOTIFY takes a cluster-wide lock at commit and holds it until its commit record is
    // flushed. It announces events that are already durable, so it need not wait for a flush.
    sqlx::query("SET synchronous_commit = off")
        .execute(&mut conn)
        .await?;
    Ok(conn)
}

/// Feeds `signal` from LISTEN while any subscription is open, reconnecting on failure.
async fn listen_for_commits(pool: PgPool, signal: watch::Sender<CommitSignal>) {
    let resync = |signal: &watch::Sender<CommitSignal>| signal.send_modify(|s| s.resync += 1);
    let mut listener: Option<PgListener> = None;
    loop {
        let Some(active) = listener.as_mut() else {
            let connect = async {
                let mut connected = PgListener::connect_with(&pool).await?;
                connected.listen(NOTIFY_CHANNEL).await?;
                Ok::<_, sqlx::Error>(connected)
            };
            tokio::select! {
                () = signal.closed() => return,
                connected = connect => match connected {
                    Ok(connected) => {
                        listener = Some(connected);
                        // Commits announced before LISTEN took effect were missed.
                        resync(&signal);
                    }
                    Err(sqlx::Error::PoolClosed) => return,
                    Err(error) => {
                        tracing::warn!(%error, "cannot LISTEN for commits; subscribers will poll");
                        tokio::select! {
                            () = signal.closed() => return,
                            () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                },
            }
            continue;
        };
        tokio::select! {
            () = signal.closed() => return,
            received = active.try_recv() => match received {
                Ok(Some(notification)) => match notification.payload().parse::<i64>() {
                    Ok(commit) => {
                        signal.send_if_modified(|s| s.raise(commit));
                    }
                    Err(_) => resync(&signal),
                },
                // The connection was lost (and is re-established): notifications were missed.
                Ok(None) => resync(&signal),
                Err(sqlx::Error::PoolClosed) => return,
                Err(error) => {
                    tracing::warn!(%error, "lost the LISTEN connection; reconnecting");
                    listener = None;
                }
            },
        }
    }
}
