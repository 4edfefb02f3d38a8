//! The task queue as a table in the event log's own database: Postgres (`FOR UPDATE SKIP
//! LOCKED`) for deployments without AWS, SQLite for `shoal dev`. Same semantics as SQS.
//!
//! A message is a row of `task_queue`, deliverable while `visible_at <= now`. A receive claims
//! up to `max` deliverable rows in one statement: it moves their `visible_at` past the
//! visibility timeout, counts the receive, and gives each a new receipt token, so the holder of
//! an older receipt (whose timeout expired and whose message went to someone else) can no
//! longer extend, release, acknowledge or dead-letter it. A row already received
//! `max_receives` times is moved to `task_dead_letters` instead of being delivered again.
//!
//! Receipts: a [`Receipt`] is `"<row id>:<token>"` (the id finds the row by primary key). A
//! release clears the token, so a released message is "delayed", not "in flight", and its
//! former holder cannot touch it either. `ack` and `extend` skip stale or malformed receipts;
//! `release` and `dead_letter` answer [`QueueError::StaleReceipt`]. A message whose visibility
//! timeout ran out keeps its receipt until the next receive takes it: until then its holder
//! can still acknowledge it, as on SQS.
//!
//! Handled rows are deleted, never marked: the table holds only pending work. Every claim
//! rewrites a row (a new index entry, since `visible_at` is indexed) and every ack deletes one;
//! on Postgres autovacuum reclaims that churn (the dead tuples and index entries), so keep it
//! enabled and avoid hour-long transactions on the database, which hold it back. `depth`
//! counts by scanning the table, which is cheap for that reason; `purge_job` uses the unique
//! key, which leads with the job id.
//!
//! Fair share and priorities: a claim takes the deliverable rows in the order (priority
//! descending, receive count, rank, id). A row's priority is its job's (set when it is sent, from
//! `task_queue_priorities`, and changed in place by [`TaskQueue::set_priority`]); its rank is
//! its task's index in the job. So a job of higher priority goes first, and among jobs of the
//! same priority the tasks interleave, fewest-served job first: a job of 3 tasks submitted
//! behind one of 10,000 gets the next free workers instead of waiting for the big one to end
//! (see `docs/fairness.md` and ADR 0015). A message received before (its worker died or
//! released it) goes after those never received of its priority: so a claim, which counts the
//! receive, moves its rows' new index entries away from the head of the index, where the next
//! claims look, and a message that keeps timing out does not hold the head. An index on exactly
//! that order keeps the claim an index scan that stops after `max` rows. On Postgres the claim
//! starts after the last row this instance's previous claim took, past the dead index entries
//! of the rows taken before, and from the top at every send it hears of and at least once per
//! poll interval (ADR 0024; `ClaimHead` in the Postgres backend).
//!
//! Long polling: a receive that finds nothing waits for a wake-up, the moment the next row
//! becomes visible (delays and visibility timeouts), or the poll interval, whichever comes
//! first, and tries again until its `wait` is over. Sends wake the receivers of the same
//! [`SqlQueue`] (and its clones) at once; on Postgres they also `NOTIFY`
//! [`SqlQueue::NOTIFY_CHANNEL`]
//! after the commit, which other processes `LISTEN` to. A lost notification costs at most one
//! poll interval. On SQLite, another process's sends are seen at the next poll.

mod postgres;
mod sqlite;

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::Pool;
use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};
use uuid::Uuid;

use super::{
    DeadLetter, Delivery, OutgoingMessage, PoisonMessage, QueueDepth, QueueError, QueueResult,
    Receipt, TaskMessage, TaskQueue,
};
use crate::db::Database;
use crate::dialect::{Dialect, QueryExt, col};

use self::postgres::PgQueue;
use self::sqlite::SqliteQueue;

/// When rows are visible but none could be claimed (other receivers hold them in their claim
/// statement right now), try again this soon rather than after a whole poll interval.
const RECHECK_VISIBLE: Duration = Duration::from_millis(10);

/// Durations are stored as milliseconds; longer ones are cut to this (about 100 years).
const MAX_MILLIS: i64 = 100 * 366 * 24 * 3600 * 1000;

/// The task queue on a table of the Postgres or SQLite database (see the module docs).
///
/// Cheap to clone; clones share the wake-up signal (and, on Postgres, the LISTEN and NOTIFY
/// connections; on SQLite, the write lock). Create one per process and database, and clone it.
#[derive(Debug, Clone)]
pub struct SqlQueue {
    backend: Backend,
    max_receives: u32,
    poll_interval: Duration,
    /// Bumped when messages may have become visible: a send by this instance, or (Postgres)
    /// a notification from another one. Waiting receivers watch it.
    wake: watch::Sender<u64>,
}

#[derive(Debug, Clone)]
enum Backend {
    Postgres(PgQueue),
    Sqlite(SqliteQueue),
}

/// A message to insert, ready for either backend.
#[derive(Debug)]
struct NewMessage {
    job_id: Uuid,
    task_id: Uuid,
    attempt: i32,
    body: String,
    delay_ms: i64,
    /// The task's rank within its job (its index): the claim's fair order.
    rank: i64,
}

/// A claimed row, delivered.
#[derive(Debug)]
struct ClaimedRow {
    id: i64,
    token: String,
    body: String,
    receive_count: i64,
    priority: i32,
    rank: i64,
}

/// A row the claim moved to the dead letters for having been received too often.
#[derive(Debug)]
struct ExpiredRow {
    id: i64,
    task_id: String,
    receive_count: i64,
}

#[derive(Debug, Default)]
struct ClaimOutcome {
    claimed: Vec<ClaimedRow>,
    expired: Vec<ExpiredRow>,
}

impl ClaimOutcome {
    /// How many rows the claim took (delivered or dead-lettered).
    fn len(&self) -> i64 {
        i64::try_from(self.claimed.len() + self.expired.len()).unwrap_or(i64::MAX)
    }
}

/// A parsed [`Receipt`]: `"<row id>:<token>"`. The row id lets every receipt operation find
/// its row by primary key; the token, new at each receive, makes a stale receipt match nothing.
#[derive(Debug, Clone, Copy)]
struct ReceiptRef<'a> {
    id: i64,
    token: &'a str,
}

impl<'a> ReceiptRef<'a> {
    fn parse(receipt: &'a Receipt) -> Option<Self> {
        let (id, token) = receipt.0.split_once(':')?;
        Some(ReceiptRef {
            id: id.parse().ok()?,
            token,
        })
    }

    /// The well-formed receipts; a malformed one cannot match any row, so it is stale.
    fn parse_all(receipts: &'a [Receipt]) -> Vec<Self> {
        receipts.iter().filter_map(ReceiptRef::parse).collect()
    }

    fn parse_or_stale(receipt: &'a Receipt) -> QueueResult<Self> {
        ReceiptRef::parse(receipt).ok_or_else(|| QueueError::StaleReceipt(receipt.0.clone()))
    }
}

impl SqlQueue {
    /// The LISTEN/NOTIFY channel on which Postgres sends are announced (payload: the sending
    /// instance's id, so that an instance ignores its own announcements).
    pub const NOTIFY_CHANNEL: &str = "shoal_queue";

    /// A message received this many times without being handled is dead-lettered at its next
    /// receive, unless [`SqlQueue::with_max_receives`] says otherwise.
    pub const DEFAULT_MAX_RECEIVES: u32 = 5;

    /// How often a long-polling receive looks again when nothing wakes it, unless
    /// [`SqlQueue::with_poll_interval`] says otherwise.
    pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(250);

    /// The queue on a Postgres database with the migrations applied. Waiting receivers use one
    /// connection of the pool for `LISTEN` (once one has waited); sends announce themselves on
    /// a connection of their own.
    pub fn postgres(pool: PgPool) -> Self {
        let wake = watch::Sender::new(0);
        SqlQueue::with_backend(Backend::Postgres(PgQueue::new(pool, wake.clone())), wake)
    }

    /// The queue on a SQLite database with the migrations applied (connection settings as in
    /// [`crate::db::sqlite_options`]).
    pub fn sqlite(pool: SqlitePool) -> Self {
        SqlQueue::with_backend(
            Backend::Sqlite(SqliteQueue::new(pool)),
            watch::Sender::new(0),
        )
    }

    /// The queue on `database`.
    pub fn for_database(database: &Database) -> Self {
        match database {
            Database::Postgres(pool) => SqlQueue::postgres(pool.clone()),
            Database::Sqlite(pool) => SqlQueue::sqlite(pool.clone()),
        }
    }

    fn with_backend(backend: Backend, wake: watch::Sender<u64>) -> Self {
        SqlQueue {
            backend,
            max_receives: SqlQueue::DEFAULT_MAX_RECEIVES,
            poll_interval: SqlQueue::DEFAULT_POLL_INTERVAL,
            wake,
        }
    }

    /// Dead-letters a message at the receive after its `max_receives`-th (at least 1), with
    /// the reason "received N times without being handled".
    pub fn with_max_receives(mut self, max_receives: u32) -> Self {
        self.max_receives = max_receives.max(1);
        self
    }

    /// How often a waiting receive looks again when nothing wakes it (at least 1 ms).
    pub fn with_poll_interval(mut self, poll_interval: Duration) -> Self {
        self.poll_interval = poll_interval.max(Duration::from_millis(1));
        self
    }

    pub fn max_receives(&self) -> u32 {
        self.max_receives
    }

    /// Sends a message with an arbitrary body, visible at once: for tests of malformed
    /// (poison) messages, which [`TaskQueue::send`] cannot produce.
    #[doc(hidden)]
    #[tracing::instrument(name = "queue.send_raw", skip_all, err(level = "debug"))]
    pub async fn send_raw(
        &self,
        job_id: Uuid,
        task_id: Uuid,
        attempt: u32,
        raw_body: &str,
    ) -> QueueResult<()> {
        let message = NewMessage {
            job_id,
            task_id,
            attempt: attempt_column(attempt)?,
            body: raw_body.to_owned(),
            delay_ms: 0,
            rank: 0,
        };
        self.insert(vec![message]).await
    }

    /// The database's plan for a claim of `max` messages (Postgres `EXPLAIN`, SQLite
    /// `EXPLAIN QUERY PLAN`), one line per node: for tests and for measuring the claim's cost.
    #[doc(hidden)]
    pub async fn explain_claim(&self, max: i64) -> QueueResult<Vec<String>> {
        let max_receives = i64::from(self.max_receives);
        match &self.backend {
            Backend::Postgres(pg) => pg.explain_claim(max, max_receives, false).await,
            Backend::Sqlite(lite) => lite.explain_claim(max, max_receives).await,
        }
    }

    /// The plan of a claim that starts after the last row an earlier one took (Postgres only:
    /// see `ClaimHead` in the Postgres backend); `None` on SQLite.
    #[doc(hidden)]
    pub async fn explain_claim_after_head(&self, max: i64) -> QueueResult<Option<Vec<String>>> {
        let max_receives = i64::from(self.max_receives);
        match &self.backend {
            Backend::Postgres(pg) => Ok(Some(pg.explain_claim(max, max_receives, true).await?)),
            Backend::Sqlite(_) => Ok(None),
        }
    }

    async fn insert(&self, messages: Vec<NewMessage>) -> QueueResult<()> {
        let inserted = match &self.backend {
            Backend::Postgres(pg) => pg.send(&messages).await?,
            Backend::Sqlite(lite) => lite.send(&messages).await?,
        };
        if inserted > 0 {
            self.announce_sent();
        }
        Ok(())
    }

    async fn claim(&self, max: i64, visibility_ms: i64) -> QueueResult<ClaimOutcome> {
        let max_receives = i64::from(self.max_receives);
        match &self.backend {
            Backend::Postgres(pg) => {
                pg.claim(max, visibility_ms, max_receives, self.poll_interval)
                    .await
            }
            Backend::Sqlite(lite) => lite.claim(max, visibility_ms, max_receives).await,
        }
    }

    /// Milliseconds until the next row becomes visible (zero or less: one is visible now).
    async fn next_visible_in(&self) -> QueueResult<Option<i64>> {
        match &self.backend {
            Backend::Postgres(pg) => pg.next_visible_in().await,
            Backend::Sqlite(lite) => lite.next_visible_in().await,
        }
    }
}

#[async_trait::async_trait]
impl TaskQueue for SqlQueue {
    #[tracing::instrument(
        name = "queue.send",
        skip_all,
        err(level = "debug"),
        fields(messages = messages.len())
    )]
    async fn send(&self, messages: Vec<OutgoingMessage>) -> QueueResult<()> {
        if messages.is_empty() {
            return Ok(());
        }
        self.insert(QueueRows::new(&messages)?.0).await
    }

    #[tracing::instrument(
        name = "queue.receive",
        skip_all,
        err(level = "debug"),
        fields(max = max, delivered = tracing::field::Empty)
    )]
    async fn receive(
        &self,
        max: usize,
        visibility: Duration,
        wait: Duration,
    ) -> QueueResult<Vec<Delivery>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        let visibility_ms = millis(visibility);
        let deadline = later(Instant::now(), wait);
        let mut woken = self.wake.subscribe();
        loop {
            // Mark the signal seen before looking, so a send that commits after this claim's
            // snapshot wakes the wait below.
            woken.borrow_and_update();
            let outcome = self.claim(max, visibility_ms).await?;
            for expired in &outcome.expired {
                tracing::warn!(
                    message_id = expired.id,
                    task_id = %expired.task_id,
                    receive_count = expired.receive_count,
                    "dead-lettered a message received too many times without being handled"
                );
            }
            if !outcome.claimed.is_empty() {
                let mut claimed = outcome.claimed;
                // In the claim's order (RETURNING has none).
                claimed.sort_unstable_by_key(|row| {
                    (
                        std::cmp::Reverse(row.priority),
                        row.receive_count,
                        row.rank,
                        row.id,
                    )
                });
                tracing::Span::current().record("delivered", claimed.len());
                return Ok(claimed.into_iter().map(delivery).collect());
            }
            if !outcome.expired.is_empty() {
                continue;
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            let mut wake_at = later(now, self.poll_interval);
            if let Some(in_ms) = self.next_visible_in().await? {
                let until = Duration::from_millis(u64::try_from(in_ms).unwrap_or(0));
                wake_at = wake_at.min(now + until.max(RECHECK_VISIBLE));
            }
            if let Backend::Postgres(pg) = &self.backend {
                pg.ensure_listener();
            }
            tokio::select! {
                _ = woken.changed() => {}
                () = sleep_until(wake_at.min(deadline)) => {}
            }
        }
    }

    #[tracing::instrument(
        name = "queue.extend",
        skip_all,
        err(level = "debug"),
        fields(receipts = receipts.len())
    )]
    async fn extend(&self, receipts: &[Receipt], visibility: Duration) -> QueueResult<()> {
        let receipts = ReceiptRef::parse_all(receipts);
        if receipts.is_empty() {
            return Ok(());
        }
        let visibility_ms = millis(visibility);
        match &self.backend {
            Backend::Postgres(pg) => pg.extend(&receipts, visibility_ms).await,
            Backend::Sqlite(lite) => lite.extend(&receipts, visibility_ms).await,
        }
    }

    #[tracing::instrument(name = "queue.release", skip_all, err(level = "debug"))]
    async fn release(&self, receipt: &Receipt, delay: Duration) -> QueueResult<()> {
        let parsed = ReceiptRef::parse_or_stale(receipt)?;
        let delay_ms = millis(delay);
        let released = match &self.backend {
            Backend::Postgres(pg) => pg.release(parsed, delay_ms).await?,
            Backend::Sqlite(lite) => lite.release(parsed, delay_ms).await?,
        };
        if !released {
            return Err(QueueError::StaleReceipt(receipt.0.clone()));
        }
        if delay.is_zero() {
            // Visible again at once: waiting receivers of this instance may take it.
            self.wake.send_modify(|n| *n = n.wrapping_add(1));
        }
        Ok(())
    }

    #[tracing::instrument(
        name = "queue.ack",
        skip_all,
        err(level = "debug"),
        fields(receipts = receipts.len())
    )]
    async fn ack(&self, receipts: &[Receipt]) -> QueueResult<()> {
        let receipts = ReceiptRef::parse_all(receipts);
        if receipts.is_empty() {
            return Ok(());
        }
        match &self.backend {
            Backend::Postgres(pg) => pg.ack(&receipts).await,
            Backend::Sqlite(lite) => lite.ack(&receipts).await,
        }
    }

    #[tracing::instrument(name = "queue.dead_letter", skip_all, err(level = "debug"))]
    async fn dead_letter(&self, receipt: &Receipt, reason: &str) -> QueueResult<()> {
        let parsed = ReceiptRef::parse_or_stale(receipt)?;
        let moved = match &self.backend {
            Backend::Postgres(pg) => pg.dead_letter(parsed, reason).await?,
            Backend::Sqlite(lite) => lite.dead_letter(parsed, reason).await?,
        };
        if moved {
            Ok(())
        } else {
            Err(QueueError::StaleReceipt(receipt.0.clone()))
        }
    }

    #[tracing::instrument(
        name = "queue.purge_job",
        skip_all,
        err(level = "debug"),
        fields(%job_id)
    )]
    async fn purge_job(&self, job_id: Uuid) -> QueueResult<u64> {
        match &self.backend {
            Backend::Postgres(pg) => pg.purge_job(job_id).await,
            Backend::Sqlite(lite) => lite.purge_job(job_id).await,
        }
    }

    #[tracing::instrument(
        name = "queue.set_priority",
        skip_all,
        err(level = "debug"),
        fields(%job_id, priority)
    )]
    async fn set_priority(&self, job_id: Uuid, priority: i32) -> QueueResult<()> {
        match &self.backend {
            Backend::Postgres(pg) => pg.set_priority(job_id, priority).await,
            Backend::Sqlite(lite) => lite.set_priority(job_id, priority).await,
        }
    }

    #[tracing::instrument(name = "queue.depth", skip_all, err(level = "debug"))]
    async fn depth(&self) -> QueueResult<QueueDepth> {
        match &self.backend {
            Backend::Postgres(pg) => pg.depth().await,
            Backend::Sqlite(lite) => lite.depth().await,
        }
    }

    #[tracing::instrument(name = "queue.oldest_message_age", skip_all, err(level = "debug"))]
    async fn oldest_message_age(&self) -> QueueResult<Option<Duration>> {
        match &self.backend {
            Backend::Postgres(pg) => pg.oldest_message_age().await.map(Some),
            Backend::Sqlite(lite) => lite.oldest_message_age().await.map(Some),
        }
    }

    #[tracing::instrument(
        name = "queue.live_messages",
        skip_all,
        err(level = "debug"),
        fields(%job_id, tasks = task_ids.len())
    )]
    async fn live_messages(
        &self,
        job_id: Uuid,
        task_ids: &[Uuid],
    ) -> QueueResult<Option<Vec<(Uuid, u32)>>> {
        if task_ids.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let rows = match &self.backend {
            Backend::Postgres(pg) => pg.live_messages(job_id, task_ids).await?,
            Backend::Sqlite(lite) => lite.live_messages(job_id, task_ids).await?,
        };
        rows.into_iter()
            .map(|(task_id, attempt)| {
                let attempt = u32::try_from(attempt).map_err(|_| QueueError::OutOfRange {
                    what: "attempt",
                    value: i64::from(attempt),
                })?;
                Ok((task_id, attempt))
            })
            .collect::<QueueResult<Vec<_>>>()
            .map(Some)
    }

    #[tracing::instrument(name = "queue.dead_letters", skip_all, err(level = "debug"))]
    async fn dead_letters(&self, job_id: Option<Uuid>, limit: i64) -> QueueResult<Vec<DeadLetter>> {
        let limit = limit.max(0);
        match &self.backend {
            Backend::Postgres(pg) => pg.dead_letters(job_id, limit).await,
            Backend::Sqlite(lite) => lite.dead_letters(job_id, limit).await,
        }
    }

    fn is_log_table(&self) -> bool {
        true
    }

    fn announce_sent(&self) {
        self.wake.send_modify(|n| *n = n.wrapping_add(1));
        if let Backend::Postgres(pg) = &self.backend {
            pg.announce_send();
        }
    }

    #[tracing::instrument(
        name = "queue.remove_dead_letters",
        skip_all,
        err(level = "debug"),
        fields(ids = ids.len())
    )]
    async fn remove_dead_letters(&self, ids: &[String]) -> QueueResult<()> {
        // An id that is not a number names no dead letter.
        let ids: Vec<i64> = ids.iter().filter_map(|id| id.parse().ok()).collect();
        if ids.is_empty() {
            return Ok(());
        }
        match &self.backend {
            Backend::Postgres(pg) => pg.remove_dead_letters(&ids).await,
            Backend::Sqlite(lite) => lite.remove_dead_letters(&ids).await,
        }
    }
}

/// Messages as rows of the queue's table, for an insert inside someone else's transaction (the
/// event log's `append_and_send`): the same rows as [`TaskQueue::send`]'s. Serialized before
/// the transaction begins, to keep it short.
#[derive(Debug)]
pub(crate) struct QueueRows(Vec<NewMessage>);

impl QueueRows {
    pub(crate) fn new(messages: &[OutgoingMessage]) -> QueueResult<Self> {
        messages
            .iter()
            .map(|message| {
                let body = serde_json::to_string(&message.body).map_err(QueueError::Serialize)?;
                Ok(NewMessage {
                    job_id: message.body.job_id,
                    task_id: message.body.task_id,
                    attempt: attempt_column(message.body.attempt)?,
                    body,
                    delay_ms: millis(message.delay),
                    rank: i64::from(message.body.task_index),
                })
            })
            .collect::<QueueResult<Vec<_>>>()
            .map(QueueRows)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Inserts the rows on a connection inside the caller's Postgres transaction; how many
    /// were new. `skip_queued`: a (task, attempt) queued already is skipped, as by a send;
    /// otherwise it fails the statement (see [`QueueRows::is_queued_already`]), which is
    /// cheaper per row.
    pub(crate) async fn insert_postgres(
        &self,
        conn: &mut sqlx::PgConnection,
        skip_queued: bool,
    ) -> QueueResult<u64> {
        postgres::insert_messages(conn, &self.0, skip_queued).await
    }

    /// Whether an insert failed because a message was queued already.
    pub(crate) fn is_queued_already(error: &sqlx::Error) -> bool {
        error.as_database_error().is_some_and(|db| {
            db.code().as_deref() == Some("23505") && db.constraint() == Some(postgres::MESSAGE_KEY)
        })
    }

    /// Inserts the rows on a connection inside the caller's SQLite write transaction (which
    /// holds the database's write lock); how many were new. A (task, attempt) queued already
    /// is skipped (SQLite's `ON CONFLICT` costs nothing extra).
    pub(crate) async fn insert_sqlite(
        &self,
        conn: &mut sqlx::SqliteConnection,
    ) -> QueueResult<u64> {
        sqlite::insert_messages(conn, &self.0).await
    }
}

/// Acknowledges (deletes) the messages `receipts` hold on a connection inside the caller's
/// Postgres transaction (the event log's `append_many_and_ack`), as [`TaskQueue::ack`] does.
pub(crate) async fn ack_in_postgres(
    conn: &mut sqlx::PgConnection,
    receipts: &[Receipt],
) -> QueueResult<()> {
    postgres::ack_on(conn, &ReceiptRef::parse_all(receipts)).await
}

/// [`ack_in_postgres`] inside the caller's SQLite write transaction (which holds the
/// database's write lock).
pub(crate) async fn ack_in_sqlite(
    conn: &mut sqlx::SqliteConnection,
    receipts: &[Receipt],
) -> QueueResult<()> {
    sqlite::ack_on(conn, &ReceiptRef::parse_all(receipts)).await
}

/// A claimed row as a delivery; a body that is not a `TaskMessage` is a poison message.
fn delivery(row: ClaimedRow) -> Delivery {
    let size = row.body.len();
    let body = TaskMessage::decode(&row.body).map_err(|error| PoisonMessage {
        error: error.to_string(),
        raw: row.body,
    });
    Delivery {
        receipt: Receipt(format!("{}:{}", row.id, row.token)),
        body,
        receive_count: u32::try_from(row.receive_count).unwrap_or(u32::MAX),
        priority: row.priority,
        size,
    }
}

/// `now + duration`, or a year from now when that is beyond what an `Instant` holds.
fn later(now: Instant, duration: Duration) -> Instant {
    now.checked_add(duration)
        .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600))
}

fn attempt_column(attempt: u32) -> QueueResult<i32> {
    i32::try_from(attempt).map_err(|_| QueueError::OutOfRange {
        what: "attempt",
        value: i64::from(attempt),
    })
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).map_or(MAX_MILLIS, |ms| ms.min(MAX_MILLIS))
}

/// The reason given to a message dead-lettered for too many receives.
fn over_received_reason(receive_count: i64) -> String {
    format!("received {receive_count} times without being handled")
}

const DEAD_LETTERS: &str = "
SELECT id, job_id, task_id, body, reason, dead_lettered_at
FROM task_dead_letters
ORDER BY id
LIMIT $1";

const JOB_DEAD_LETTERS: &str = "
SELECT id, job_id, task_id, body, reason, dead_lettered_at
FROM task_dead_letters
WHERE job_id = $2
ORDER BY id
LIMIT $1";

const PURGE_JOB: &str = "DELETE FROM task_queue WHERE job_id = $1";

const FORGET_PRIORITY: &str = "DELETE FROM task_queue_priorities WHERE job_id = $1";

/// What the queue's shared statements need to know of a dialect beyond [`Dialect`]. The
/// statements that differ (the claim above all) are in each backend's module.
trait QueueDialect: Dialect {
    /// A nullable id column of the dead letters (SQLite: text that is not a UUID reads as
    /// none, as a poison message may carry anything).
    fn get_opt_id(row: &Self::Row, index: usize) -> QueueResult<Option<Uuid>>;
    /// A time column of the queue's tables (Postgres `timestamptz`; SQLite integer
    /// milliseconds since the Unix epoch).
    fn get_queue_time(row: &Self::Row, index: usize) -> QueueResult<DateTime<Utc>>;
}

/// The oldest `limit` dead letters, of one job or of all.
async fn dead_letters<D: QueueDialect>(
    pool: &Pool<D>,
    job_id: Option<Uuid>,
    limit: i64,
) -> QueueResult<Vec<DeadLetter>> {
    let query = match job_id {
        Some(job_id) => sqlx::query::<D>(JOB_DEAD_LETTERS).arg(limit).id(job_id),
        None => sqlx::query::<D>(DEAD_LETTERS).arg(limit),
    };
    let rows = query.all(D::pool(pool)).await?;
    rows.iter()
        .map(|row| {
            Ok(DeadLetter {
                id: col::<D, i64>(row, 0)?.to_string(),
                job_id: D::get_opt_id(row, 1)?,
                task_id: D::get_opt_id(row, 2)?,
                raw: col::<D, _>(row, 3)?,
                reason: col::<D, _>(row, 4)?,
                dead_lettered_at: D::get_queue_time(row, 5)?,
            })
        })
        .collect()
}

/// Drops a job's queued messages, and its priority; returns how many messages.
async fn purge_job<D: Dialect>(pool: &Pool<D>, job_id: Uuid) -> QueueResult<u64> {
    let purged = sqlx::query::<D>(PURGE_JOB)
        .id(job_id)
        .run(D::pool(pool))
        .await?;
    sqlx::query::<D>(FORGET_PRIORITY)
        .id(job_id)
        .run(D::pool(pool))
        .await?;
    Ok(purged)
}

/// A row of a dialect's depth query: `visible, in_flight, delayed, dead_lettered`.
fn depth_row<D: Dialect>(row: &D::Row) -> QueueResult<QueueDepth> {
    let count = |index: usize| -> QueueResult<u64> {
        Ok(u64::try_from(col::<D, i64>(row, index)?).unwrap_or(0))
    };
    Ok(QueueDepth {
        visible: count(0)?,
        in_flight: count(1)?,
        delayed: count(2)?,
        dead_lettered: count(3)?,
    })
}
