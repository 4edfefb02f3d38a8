//! The SQL queue's statements on Postgres, and its LISTEN/NOTIFY wake-ups.
//!
//! Every operation is one statement (one implicit transaction); the claim takes rows with
//! `FOR UPDATE SKIP LOCKED`, so concurrent receivers never wait for each other nor get the same
//! row. Sends are announced with `pg_notify` after they commit (see `crate::notify`, which the
//! event log uses too).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::{PgPool, PgRow, Postgres};
use tokio::sync::watch;
use uuid::Uuid;

use super::{ClaimOutcome, ClaimedRow, ExpiredRow, NewMessage, ReceiptRef, SqlQueue};
use crate::notify::{Heard, Listener, Notifier};
use crate::queue::{DeadLetter, QueueDepth, QueueError, QueueResult};

/// A batch in one statement; rows get ids in input order, and their job's priority (0 unless
/// `set_priority` gave it another). A (task, attempt) already queued is skipped (the key leads
/// with job_id, see the migration).
const SEND: &str = "
INSERT INTO task_queue (job_id, task_id, attempt, body, visible_at, job_rank, priority)
SELECT m.job_id, m.task_id, m.attempt, m.body, now() + m.delay_ms * interval '1 millisecond',
       m.job_rank, COALESCE(p.priority, 0)
FROM UNNEST($1::uuid[], $2::uuid[], $3::int[], $4::text[], $5::bigint[], $6::bigint[])
    WITH ORDINALITY AS m(job_id, task_id, attempt, body, delay_ms, job_rank, ord)
LEFT JOIN task_queue_priorities p ON p.job_id = m.job_id
ORDER BY m.ord
ON CONFLICT (job_id, task_id, attempt) DO NOTHING";

/// [`SEND`] for messages no one can have queued yet (a chunk's new tasks, in the chunk's own
/// transaction): a plain insert. A message queued already violates the key, which aborts the
/// transaction; without `ON CONFLICT` the database neither probes the key before each row nor
/// logs a second record for it.
const SEND_NEW: &str = "
INSERT INTO task_queue (job_id, task_id, attempt, body, visible_at, job_rank, priority)
SELECT m.job_id, m.task_id, m.attempt, m.body, now() + m.delay_ms * interval '1 millisecond',
       m.job_rank, COALESCE(p.priority, 0)
FROM UNNEST($1::uuid[], $2::uuid[], $3::int[], $4::text[], $5::bigint[], $6::bigint[])
    WITH ORDINALITY AS m(job_id, task_id, attempt, body, delay_ms, job_rank, ord)
LEFT JOIN task_queue_priorities p ON p.job_id = m.job_id
ORDER BY m.ord";

/// The constraint a message queued twice violates (`SEND_NEW`).
pub(super) const MESSAGE_KEY: &str = "task_queue_message_key";

/// The claim, in one statement. `picked` locks up to $1 visible rows in the fair order
/// (priority, then rank within the job, then age; see the module docs), skipping rows another
/// claim holds (task_queue_fair_idx gives them in order, no sort); it is MATERIALIZED so it is
/// evaluated exactly once. Of those, rows already received $3 times are
/// moved to the dead letters (`expired`, `moved`), the others are hidden for $2 ms with a new
/// receipt and delivered (`claimed`). The result lists both, flagged. Both split the rows by
/// the receive count `picked` read (the rows are locked, so it is current): a claim where no
/// row has expired then probes no row for `expired`, where testing the stored row's count
/// looked up every picked row a second time.
///
/// `$after` narrows `picked` to the rows after a point of the fair order ([`CLAIM_AFTER`]).
macro_rules! claim_sql {
    ($($after:tt)+) => {
        concat!(
            "
WITH picked AS MATERIALIZED (
    SELECT id, receive_count FROM task_queue
    WHERE visible_at <= now()",
            $($after)+,
            "
    ORDER BY priority DESC, receive_count, job_rank, id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
),
claimed AS (
    UPDATE task_queue q
    SET visible_at = now() + $2 * interval '1 millisecond',
        receive_count = q.receive_count + 1,
        receipt = gen_random_uuid()
    FROM picked
    WHERE q.id = picked.id AND picked.receive_count < $3
    RETURNING q.id, q.task_id, q.body, q.receive_count, q.receipt, q.priority, q.job_rank
),
expired AS (
    DELETE FROM task_queue q
    USING picked
    WHERE q.id = picked.id AND picked.receive_count >= $3
    RETURNING q.id, q.job_id, q.task_id, q.body, q.receive_count
),
moved AS (
    INSERT INTO task_dead_letters (job_id, task_id, body, reason, receive_count)
    SELECT job_id, task_id, body,
           'received ' || receive_count || ' times without being handled', receive_count
    FROM expired
)
SELECT id, task_id, body, receive_count, receipt, priority, job_rank, false AS dead_lettered
FROM claimed
UNION ALL
SELECT id, task_id, body, receive_count, NULL, 0, 0, true FROM expired"
        )
    };
}
const CLAIM: &str = claim_sql!("");

/// The condition of [`CLAIM_AFTER`].
macro_rules! after_head {
    () => {
        "
      AND priority = $4 AND (receive_count, job_rank, id) > ($5, $6, $7)"
    };
}

/// [`CLAIM`] from just after a point of the fair order, in its priority: ($4, $5, $6, $7) =
/// (priority, receive count, rank, id) of the last row an earlier claim took. The scan starts
/// there in `task_queue_fair_idx` instead of at its head, where the entries of the rows claimed
/// since the last vacuum lie dead (see [`ClaimHead`]). Without statistics of the queue the
/// planner expects few rows past a head and would answer with a bitmap scan of all of them: the
/// processes that claim open their pool with bitmap scans off (`PoolSettings::bitmap_scans`,
/// ADR 26).
const CLAIM_AFTER: &str = claim_sql!(after_head!());
const EXPLAIN_CLAIM: &str = concat!("EXPLAIN ", claim_sql!(""));
const EXPLAIN_CLAIM_AFTER: &str = concat!("EXPLAIN ", claim_sql!(after_head!()));

/// The job's priority for rows sent from now on, and for its rows in the queue (by the unique
/// key, which leads with the job id), locked in id order as `held_rows_in_id_order` does.
const SET_PRIORITY: &str = "
WITH saved AS (
    INSERT INTO task_queue_priorities (job_id, priority) VALUES ($1, $2)
    ON CONFLICT (job_id) DO UPDATE SET priority = excluded.priority
),
rows AS (
    SELECT id FROM task_queue WHERE job_id = $1 AND priority <> $2 ORDER BY id FOR UPDATE
)
UPDATE task_queue q SET priority = $2 FROM rows WHERE q.id = rows.id";

/// Milliseconds from now until the first row becomes visible (the claim index's first entry).
const NEXT_VISIBLE: &str = "
SELECT (EXTRACT(EPOCH FROM (min(visible_at) - now())) * 1000)::bigint FROM task_queue";

/// The held rows of some receipts, locked in id order. Every statement that changes several held
/// rows (a heartbeat's extend, an acknowledgement, a priority change) locks them through this,
/// so two of them over overlapping rows wait for each other instead of deadlocking, whatever
/// order their callers give (a deadlock costs `deadlock_timeout` and fails one of them). A row
/// whose receipt changed meanwhile is re-checked after the wait and left out.
macro_rules! held_rows_in_id_order {
    () => {
        "held AS (
    SELECT q.id FROM task_queue q
    JOIN UNNEST($1::bigint[], $2::uuid[]) AS r(id, receipt)
        ON q.id = r.id AND q.receipt = r.receipt
    ORDER BY q.id
    FOR UPDATE OF q
)"
    };
}

const EXTEND: &str = concat!(
    "WITH ",
    held_rows_in_id_order!(),
    "
UPDATE task_queue q
SET visible_at = now() + $3 * interval '1 millisecond'
FROM held WHERE q.id = held.id"
);

/// Visible again after $3 ms, and no longer held: the receipt is cleared (so the message
/// counts as delayed, and the releasing holder cannot touch it any more).
const RELEASE: &str = "
UPDATE task_queue
SET visible_at = now() + $3 * interval '1 millisecond', receipt = NULL
WHERE id = $1 AND receipt = $2";

const ACK: &str = concat!(
    "WITH ",
    held_rows_in_id_order!(),
    "
DELETE FROM task_queue q USING held WHERE q.id = held.id"
);

const DEAD_LETTER: &str = "
WITH moved AS (
    DELETE FROM task_queue WHERE id = $1 AND receipt = $2
    RETURNING job_id, task_id, body, receive_count
)
INSERT INTO task_dead_letters (job_id, task_id, body, reason, receive_count)
SELECT job_id, task_id, body, $3, receive_count FROM moved";

/// A scan of the queue (it holds only pending work) and of the dead letters.
const DEPTH: &str = "
SELECT count(*) FILTER (WHERE visible_at <= now()) AS visible,
       count(*) FILTER (WHERE visible_at > now() AND receipt IS NOT NULL) AS in_flight,
       count(*) FILTER (WHERE visible_at > now() AND receipt IS NULL) AS delayed,
       (SELECT count(*) FROM task_dead_letters) AS dead_lettered
FROM task_queue";

const REMOVE_DEAD_LETTERS: &str = "DELETE FROM task_dead_letters WHERE id = ANY($1)";

/// The queued messages of some tasks of one job (the unique key leads with the job id).
const LIVE_MESSAGES: &str = "
SELECT task_id, attempt FROM task_queue WHERE job_id = $1 AND task_id = ANY($2)";

#[derive(Debug, Clone)]
pub(super) struct PgQueue {
    pool: PgPool,
    signals: Arc<Signals>,
    /// Where this instance's claims stopped in the fair order; shared by its clones.
    head: Arc<Mutex<Option<ClaimHead>>>,
}

/// The last row this instance's claims took, in the fair order, while every row before it in
/// its priority is known to be taken: the next claim starts after it ([`CLAIM_AFTER`]).
///
/// Why: a claim rewrites its rows and an acknowledgement deletes them, so the entries of every
/// row claimed since the last vacuum stay at the head of `task_queue_fair_idx`, dead, and a
/// claim from the head walks them all (during a drain of 100,000 tasks, hundreds of index pages
/// per claim; autovacuum comes at most once a minute). Starting after the head skips them.
///
/// When a row can appear before the head, the next claim scans from the start again:
/// - a send (this instance's, or another process's as its notification arrives; either bumps
///   the wake-up signal, whose value the head keeps), a release or a priority change by this
///   instance: the head is dropped;
/// - anything the signal does not carry (a delay or a visibility timeout that ran out, another
///   process's release or priority change, a notification lost or not yet heard, a claim that
///   rolled back): the head is trusted for one poll interval after the scan from the start
///   that set it, so such a row is taken in its fair turn at most that late;
/// - a claim from the head that finds fewer rows than asked takes the rest in a scan from the
///   start at once: a receiver never waits while a row it may take is visible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ClaimHead {
    priority: i32,
    /// The row's receive count before the claim that took it (its old place in the order).
    receive_count: i32,
    rank: i64,
    id: i64,
    /// The wake-up signal's value before the scan from the start.
    wake: u64,
    /// When that scan started.
    scanned_at: Instant,
}

/// What carries wake-ups between processes. Dropped with the last clone of the queue, which
/// stops the listener.
#[derive(Debug)]
struct Signals {
    /// Identifies this instance's own notifications, which its receivers need not hear.
    instance: String,
    /// The queue's wake-up signal, which the listener raises on others' notifications.
    wake: watch::Sender<u64>,
    /// Keeps the listener running between receives (it stops when no receiver is left).
    _listening: watch::Receiver<u64>,
    notifier: Notifier<String>,
    listener: Listener,
}

impl ClaimHead {
    /// The head after a claim that took `claimed` (its last row in the fair order), if any.
    fn after(claimed: &[ClaimedRow], wake: u64, scanned_at: Instant) -> Option<ClaimHead> {
        let last = claimed.iter().max_by_key(|row| {
            (
                std::cmp::Reverse(row.priority),
                row.receive_count,
                row.rank,
                row.id,
            )
        })?;
        Some(ClaimHead {
            priority: last.priority,
            receive_count: i32::try_from(last.receive_count - 1).ok()?,
            rank: last.rank,
            id: last.id,
            wake,
            scanned_at,
        })
    }
}

/// Deletes the rows `receipts` hold, with any executor (the pool, or a caller's transaction).
pub(super) async fn ack_on<'c>(
    executor: impl sqlx::PgExecutor<'c>,
    receipts: &[ReceiptRef<'_>],
) -> QueueResult<()> {
    let (ids, tokens) = receipt_arrays(receipts);
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(ACK)
        .bind(ids)
        .bind(tokens)
        .execute(executor)
        .await?;
    Ok(())
}

/// Receipt operands as arrays; a token that is not a UUID names no receipt and is skipped.
fn receipt_arrays(receipts: &[ReceiptRef<'_>]) -> (Vec<i64>, Vec<Uuid>) {
    receipts
        .iter()
        .filter_map(|r| Some((r.id, Uuid::parse_str(r.token).ok()?)))
        .unzip()
}

impl PgQueue {
    pub(super) fn new(pool: PgPool, wake: watch::Sender<u64>) -> Self {
        let instance = Uuid::now_v7().to_string();
        PgQueue {
            signals: Arc::new(Signals {
                notifier: Notifier::new(pool.clone(), SqlQueue::NOTIFY_CHANNEL, instance.clone()),
                instance,
                _listening: wake.subscribe(),
                wake,
                listener: Listener::default(),
            }),
            pool,
            head: Arc::default(),
        }
    }

    /// Most sends are of messages never queued (the relay sends each task once, unless it
    /// restarts): a plain insert first, without `ON CONFLICT`'s probe of the key and second
    /// WAL record per row. A message queued already fails that statement, alone (it is its
    /// own transaction); the batch is then sent again, skipping what is queued.
    pub(super) async fn send(&self, messages: &[NewMessage]) -> QueueResult<u64> {
        match insert_messages(&self.pool, messages, false).await {
            Err(QueueError::Database(error)) if super::QueueRows::is_queued_already(&error) => {
                insert_messages(&self.pool, messages, true).await
            }
            sent => sent,
        }
    }

    /// Tells other processes, after the commit, that messages were sent.
    pub(super) fn announce_send(&self) {
        // The payload is always this instance's id: every send is news.
        self.signals.notifier.announce(|_| true);
    }

    /// Starts listening for other processes' sends, if not already.
    pub(super) fn ensure_listener(&self) {
        let instance = self.signals.instance.clone();
        self.signals.listener.ensure(
            &self.pool,
            SqlQueue::NOTIFY_CHANNEL,
            &self.signals.wake,
            move |wake, heard| {
                if heard == Heard::Payload(&instance) {
                    return false;
                }
                *wake = wake.wrapping_add(1);
                true
            },
        );
    }

    /// Claims up to `max` rows: from after this instance's [`ClaimHead`] while it holds (at
    /// most `trust_for` after the scan from the start that set it), then, for what that did not
    /// find, from the start.
    pub(super) async fn claim(
        &self,
        max: i64,
        visibility_ms: i64,
        max_receives: i64,
        trust_for: Duration,
    ) -> QueueResult<ClaimOutcome> {
        let max_receives = i32::try_from(max_receives).unwrap_or(i32::MAX);
        let wake = *self.signals.wake.borrow();
        let head = (*self.lock_head())
            .filter(|head| head.wake == wake && head.scanned_at.elapsed() < trust_for);
        let mut outcome = ClaimOutcome::default();
        if let Some(head) = head {
            outcome = self
                .claim_statement(CLAIM_AFTER, max, visibility_ms, max_receives, Some(head))
                .await?;
            let found = outcome.len();
            if found == max {
                self.move_head(head, &outcome);
                return Ok(outcome);
            }
        }
        // Sends from other processes must bump the signal while a head is trusted.
        self.ensure_listener();
        let scanned_at = Instant::now();
        let rest = max - outcome.len();
        let from_start = self
            .claim_statement(CLAIM, rest, visibility_ms, max_receives, None)
            .await?;
        let found = from_start.len();
        let head = ClaimHead::after(&from_start.claimed, wake, scanned_at);
        *self.lock_head() = head.filter(|_| found == rest);
        outcome.claimed.extend(from_start.claimed);
        outcome.expired.extend(from_start.expired);
        Ok(outcome)
    }

    fn lock_head(&self) -> std::sync::MutexGuard<'_, Option<ClaimHead>> {
        self.head.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// After a claim from `from` took `outcome`: the head moves to its last row, unless
    /// something dropped or replaced the head meanwhile.
    fn move_head(&self, from: ClaimHead, outcome: &ClaimOutcome) {
        let mut head = self.lock_head();
        if *head == Some(from) {
            *head = ClaimHead::after(&outcome.claimed, from.wake, from.scanned_at).or(Some(from));
        }
    }

    /// Makes the next claim scan from the start (something may have become visible before the
    /// head).
    pub(super) fn drop_head(&self) {
        *self.lock_head() = None;
    }

    async fn claim_statement(
        &self,
        sql: &'static str,
        max: i64,
        visibility_ms: i64,
        max_receives: i32,
        after: Option<ClaimHead>,
    ) -> QueueResult<ClaimOutcome> {
        let mut query = sqlx::query(sql)
            .bind(max)
            .bind(visibility_ms)
            .bind(max_receives);
        if let Some(head) = after {
            query = query
                .bind(head.priority)
                .bind(head.receive_count)
                .bind(head.rank)
                .bind(head.id);
        }
        let rows = query.fetch_all(&self.pool).await?;
        let mut outcome = ClaimOutcome::default();
        for row in rows {
            let id: i64 = row.try_get("id")?;
            let receive_count = i64::from(row.try_get::<i32, _>("receive_count")?);
            if row.try_get("dead_lettered")? {
                outcome.expired.push(ExpiredRow {
                    id,
                    task_id: row.try_get::<Uuid, _>("task_id")?.to_string(),
                    receive_count,
                });
            } else {
                outcome.claimed.push(ClaimedRow {
                    id,
                    token: row.try_get::<Uuid, _>("receipt")?.to_string(),
                    body: row.try_get("body")?,
                    receive_count,
                    priority: row.try_get("priority")?,
                    rank: row.try_get("job_rank")?,
                });
            }
        }
        Ok(outcome)
    }

    /// The plan of a claim: from the start ([`CLAIM`]), or from a head ([`CLAIM_AFTER`]).
    pub(super) async fn explain_claim(
        &self,
        max: i64,
        max_receives: i64,
        from_head: bool,
    ) -> QueueResult<Vec<String>> {
        let max_receives = i32::try_from(max_receives).unwrap_or(i32::MAX);
        let sql = if from_head {
            EXPLAIN_CLAIM_AFTER
        } else {
            EXPLAIN_CLAIM
        };
        let mut query = sqlx::query_scalar(sql)
            .bind(max)
            .bind(30_000_i64)
            .bind(max_receives);
        if from_head {
            query = query.bind(0_i32).bind(0_i32).bind(0_i64).bind(0_i64);
        }
        Ok(query.fetch_all(&self.pool).await?)
    }

    pub(super) async fn next_visible_in(&self) -> QueueResult<Option<i64>> {
        Ok(sqlx::query_scalar(NEXT_VISIBLE)
            .fetch_one(&self.pool)
            .await?)
    }

    pub(super) async fn extend(
        &self,
        receipts: &[ReceiptRef<'_>],
        visibility_ms: i64,
    ) -> QueueResult<()> {
        let (ids, tokens) = receipt_arrays(receipts);
        if ids.is_empty() {
            return Ok(());
        }
        sqlx::query(EXTEND)
            .bind(ids)
            .bind(tokens)
            .bind(visibility_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(super) async fn release(
        &self,
        receipt: ReceiptRef<'_>,
        delay_ms: i64,
    ) -> QueueResult<bool> {
        let Ok(token) = Uuid::parse_str(receipt.token) else {
            return Ok(false);
        };
        let result = sqlx::query(RELEASE)
            .bind(receipt.id)
            .bind(token)
            .bind(delay_ms)
            .execute(&self.pool)
            .await?;
        self.drop_head();
        Ok(result.rows_affected() > 0)
    }

    pub(super) async fn ack(&self, receipts: &[ReceiptRef<'_>]) -> QueueResult<()> {
        ack_on(&self.pool, receipts).await
    }

    pub(super) async fn dead_letter(
        &self,
        receipt: ReceiptRef<'_>,
        reason: &str,
    ) -> QueueResult<bool> {
        let Ok(token) = Uuid::parse_str(receipt.token) else {
            return Ok(false);
        };
        let result = sqlx::query(DEAD_LETTER)
            .bind(receipt.id)
            .bind(token)
            .bind(reason)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() > 0)
    }

    pub(super) async fn set_priority(&self, job_id: Uuid, priority: i32) -> QueueResult<()> {
        sqlx::query(SET_PRIORITY)
            .bind(job_id)
            .bind(priority)
            .execute(&self.pool)
            .await?;
        self.drop_head();
        Ok(())
    }

    pub(super) async fn purge_job(&self, job_id: Uuid) -> QueueResult<u64> {
        super::purge_job(&self.pool, job_id).await
    }

    /// Seconds since the oldest deliverable message became visible (the claim index's first
    /// entry: no scan).
    pub(super) async fn oldest_message_age(&self) -> QueueResult<Duration> {
        const OLDEST: &str = "SELECT COALESCE(EXTRACT(EPOCH FROM now() - min(visible_at))::float8, 0) \
                              FROM task_queue WHERE visible_at <= now()";
        let seconds: f64 = sqlx::query_scalar(OLDEST).fetch_one(&self.pool).await?;
        Ok(Duration::from_secs_f64(seconds.max(0.0)))
    }

    pub(super) async fn depth(&self) -> QueueResult<QueueDepth> {
        let row = sqlx::query(DEPTH).fetch_one(&self.pool).await?;
        super::depth_row::<Postgres>(&row)
    }

    pub(super) async fn dead_letters(
        &self,
        job_id: Option<Uuid>,
        limit: i64,
    ) -> QueueResult<Vec<DeadLetter>> {
        super::dead_letters(&self.pool, job_id, limit).await
    }

    pub(super) async fn live_messages(
        &self,
        job_id: Uuid,
        task_ids: &[Uuid],
    ) -> QueueResult<Vec<(Uuid, i32)>> {
        Ok(sqlx::query_as(LIVE_MESSAGES)
            .bind(job_id)
            .bind(task_ids)
            .fetch_all(&self.pool)
            .await?)
    }

    pub(super) async fn remove_dead_letters(&self, ids: &[i64]) -> QueueResult<()> {
        sqlx::query(REMOVE_DEAD_LETTERS)
            .bind(ids)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// Inserts a batch of messages in one statement with any executor: the queue's pool (a send),
/// or a connection inside the caller's transaction (`QueueRows`). Returns how many were new.
/// `skip_queued`: a message queued already is skipped ([`SEND`]); otherwise it fails the
/// statement ([`SEND_NEW`]).
pub(super) async fn insert_messages<'c>(
    executor: impl sqlx::PgExecutor<'c>,
    messages: &[NewMessage],
    skip_queued: bool,
) -> QueueResult<u64> {
    let mut job_ids = Vec::with_capacity(messages.len());
    let mut task_ids = Vec::with_capacity(messages.len());
    let mut attempts = Vec::with_capacity(messages.len());
    let mut bodies = Vec::with_capacity(messages.len());
    let mut delays = Vec::with_capacity(messages.len());
    let mut ranks = Vec::with_capacity(messages.len());
    for message in messages {
        job_ids.push(message.job_id);
        task_ids.push(message.task_id);
        attempts.push(message.attempt);
        bodies.push(message.body.as_str());
        delays.push(message.delay_ms);
        ranks.push(message.rank);
    }
    let result = sqlx::query(if skip_queued { SEND } else { SEND_NEW })
        .bind(job_ids)
        .bind(task_ids)
        .bind(attempts)
        .bind(bodies)
        .bind(delays)
        .bind(ranks)
        .execute(executor)
        .await?;
    Ok(result.rows_affected())
}

impl super::QueueDialect for Postgres {
    fn get_opt_id(row: &PgRow, index: usize) -> QueueResult<Option<Uuid>> {
        Ok(row.try_get(index)?)
    }

    fn get_queue_time(row: &PgRow, index: usize) -> QueueResult<DateTime<Utc>> {
        Ok(row.try_get(index)?)
    }
}
