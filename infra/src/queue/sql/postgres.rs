//! The SQL queue's statements on Postgres, and its LISTEN/NOTIFY wake-ups.
//!
//! Every operation is one statement (one implicit transaction); the claim takes rows with
//! `FOR UPDATE SKIP LOCKED`, so concurrent receivers never wait for each other nor get the same
//! row. Sends are announced with `pg_notify` after they commit, from a background task on a
//! connection of its own (as the event log does): a NOTIFY inside the sending transaction would
//! hold a cluster-wide lock through the commit's flush and serialize every sender.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::postgres::{PgConnection, PgListener, PgPool};
use sqlx::{Connection, Row};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::{ClaimOutcome, ClaimedRow, ExpiredRow, NewMessage, ReceiptRef, SqlQueue};
use crate::queue::{DeadLetter, QueueDepth, QueueResult};

/// A batch in one statement; rows get ids in input order. A (task, attempt) already queued is
/// skipped (the key leads with job_id, see the migration).
const SEND: &str = "
INSERT INTO task_queue (job_id, task_id, attempt, body, visible_at)
SELECT m.job_id, m.task_id, m.attempt, m.body, now() + m.delay_ms * interval '1 millisecond'
FROM UNNEST($1::uuid[], $2::uuid[], $3::int[], $4::text[], $5::bigint[])
    WITH ORDINALITY AS m(job_id, task_id, attempt, body, delay_ms, ord)
ORDER BY m.ord
ON CONFLICT (job_id, task_id, attempt) DO NOTHING";

/// The claim, in one statement. `picked` locks up to $1 of the oldest visible rows, skipping
/// rows another claim holds (task_queue_claim_idx gives them in order, no sort); it is
/// MATERIALIZED so it is evaluated exactly once. Of those, rows already received $3 times are
/// moved to the dead letters (`expired`, `moved`), the others are hidden for $2 ms with a new
/// receipt and delivered (`claimed`). The result lists both, flagged.
const CLAIM: &str = "
WITH picked AS MATERIALIZED (
    SELECT id FROM task_queue
    WHERE visible_at <= now()
    ORDER BY visible_at, id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
),
claimed AS (
    UPDATE task_queue q
    SET visible_at = now() + $2 * interval '1 millisecond',
        receive_count = q.receive_count + 1,
        receipt = gen_random_uuid()
    FROM picked
    WHERE q.id = picked.id AND q.receive_count < $3
    RETURNING q.id, q.task_id, q.body, q.receive_count, q.receipt
),
expired AS (
    DELETE FROM task_queue q
    USING picked
    WHERE q.id = picked.id AND q.receive_count >= $3
    RETURNING q.id, q.job_id, q.task_id, q.body, q.receive_count
),
moved AS (
    INSERT INTO task_dead_letters (job_id, task_id, body, reason, receive_count)
    SELECT job_id, task_id, body,
           'received ' || receive_count || ' times without being handled', receive_count
    FROM expired
)
SELECT id, task_id, body, receive_count, receipt, false AS dead_lettered FROM claimed
UNION ALL
SELECT id, task_id, body, receive_count, NULL, true FROM expired";

/// Milliseconds from now until the first row becomes visible (the claim index's first entry).
const NEXT_VISIBLE: &str = "
SELECT (EXTRACT(EPOCH FROM (min(visible_at) - now())) * 1000)::bigint FROM task_queue";

const EXTEND: &str = "
UPDATE task_queue q
SET visible_at = now() + $3 * interval '1 millisecond'
FROM UNNEST($1::bigint[], $2::uuid[]) AS r(id, receipt)
WHERE q.id = r.id AND q.receipt = r.receipt";

/// Visible again after $3 ms, and no longer held: the receipt is cleared (so the message
/// counts as delayed, and the releasing holder cannot touch it any more).
const RELEASE: &str = "
UPDATE task_queue
SET visible_at = now() + $3 * interval '1 millisecond', receipt = NULL
WHERE id = $1 AND receipt = $2";

const ACK: &str = "
DELETE FROM task_queue q
USING UNNEST($1::bigint[], $2::uuid[]) AS r(id, receipt)
WHERE q.id = r.id AND q.receipt = r.receipt";

const DEAD_LETTER: &str = "
WITH moved AS (
    DELETE FROM task_queue WHERE id = $1 AND receipt = $2
    RETURNING job_id, task_id, body, receive_count
)
INSERT INTO task_dead_letters (job_id, task_id, body, reason, receive_count)
SELECT job_id, task_id, body, $3, receive_count FROM moved";

const PURGE_JOB: &str = "DELETE FROM task_queue WHERE job_id = $1";

/// A scan of the queue (it holds only pending work) and of the dead letters.
const DEPTH: &str = "
SELECT count(*) FILTER (WHERE visible_at <= now()) AS visible,
       count(*) FILTER (WHERE visible_at > now() AND receipt IS NOT NULL) AS in_flight,
       count(*) FILTER (WHERE visible_at > now() AND receipt IS NULL) AS delayed,
       (SELECT count(*) FROM task_dead_letters) AS dead_lettered
FROM task_queue";

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

const REMOVE_DEAD_LETTERS: &str = "DELETE FROM task_dead_letters WHERE id = ANY($1)";

#[derive(Debug, Clone)]
pub(super) struct PgQueue {
    pool: PgPool,
    signals: Arc<Signals>,
}

/// The background tasks that carry wake-ups between processes. Dropped with the last clone
/// of the queue, which stops them.
#[derive(Debug)]
struct Signals {
    /// Identifies this instance's own notifications, which its receivers need not hear.
    instance: String,
    /// The queue's wake-up signal, which the listener raises on others' notifications.
    wake: watch::Sender<u64>,
    /// Bumped after each send that inserted rows; the notifier announces it.
    sent: watch::Sender<u64>,
    listener: Mutex<Option<JoinHandle<()>>>,
    notifier: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Signals {
    fn drop(&mut self) {
        for slot in [&self.listener, &self.notifier] {
            if let Some(task) = slot.lock().unwrap_or_else(PoisonError::into_inner).take() {
                task.abort();
            }
        }
    }
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
        PgQueue {
            pool,
            signals: Arc::new(Signals {
                instance: Uuid::now_v7().to_string(),
                wake,
                sent: watch::Sender::new(0),
                listener: Mutex::new(None),
                notifier: Mutex::new(None),
            }),
        }
    }

    pub(super) async fn send(&self, messages: &[NewMessage]) -> QueueResult<u64> {
        let mut job_ids = Vec::with_capacity(messages.len());
        let mut task_ids = Vec::with_capacity(messages.len());
        let mut attempts = Vec::with_capacity(messages.len());
        let mut bodies = Vec::with_capacity(messages.len());
        let mut delays = Vec::with_capacity(messages.len());
        for message in messages {
            job_ids.push(message.job_id);
            task_ids.push(message.task_id);
            attempts.push(message.attempt);
            bodies.push(message.body.as_str());
            delays.push(message.delay_ms);
        }
        let result = sqlx::query(SEND)
            .bind(job_ids)
            .bind(task_ids)
            .bind(attempts)
            .bind(bodies)
            .bind(delays)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected())
    }

    /// Tells other processes, after the commit, that messages were sent.
    pub(super) fn announce_send(&self) {
        self.signals.sent.send_modify(|n| *n = n.wrapping_add(1));
        ensure_task(&self.signals.notifier, || {
            announce_sends(
                self.pool.clone(),
                self.signals.sent.subscribe(),
                self.signals.instance.clone(),
            )
        });
    }

    /// Starts listening for other processes' sends, if not already.
    pub(super) fn ensure_listener(&self) {
        ensure_task(&self.signals.listener, || {
            listen_for_sends(
                self.pool.clone(),
                self.signals.wake.clone(),
                self.signals.instance.clone(),
            )
        });
    }

    pub(super) async fn claim(
        &self,
        max: i64,
        visibility_ms: i64,
        max_receives: i64,
    ) -> QueueResult<ClaimOutcome> {
        let max_receives = i32::try_from(max_receives).unwrap_or(i32::MAX);
        let rows = sqlx::query(CLAIM)
            .bind(max)
            .bind(visibility_ms)
            .bind(max_receives)
            .fetch_all(&self.pool)
            .await?;
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
                });
            }
        }
        Ok(outcome)
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
        Ok(result.rows_affected() > 0)
    }

    pub(super) async fn ack(&self, receipts: &[ReceiptRef<'_>]) -> QueueResult<()> {
        let (ids, tokens) = receipt_arrays(receipts);
        if ids.is_empty() {
            return Ok(());
        }
        sqlx::query(ACK)
            .bind(ids)
            .bind(tokens)
            .execute(&self.pool)
            .await?;
        Ok(())
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

    pub(super) async fn purge_job(&self, job_id: Uuid) -> QueueResult<u64> {
        let result = sqlx::query(PURGE_JOB)
            .bind(job_id)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected())
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
        let count = |name: &str| -> QueueResult<u64> {
            Ok(u64::try_from(row.try_get::<i64, _>(name)?).unwrap_or(0))
        };
        Ok(QueueDepth {
            visible: count("visible")?,
            in_flight: count("in_flight")?,
            delayed: count("delayed")?,
            dead_lettered: count("dead_lettered")?,
        })
    }

    pub(super) async fn dead_letters(
        &self,
        job_id: Option<Uuid>,
        limit: i64,
    ) -> QueueResult<Vec<DeadLetter>> {
        let query = match job_id {
            Some(job_id) => sqlx::query(JOB_DEAD_LETTERS).bind(limit).bind(job_id),
            None => sqlx::query(DEAD_LETTERS).bind(limit),
        };
        let rows = query.fetch_all(&self.pool).await?;
        rows.into_iter()
            .map(|row| {
                Ok(DeadLetter {
                    id: row.try_get::<i64, _>("id")?.to_string(),
                    job_id: row.try_get("job_id")?,
                    task_id: row.try_get("task_id")?,
                    raw: row.try_get("body")?,
                    reason: row.try_get("reason")?,
                    dead_lettered_at: row.try_get("dead_lettered_at")?,
                })
            })
            .collect()
    }

    pub(super) async fn remove_dead_letters(&self, ids: &[i64]) -> QueueResult<()> {
        sqlx::query(REMOVE_DEAD_LETTERS)
            .bind(ids)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// Runs `task` in `slot` unless a task runs there already (no-op outside a Tokio runtime).
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

/// Announces this instance's sends with NOTIFY, coalescing those that come faster than a round
/// trip. Ends when the queue is dropped.
async fn announce_sends(pool: PgPool, mut sent: watch::Receiver<u64>, instance: String) {
    let mut conn: Option<PgConnection> = None;
    while sent.changed().await.is_ok() {
        sent.borrow_and_update();
        for attempt in 1..=2 {
            if conn.is_none() {
                match connect_notifier(&pool).await {
                    Ok(connected) => conn = Some(connected),
                    Err(error) => {
                        tracing::warn!(%error, "cannot announce queue sends; receivers will poll");
                        break;
                    }
                }
            }
            let Some(c) = conn.as_mut() else { break };
            match sqlx::query("SELECT pg_notify($1, $2)")
                .bind(SqlQueue::NOTIFY_CHANNEL)
                .bind(&instance)
                .execute(&mut *c)
                .await
            {
                Ok(_) => break,
                Err(error) => {
                    tracing::warn!(%error, attempt, "cannot announce a queue send; receivers will poll");
                    conn = None;
                }
            }
        }
    }
}

async fn connect_notifier(pool: &PgPool) -> Result<PgConnection, sqlx::Error> {
    let mut conn = PgConnection::connect_with(&pool.connect_options()).await?;
    // The NOTIFY announces rows that are already durable: it need not wait for a flush while
    // holding the cluster-wide notify lock.
    sqlx::query("SET synchronous_commit = off")
        .execute(&mut conn)
        .await?;
    Ok(conn)
}

/// Raises `wake` on other instances' sends, reconnecting on failure. Ends when the queue is
/// dropped (or its pool closed).
async fn listen_for_sends(pool: PgPool, wake: watch::Sender<u64>, instance: String) {
    let raise = || wake.send_modify(|n| *n = n.wrapping_add(1));
    let mut listener: Option<PgListener> = None;
    loop {
        let Some(active) = listener.as_mut() else {
            let connect = async {
                let mut connected = PgListener::connect_with(&pool).await?;
                connected.listen(SqlQueue::NOTIFY_CHANNEL).await?;
                Ok::<_, sqlx::Error>(connected)
            };
            match connect.await {
                Ok(connected) => {
                    listener = Some(connected);
                    // Sends announced before LISTEN took effect were missed.
                    raise();
                }
                Err(sqlx::Error::PoolClosed) => return,
                Err(error) => {
                    tracing::warn!(%error, "cannot LISTEN for queue sends; receivers will poll");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            continue;
        };
        match active.try_recv().await {
            Ok(Some(notification)) => {
                if notification.payload() != instance {
                    raise();
                }
            }
            // The connection was lost (it reconnects on the next call): sends were missed.
            Ok(None) => raise(),
            Err(sqlx::Error::PoolClosed) => return,
            Err(error) => {
                tracing::warn!(%error, "lost the queue's LISTEN connection; reconnecting");
                listener = None;
            }
        }
    }
}
