//! The SQL queue's statements on SQLite.
//!
//! SQLite has one writer at a time. Writes of this queue take the database's in-process write
//! lock first ([`crate::sqlite_writer`], shared with the event log and every other
//! writer of this process), so that this process's writers queue up in order instead of
//! sleeping in SQLite's busy handler;
//! the claim runs in a `BEGIN IMMEDIATE` transaction (it dead-letters and claims in separate
//! statements, as SQLite has no data-modifying CTEs). Times are integer milliseconds since the
//! Unix epoch, read from this process's clock; ids are hyphenated UUID text. Batches go in as
//! one JSON array parameter (`json_each`), the way Postgres takes arrays, except
//! acknowledgements, the hottest, which go in as bound rows (`crate::sqlite_rows`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::Row;
use sqlx::sqlite::{Sqlite, SqlitePool, SqliteRow};
use uuid::Uuid;

use super::{ClaimOutcome, ClaimedRow, ExpiredRow, NewMessage, ReceiptRef, over_received_reason};
use crate::dialect::Dialect;
use crate::queue::{DeadLetter, QueueDepth, QueueError, QueueResult};
use crate::sqlite_rows::{MAX_ROWS, RowsStatement};
use crate::sqlite_writer::WriteGuard;

/// `$1`: a JSON array of `[job_id, task_id, attempt, body, delay_ms, rank]`; `$2`: now. Rows
/// get ids in input order, and their job's priority (0 unless `set_priority` gave it another);
/// a (task, attempt) already queued is skipped. (`WHERE true` keeps `ON CONFLICT` from parsing
/// as a join constraint.)
const SEND: &str = "
INSERT INTO task_queue (job_id, task_id, attempt, body, visible_at, enqueued_at, job_rank,
                        priority)
SELECT json_extract(m.value, '$[0]'), json_extract(m.value, '$[1]'),
       json_extract(m.value, '$[2]'), json_extract(m.value, '$[3]'),
       $2 + json_extract(m.value, '$[4]'), $2, json_extract(m.value, '$[5]'),
       COALESCE((SELECT p.priority FROM task_queue_priorities p
                 WHERE p.job_id = json_extract(m.value, '$[0]')), 0)
FROM json_each($1) AS m
WHERE true
ORDER BY m.key
ON CONFLICT (job_id, task_id, attempt) DO NOTHING";

/// The first step of a claim: of the first `$2` visible rows in the fair order (see the module
/// docs of `sql`), those already received `$3` times leave the queue (and go to the dead
/// letters, by `INSERT_DEAD_LETTER`).
const EXPIRE: &str = "
DELETE FROM task_queue
WHERE id IN (SELECT id FROM task_queue INDEXED BY task_queue_fair_idx WHERE visible_at <= $1
             ORDER BY priority DESC, receive_count, job_rank, id LIMIT $2)
  AND receive_count >= $3
RETURNING id, job_id, task_id, body, receive_count";

/// The claim: up to `$3` visible rows in the fair order, hidden until `$2` with a new receipt.
/// The fair index is named (`INDEXED BY`): without statistics SQLite could otherwise take the
/// visible rows by `visible_at` and sort them all, at every claim.
macro_rules! claim_sql {
    () => {
        "
UPDATE task_queue
SET visible_at = $2, receive_count = receive_count + 1, receipt = lower(hex(randomblob(16)))
WHERE id IN (
    SELECT id FROM task_queue INDEXED BY task_queue_fair_idx
    WHERE visible_at <= $1 AND receive_count < $4
    ORDER BY priority DESC, receive_count, job_rank, id
    LIMIT $3)
RETURNING id, body, receive_count, receipt, priority, job_rank"
    };
}
const CLAIM: &str = claim_sql!();
const EXPLAIN_CLAIM: &str = concat!("EXPLAIN QUERY PLAN ", claim_sql!());

/// The job's priority for rows sent from now on (`$1`: the job, `$2`: the priority).
const SAVE_PRIORITY: &str = "
INSERT INTO task_queue_priorities (job_id, priority) VALUES ($1, $2)
ON CONFLICT (job_id) DO UPDATE SET priority = excluded.priority";

/// The job's rows in the queue (by the unique key, which leads with the job id).
const REPRIORITIZE: &str = "
UPDATE task_queue SET priority = $2 WHERE job_id = $1 AND priority <> $2";

const INSERT_DEAD_LETTER: &str = "
INSERT INTO task_dead_letters (job_id, task_id, body, reason, receive_count, dead_lettered_at)
VALUES ($1, $2, $3, $4, $5, $6)";

const NEXT_VISIBLE: &str = "SELECT MIN(visible_at) FROM task_queue";

/// `$1`: a JSON array of `[id, receipt]`.
const EXTEND: &str = "
UPDATE task_queue
SET visible_at = $2
FROM (SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS receipt
      FROM json_each($1)) AS r
WHERE task_queue.id = r.id AND task_queue.receipt = r.receipt";

const RELEASE: &str = "
UPDATE task_queue SET visible_at = $3, receipt = NULL WHERE id = $1 AND receipt = $2";

/// Rows of `[id, receipt]` (`crate::sqlite_rows`).
static ACK: RowsStatement = RowsStatement::new(
    "DELETE FROM task_queue WHERE (id, receipt) IN (VALUES ",
    2,
    ")",
);

const TAKE_FOR_DEAD_LETTER: &str = "
DELETE FROM task_queue WHERE id = $1 AND receipt = $2
RETURNING job_id, task_id, body, receive_count";

const DEPTH: &str = "
SELECT COALESCE(SUM(visible_at <= $1), 0) AS visible,
       COALESCE(SUM(visible_at > $1 AND receipt IS NOT NULL), 0) AS in_flight,
       COALESCE(SUM(visible_at > $1 AND receipt IS NULL), 0) AS delayed,
       (SELECT COUNT(*) FROM task_dead_letters) AS dead_lettered
FROM task_queue";

/// `$1`: a JSON array of ids.
const REMOVE_DEAD_LETTERS: &str = "
DELETE FROM task_dead_letters WHERE id IN (SELECT value FROM json_each($1))";

/// The queued messages of some tasks of one job; `$2`: a JSON array of task ids.
const LIVE_MESSAGES: &str = "
SELECT task_id, attempt FROM task_queue
WHERE job_id = $1 AND task_id IN (SELECT value FROM json_each($2))";

#[derive(Debug, Clone)]
pub(super) struct SqliteQueue {
    pool: SqlitePool,
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn receipts_json(receipts: &[ReceiptRef<'_>]) -> String {
    json!(
        receipts
            .iter()
            .map(|r| json!([r.id, r.token]))
            .collect::<Vec<_>>()
    )
    .to_string()
}

/// The messages as the JSON array `SEND` takes.
fn rows_json(messages: &[NewMessage]) -> String {
    let rows: Vec<_> = messages
        .iter()
        .map(|m| {
            json!([
                m.job_id.to_string(),
                m.task_id.to_string(),
                m.attempt,
                m.body,
                m.delay_ms,
                m.rank
            ])
        })
        .collect();
    serde_json::Value::Array(rows).to_string()
}

/// Deletes the rows `receipts` hold on `conn`, which holds the database's write lock (alone, or
/// in the caller's write transaction).
pub(super) async fn ack_on(
    conn: &mut sqlx::SqliteConnection,
    receipts: &[ReceiptRef<'_>],
) -> QueueResult<()> {
    let rows: Vec<Vec<Value>> = receipts
        .iter()
        .map(|r| vec![r.id.into(), r.token.into()])
        .collect();
    ACK.execute(conn, &rows).await?;
    Ok(())
}

/// Inserts a batch of messages on a connection inside the caller's write transaction (which
/// holds the database's write lock, so no other is taken here); how many were new.
pub(super) async fn insert_messages(
    conn: &mut sqlx::SqliteConnection,
    messages: &[NewMessage],
) -> QueueResult<u64> {
    let result = sqlx::query(SEND)
        .bind(rows_json(messages))
        .bind(now_ms())
        .execute(conn)
        .await?;
    Ok(result.rows_affected())
}

impl SqliteQueue {
    pub(super) fn new(pool: SqlitePool) -> Self {
        SqliteQueue { pool }
    }

    /// The database's in-process write lock, for an autocommit write: write on its
    /// [`WriteGuard::pool`].
    async fn write_lock(&self) -> WriteGuard {
        crate::sqlite_writer::lock(&self.pool).await
    }

    pub(super) async fn send(&self, messages: &[NewMessage]) -> QueueResult<u64> {
        let rows = rows_json(messages);
        let write = self.write_lock().await;
        let result = sqlx::query(SEND)
            .bind(rows)
            .bind(now_ms())
            .execute(&write.pool(&self.pool))
            .await?;
        Ok(result.rows_affected())
    }

    pub(super) async fn claim(
        &self,
        max: i64,
        visibility_ms: i64,
        max_receives: i64,
    ) -> QueueResult<ClaimOutcome> {
        let mut tx = Sqlite::begin_write(&self.pool).await?;
        // The clock is read once the write lock is ours.
        let now = now_ms();
        let expired = sqlx::query(EXPIRE)
            .bind(now)
            .bind(max)
            .bind(max_receives)
            .fetch_all(&mut *tx)
            .await?;
        let mut outcome = ClaimOutcome::default();
        for row in expired {
            let task_id: String = row.try_get("task_id")?;
            let receive_count: i64 = row.try_get("receive_count")?;
            sqlx::query(INSERT_DEAD_LETTER)
                .bind(row.try_get::<String, _>("job_id")?)
                .bind(&task_id)
                .bind(row.try_get::<String, _>("body")?)
                .bind(over_received_reason(receive_count))
                .bind(receive_count)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            outcome.expired.push(ExpiredRow {
                id: row.try_get("id")?,
                task_id,
                receive_count,
            });
        }
        let claimed = sqlx::query(CLAIM)
            .bind(now)
            .bind(now.saturating_add(visibility_ms))
            .bind(max)
            .bind(max_receives)
            .fetch_all(&mut *tx)
            .await?;
        for row in claimed {
            outcome.claimed.push(ClaimedRow {
                id: row.try_get("id")?,
                token: row.try_get("receipt")?,
                body: row.try_get("body")?,
                receive_count: row.try_get("receive_count")?,
                priority: row.try_get("priority")?,
                rank: row.try_get("job_rank")?,
            });
        }
        tx.commit().await?;
        Ok(outcome)
    }

    pub(super) async fn explain_claim(
        &self,
        max: i64,
        max_receives: i64,
    ) -> QueueResult<Vec<String>> {
        let now = now_ms();
        let rows = sqlx::query(EXPLAIN_CLAIM)
            .bind(now)
            .bind(now.saturating_add(30_000))
            .bind(max)
            .bind(max_receives)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| Ok(row.try_get::<String, _>("detail")?))
            .collect()
    }

    pub(super) async fn next_visible_in(&self) -> QueueResult<Option<i64>> {
        let next: Option<i64> = sqlx::query_scalar(NEXT_VISIBLE)
            .fetch_one(&self.pool)
            .await?;
        Ok(next.map(|at| at.saturating_sub(now_ms())))
    }

    pub(super) async fn extend(
        &self,
        receipts: &[ReceiptRef<'_>],
        visibility_ms: i64,
    ) -> QueueResult<()> {
        let receipts = receipts_json(receipts);
        let write = self.write_lock().await;
        sqlx::query(EXTEND)
            .bind(receipts)
            .bind(now_ms().saturating_add(visibility_ms))
            .execute(&write.pool(&self.pool))
            .await?;
        Ok(())
    }

    pub(super) async fn release(
        &self,
        receipt: ReceiptRef<'_>,
        delay_ms: i64,
    ) -> QueueResult<bool> {
        let write = self.write_lock().await;
        let result = sqlx::query(RELEASE)
            .bind(receipt.id)
            .bind(receipt.token)
            .bind(now_ms().saturating_add(delay_ms))
            .execute(&write.pool(&self.pool))
            .await?;
        Ok(result.rows_affected() > 0)
    }

    pub(super) async fn ack(&self, receipts: &[ReceiptRef<'_>]) -> QueueResult<()> {
        // One chunk is one statement on its own; more go in one transaction (one commit).
        if receipts.len() <= MAX_ROWS {
            let write = self.write_lock().await;
            ack_on(&mut *write.pool(&self.pool).acquire().await?, receipts).await
        } else {
            let mut tx = Sqlite::begin_write(&self.pool).await?;
            ack_on(&mut tx, receipts).await?;
            tx.commit().await?;
            Ok(())
        }
    }

    pub(super) async fn dead_letter(
        &self,
        receipt: ReceiptRef<'_>,
        reason: &str,
    ) -> QueueResult<bool> {
        let mut tx = Sqlite::begin_write(&self.pool).await?;
        let Some(row) = sqlx::query(TAKE_FOR_DEAD_LETTER)
            .bind(receipt.id)
            .bind(receipt.token)
            .fetch_optional(&mut *tx)
            .await?
        else {
            tx.rollback().await?;
            return Ok(false);
        };
        sqlx::query(INSERT_DEAD_LETTER)
            .bind(row.try_get::<String, _>("job_id")?)
            .bind(row.try_get::<String, _>("task_id")?)
            .bind(row.try_get::<String, _>("body")?)
            .bind(reason)
            .bind(row.try_get::<i64, _>("receive_count")?)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    pub(super) async fn set_priority(&self, job_id: Uuid, priority: i32) -> QueueResult<()> {
        let job_id = job_id.to_string();
        let mut tx = Sqlite::begin_write(&self.pool).await?;
        for statement in [SAVE_PRIORITY, REPRIORITIZE] {
            sqlx::query(statement)
                .bind(&job_id)
                .bind(priority)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn purge_job(&self, job_id: Uuid) -> QueueResult<u64> {
        let write = self.write_lock().await;
        super::purge_job(&write.pool(&self.pool), job_id).await
    }

    /// Milliseconds since the oldest deliverable message became visible (the claim index's
    /// first entry: no scan).
    pub(super) async fn oldest_message_age(&self) -> QueueResult<Duration> {
        const OLDEST: &str = "SELECT ?1 - min(visible_at) FROM task_queue WHERE visible_at <= ?1";
        let now = now_ms();
        let oldest: Option<i64> = sqlx::query_scalar(OLDEST)
            .bind(now)
            .fetch_one(&self.pool)
            .await?;
        Ok(Duration::from_millis(
            u64::try_from(oldest.unwrap_or(0)).unwrap_or(0),
        ))
    }

    pub(super) async fn depth(&self) -> QueueResult<QueueDepth> {
        let row = sqlx::query(DEPTH)
            .bind(now_ms())
            .fetch_one(&self.pool)
            .await?;
        super::depth_row::<Sqlite>(&row)
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
        let ids = json!(task_ids).to_string();
        let rows: Vec<(String, i32)> = sqlx::query_as(LIVE_MESSAGES)
            .bind(job_id.to_string())
            .bind(ids)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(task_id, attempt)| Some((Uuid::parse_str(&task_id).ok()?, attempt)))
            .collect())
    }

    pub(super) async fn remove_dead_letters(&self, ids: &[i64]) -> QueueResult<()> {
        let ids = json!(ids).to_string();
        let write = self.write_lock().await;
        sqlx::query(REMOVE_DEAD_LETTERS)
            .bind(ids)
            .execute(&write.pool(&self.pool))
            .await?;
        Ok(())
    }
}

impl super::QueueDialect for Sqlite {
    fn get_opt_id(row: &SqliteRow, index: usize) -> QueueResult<Option<Uuid>> {
        let text: Option<String> = row.try_get(index)?;
        Ok(text.and_then(|v| Uuid::parse_str(&v).ok()))
    }

    fn get_queue_time(row: &SqliteRow, index: usize) -> QueueResult<DateTime<Utc>> {
        let at: i64 = row.try_get(index)?;
        DateTime::from_timestamp_millis(at).ok_or(QueueError::OutOfRange {
            what: "dead letter time",
            value: at,
        })
    }
}
