//! The read model on Postgres: `UNNEST` upserts (one statement per table per batch), loads by
//! `= ANY($1)`, and the queries.

use std::collections::HashSet;

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;
use shoal_domain::{JobId, JobProgress, TaskId};
use sqlx::postgres::{PgPool, PgRow};
use sqlx::types::Json;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::types::{
    AnalyticsChanges, AnalyticsJobState, DayCounts, JobCursor, JobFilter, JobRow, JobSort,
    JobsChanges, MinuteCounts, ProjectionName, Target, TaskRow,
};
use super::{ReadModelError, ReadModelResult, count, job_status, search_pattern, task_status};
use crate::eventlog::LogPosition;

macro_rules! job_columns {
    () => {
        "id, job_type, status, stream_status, total_tasks, created_upto, created, queued, \
         running, completed, failed, retrying, parameters, max_attempts, timeout_seconds, \
         created_at, updated_at, started_at, completed_at, error_message, cancel_reason"
    };
}

macro_rules! task_columns {
    () => {
        "id, job_id, task_index, job_type, status, attempt, max_attempts, timeout_seconds, \
         parameters, result, error_message, worker, created_at, updated_at, started_at, \
         completed_at, next_attempt_at, duration_ms, dead_lettered"
    };
}

macro_rules! upsert_jobs {
    ($t:literal) => {
        concat!(
            "INSERT INTO ",
            $t,
            " (",
            job_columns!(),
            ")
             SELECT id, job_type, status, stream_status, total_tasks, created_upto, created,
                    queued, running, completed, failed, retrying, parameters::jsonb,
                    max_attempts, timeout_seconds, created_at, updated_at, started_at,
                    completed_at, error_message, cancel_reason
             FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int8[],
                         $6::int8[], $7::int8[], $8::int8[], $9::int8[], $10::int8[],
                         $11::int8[], $12::int8[], $13::text[], $14::int8[], $15::int8[],
                         $16::timestamptz[], $17::timestamptz[], $18::timestamptz[],
                         $19::timestamptz[], $20::text[], $21::text[])
                  AS u(",
            job_columns!(),
            ")
             ON CONFLICT (id) DO UPDATE SET
                 job_type = EXCLUDED.job_type, status = EXCLUDED.status,
                 stream_status = EXCLUDED.stream_status, total_tasks = EXCLUDED.total_tasks,
                 created_upto = EXCLUDED.created_upto, created = EXCLUDED.created,
                 queued = EXCLUDED.queued, running = EXCLUDED.running,
                 completed = EXCLUDED.completed, failed = EXCLUDED.failed,
                 retrying = EXCLUDED.retrying, parameters = EXCLUDED.parameters,
                 max_attempts = EXCLUDED.max_attempts,
                 timeout_seconds = EXCLUDED.timeout_seconds, created_at = EXCLUDED.created_at,
                 updated_at = EXCLUDED.updated_at, started_at = EXCLUDED.started_at,
                 completed_at = EXCLUDED.completed_at, error_message = EXCLUDED.error_message,
                 cancel_reason = EXCLUDED.cancel_reason"
        )
    };
}

macro_rules! insert_tasks {
    ($t:literal) => {
        concat!(
            "INSERT INTO ",
            $t,
            " (",
            task_columns!(),
            ")
             SELECT id, job_id, task_index, job_type, status, attempt, max_attempts,
                    timeout_seconds, parameters::jsonb, result::jsonb, error_message, worker,
                    created_at, updated_at, started_at, completed_at, next_attempt_at,
                    duration_ms, dead_lettered
             FROM UNNEST($1::uuid[], $2::uuid[], $3::int8[], $4::text[], $5::text[],
                         $6::int8[], $7::int8[], $8::int8[], $9::text[], $10::text[],
                         $11::text[], $12::text[], $13::timestamptz[], $14::timestamptz[],
                         $15::timestamptz[], $16::timestamptz[], $17::timestamptz[],
                         $18::int8[], $19::bool[])
                  AS u(",
            task_columns!(),
            ")"
        )
    };
}

macro_rules! upsert_tasks {
    ($t:literal) => {
        concat!(
            insert_tasks!($t),
            "
             ON CONFLICT (id) DO UPDATE SET
                 job_id = EXCLUDED.job_id, task_index = EXCLUDED.task_index,
                 job_type = EXCLUDED.job_type, status = EXCLUDED.status,
                 attempt = EXCLUDED.attempt, max_attempts = EXCLUDED.max_attempts,
                 timeout_seconds = EXCLUDED.timeout_seconds, parameters = EXCLUDED.parameters,
                 result = EXCLUDED.result, error_message = EXCLUDED.error_message,
                 worker = EXCLUDED.worker, created_at = EXCLUDED.created_at,
                 updated_at = EXCLUDED.updated_at, started_at = EXCLUDED.started_at,
                 completed_at = EXCLUDED.completed_at,
                 next_attempt_at = EXCLUDED.next_attempt_at,
                 duration_ms = EXCLUDED.duration_ms, dead_lettered = EXCLUDED.dead_lettered"
        )
    };
}

const UPSERT_JOBS: [&str; 2] = [upsert_jobs!("jobs"), upsert_jobs!("jobs_rebuild")];
const UPSERT_TASKS: [&str; 2] = [upsert_tasks!("tasks"), upsert_tasks!("tasks_rebuild")];
/// For the rows a batch creates (no stored row was loaded for them): a plain insert, without
/// the cost of `ON CONFLICT` (a probe of the key before each row and a second WAL record).
const INSERT_TASKS: [&str; 2] = [insert_tasks!("tasks"), insert_tasks!("tasks_rebuild")];
const LOAD_JOBS: [&str; 2] = [
    concat!("SELECT ", job_columns!(), " FROM jobs WHERE id = ANY($1)"),
    concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs_rebuild WHERE id = ANY($1)"
    ),
];
const LOAD_TASKS: [&str; 2] = [
    concat!("SELECT ", task_columns!(), " FROM tasks WHERE id = ANY($1)"),
    concat!(
        "SELECT ",
        task_columns!(),
        " FROM tasks_rebuild WHERE id = ANY($1)"
    ),
];

macro_rules! analytics_sql {
    ($s:literal) => {
        [
            // 0: load job states
            concat!(
                "SELECT job_id, stream_status, total_tasks, created_upto, started
                 FROM analytics_job_state", $s, " WHERE job_id = ANY($1)"
            ),
            // 1: upsert job states
            concat!(
                "INSERT INTO analytics_job_state", $s,
                " (job_id, stream_status, total_tasks, created_upto, started)
                 SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::int8[], $4::int8[], $5::bool[])
                 ON CONFLICT (job_id) DO UPDATE SET
                     stream_status = EXCLUDED.stream_status, total_tasks = EXCLUDED.total_tasks,
                     created_upto = EXCLUDED.created_upto, started = EXCLUDED.started"
            ),
            // 2: jobs by type
            concat!(
                "INSERT INTO analytics_jobs_by_type", $s, " AS t (job_type, count)
                 SELECT * FROM UNNEST($1::text[], $2::int8[])
                 ON CONFLICT (job_type) DO UPDATE SET count = t.count + EXCLUDED.count"
            ),
            // 3: jobs by status
            concat!(
                "INSERT INTO analytics_jobs_by_status", $s, " AS t (status, count)
                 SELECT * FROM UNNEST($1::text[], $2::int8[])
                 ON CONFLICT (status) DO UPDATE SET count = t.count + EXCLUDED.count"
            ),
            // 4: tasks by status
            concat!(
                "INSERT INTO analytics_tasks_by_status", $s, " AS t (status, count)
                 SELECT * FROM UNNEST($1::text[], $2::int8[])
                 ON CONFLICT (status) DO UPDATE SET count = t.count + EXCLUDED.count"
            ),
            // 5: daily
            concat!(
                "INSERT INTO analytics_daily", $s,
                " AS t (day, jobs_submitted, tasks_completed, tasks_failed)
                 SELECT * FROM UNNEST($1::date[], $2::int8[], $3::int8[], $4::int8[])
                 ON CONFLICT (day) DO UPDATE SET
                     jobs_submitted = t.jobs_submitted + EXCLUDED.jobs_submitted,
                     tasks_completed = t.tasks_completed + EXCLUDED.tasks_completed,
                     tasks_failed = t.tasks_failed + EXCLUDED.tasks_failed"
            ),
            // 6: processing time
            concat!(
                "INSERT INTO analytics_processing_time", $s,
                " AS t (id, count, sum_ms, min_ms, max_ms) VALUES (1, $1, $2, $3, $4)
                 ON CONFLICT (id) DO UPDATE SET
                     count = t.count + EXCLUDED.count, sum_ms = t.sum_ms + EXCLUDED.sum_ms,
                     min_ms = LEAST(t.min_ms, EXCLUDED.min_ms),
                     max_ms = GREATEST(t.max_ms, EXCLUDED.max_ms)"
            ),
            // 7: buckets
            concat!(
                "INSERT INTO analytics_processing_time_buckets", $s, " AS t (bucket, count)
                 SELECT * FROM UNNEST($1::int4[], $2::int8[])
                 ON CONFLICT (bucket) DO UPDATE SET count = t.count + EXCLUDED.count"
            ),
            // 8: throughput
            concat!(
                "INSERT INTO analytics_throughput", $s,
                " AS t (minute, tasks_completed, tasks_failed)
                 SELECT * FROM UNNEST($1::timestamptz[], $2::int8[], $3::int8[])
                 ON CONFLICT (minute) DO UPDATE SET
                     tasks_completed = t.tasks_completed + EXCLUDED.tasks_completed,
                     tasks_failed = t.tasks_failed + EXCLUDED.tasks_failed"
            ),
            // 9, 10: status counts that dropped to zero go (a data-modifying CTE could not
            // see the upsert's result, so these are statements of their own)
            concat!("DELETE FROM analytics_jobs_by_status", $s, " WHERE count = 0"),
            concat!("DELETE FROM analytics_tasks_by_status", $s, " WHERE count = 0"),
        ]
    };
}

const ANALYTICS: [[&str; 11]; 2] = [analytics_sql!(""), analytics_sql!("_rebuild")];

const MOVE_FROM_START: &str = "
INSERT INTO checkpoints (name, commit_id, position) VALUES ($1, $2, $3)
ON CONFLICT (name) DO UPDATE
SET commit_id = EXCLUDED.commit_id, position = EXCLUDED.position, updated_at = now()
WHERE checkpoints.commit_id = 0 AND checkpoints.position = 0";

const MOVE: &str = "
UPDATE checkpoints SET commit_id = $2, position = $3, updated_at = now()
WHERE name = $1 AND commit_id = $4 AND position = $5";

const SET_CHECKPOINT: &str = "
INSERT INTO checkpoints (name, commit_id, position) VALUES ($1, $2, $3)
ON CONFLICT (name) DO UPDATE
SET commit_id = EXCLUDED.commit_id, position = EXCLUDED.position, updated_at = now()";

/// Moves checkpoint `name` from `from` to `to`; false when it is not at `from`. Takes the
/// checkpoint row's lock first, which serializes every writer of the projection (batches,
/// swaps) for the rest of the transaction.
async fn fence(
    conn: &mut PgConnection,
    name: &str,
    from: LogPosition,
    to: LogPosition,
) -> ReadModelResult<bool> {
    let moved = if from == LogPosition::START {
        sqlx::query(MOVE_FROM_START)
            .bind(name)
            .bind(to.commit)
            .bind(to.position)
            .execute(&mut *conn)
            .await?
    } else {
        sqlx::query(MOVE)
            .bind(name)
            .bind(to.commit)
            .bind(to.position)
            .bind(from.commit)
            .bind(from.position)
            .execute(&mut *conn)
            .await?
    };
    Ok(moved.rows_affected() == 1)
}

pub(crate) async fn checkpoint(pool: &PgPool, name: &str) -> ReadModelResult<LogPosition> {
    crate::eventlog::load_checkpoint_pg(pool, name)
        .await
        .map_err(super::log_error)
}

pub(crate) async fn apply_jobs(
    pool: &PgPool,
    target: Target,
    from: LogPosition,
    to: LogPosition,
    keys: &super::types::JobsKeys,
    fold: impl FnOnce(Vec<JobRow>, Vec<TaskRow>) -> JobsChanges,
) -> ReadModelResult<JobsChanges> {
    let name = ProjectionName::Jobs.checkpoint_name(target);
    let t = target.index();
    let mut tx = pool.begin().await?;
    if !fence(&mut tx, name, from, to).await? {
        tx.rollback().await?;
        return Err(ReadModelError::Fenced { name });
    }
    let jobs = if keys.jobs.is_empty() {
        Vec::new()
    } else {
        let ids: Vec<Uuid> = keys.jobs.iter().map(JobId::as_uuid).collect();
        sqlx::query(LOAD_JOBS[t])
            .bind(ids)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(job_row)
            .collect::<ReadModelResult<Vec<_>>>()?
    };
    let tasks = if keys.tasks.is_empty() {
        Vec::new()
    } else {
        let ids: Vec<Uuid> = keys.tasks.iter().map(TaskId::as_uuid).collect();
        sqlx::query(LOAD_TASKS[t])
            .bind(ids)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(task_row)
            .collect::<ReadModelResult<Vec<_>>>()?
    };
    let stored: HashSet<TaskId> = tasks.iter().map(|r| r.id).collect();
    let changes = fold(jobs, tasks);
    write_jobs(&mut tx, t, &changes.jobs).await?;
    let (updated, created): (Vec<&TaskRow>, Vec<&TaskRow>) =
        changes.tasks.iter().partition(|r| stored.contains(&r.id));
    write_tasks(&mut tx, INSERT_TASKS[t], &created).await?;
    write_tasks(&mut tx, UPSERT_TASKS[t], &updated).await?;
    tx.commit().await?;
    Ok(changes)
}

async fn write_jobs(conn: &mut PgConnection, t: usize, jobs: &[JobRow]) -> ReadModelResult<()> {
    if jobs.is_empty() {
        return Ok(());
    }
    let int = |f: fn(&JobRow) -> u32| jobs.iter().map(|j| i64::from(f(j))).collect::<Vec<_>>();
    let time = |f: fn(&JobRow) -> Option<DateTime<Utc>>| jobs.iter().map(f).collect::<Vec<_>>();
    let text = |f: fn(&JobRow) -> Option<&str>| jobs.iter().map(f).collect::<Vec<_>>();
    sqlx::query(UPSERT_JOBS[t])
        .bind(jobs.iter().map(|j| j.id.as_uuid()).collect::<Vec<_>>())
        .bind(text(|j| Some(j.job_type.as_str())))
        .bind(text(|j| Some(j.status.as_str())))
        .bind(text(|j| Some(j.stream_status.as_str())))
        .bind(int(|j| j.progress.total_tasks))
        .bind(int(|j| j.created_upto))
        .bind(int(|j| j.progress.created))
        .bind(int(|j| j.progress.queued))
        .bind(int(|j| j.progress.running))
        .bind(int(|j| j.progress.completed))
        .bind(int(|j| j.progress.failed))
        .bind(int(|j| j.progress.retrying))
        .bind(
            jobs.iter()
                .map(|j| j.parameters.to_string())
                .collect::<Vec<_>>(),
        )
        .bind(int(|j| j.max_attempts))
        .bind(int(|j| j.timeout_seconds))
        .bind(time(|j| Some(j.created_at)))
        .bind(time(|j| Some(j.updated_at)))
        .bind(time(|j| j.started_at))
        .bind(time(|j| j.completed_at))
        .bind(text(|j| j.error_message.as_deref()))
        .bind(text(|j| j.cancel_reason.as_deref()))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Writes task rows with `sql` (`INSERT_TASKS` or `UPSERT_TASKS`), one statement.
async fn write_tasks(
    conn: &mut PgConnection,
    sql: &str,
    tasks: &[&TaskRow],
) -> ReadModelResult<()> {
    if tasks.is_empty() {
        return Ok(());
    }
    let int = |f: fn(&TaskRow) -> u32| tasks.iter().map(|r| i64::from(f(r))).collect::<Vec<_>>();
    let time =
        |f: fn(&TaskRow) -> Option<DateTime<Utc>>| tasks.iter().map(|r| f(r)).collect::<Vec<_>>();
    let text = |f: fn(&TaskRow) -> Option<&str>| tasks.iter().map(|r| f(r)).collect::<Vec<_>>();
    sqlx::query(sql)
        .bind(tasks.iter().map(|r| r.id.as_uuid()).collect::<Vec<_>>())
        .bind(tasks.iter().map(|r| r.job_id.as_uuid()).collect::<Vec<_>>())
        .bind(int(|r| r.task_index))
        .bind(text(|r| Some(r.job_type.as_str())))
        .bind(text(|r| Some(r.status.as_str())))
        .bind(int(|r| r.attempt))
        .bind(int(|r| r.max_attempts))
        .bind(int(|r| r.timeout_seconds))
        .bind(
            tasks
                .iter()
                .map(|r| json_text(Some(&r.parameters)))
                .collect::<Vec<_>>(),
        )
        .bind(
            tasks
                .iter()
                .map(|r| json_text(r.result.as_ref()))
                .collect::<Vec<_>>(),
        )
        .bind(text(|r| r.error_message.as_deref()))
        .bind(text(|r| r.worker.as_deref()))
        .bind(time(|r| Some(r.created_at)))
        .bind(time(|r| Some(r.updated_at)))
        .bind(time(|r| r.started_at))
        .bind(time(|r| r.completed_at))
        .bind(time(|r| r.next_attempt_at))
        .bind(
            tasks
                .iter()
                .map(|r| {
                    r.duration_ms
                        .map(|ms| i64::try_from(ms).unwrap_or(i64::MAX))
                })
                .collect::<Vec<_>>(),
        )
        .bind(tasks.iter().map(|r| r.dead_lettered).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// JSON as text, `None` for SQL NULL (and for a JSON `null`).
fn json_text(value: Option<&Value>) -> Option<String> {
    value.filter(|v| !v.is_null()).map(Value::to_string)
}

pub(crate) async fn apply_analytics(
    pool: &PgPool,
    target: Target,
    from: LogPosition,
    to: LogPosition,
    job_ids: &[JobId],
    fold: impl FnOnce(Vec<AnalyticsJobState>) -> AnalyticsChanges,
) -> ReadModelResult<AnalyticsChanges> {
    let name = ProjectionName::Analytics.checkpoint_name(target);
    let sql = &ANALYTICS[target.index()];
    let mut tx = pool.begin().await?;
    if !fence(&mut tx, name, from, to).await? {
        tx.rollback().await?;
        return Err(ReadModelError::Fenced { name });
    }
    let states = if job_ids.is_empty() {
        Vec::new()
    } else {
        let ids: Vec<Uuid> = job_ids.iter().map(JobId::as_uuid).collect();
        sqlx::query(sql[0])
            .bind(ids)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|row| {
                Ok(AnalyticsJobState {
                    job_id: JobId::from_uuid(row.try_get(0)?),
                    stream_status: job_status(row.try_get(1)?)?,
                    total_tasks: count(row.try_get(2)?, "total_tasks")?,
                    created_upto: count(row.try_get(3)?, "created_upto")?,
                    started: row.try_get(4)?,
                })
            })
            .collect::<ReadModelResult<Vec<_>>>()?
    };
    let changes = fold(states);
    let c = &changes;
    if !c.job_states.is_empty() {
        sqlx::query(sql[1])
            .bind(
                c.job_states
                    .iter()
                    .map(|s| s.job_id.as_uuid())
                    .collect::<Vec<_>>(),
            )
            .bind(
                c.job_states
                    .iter()
                    .map(|s| s.stream_status.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                c.job_states
                    .iter()
                    .map(|s| i64::from(s.total_tasks))
                    .collect::<Vec<_>>(),
            )
            .bind(
                c.job_states
                    .iter()
                    .map(|s| i64::from(s.created_upto))
                    .collect::<Vec<_>>(),
            )
            .bind(c.job_states.iter().map(|s| s.started).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
    }
    let by_type = c.jobs_by_type.iter().map(|(k, n)| (k.as_str(), *n));
    add_counts(&mut tx, sql[2], by_type.collect()).await?;
    let by_status = c.jobs_by_status.iter().map(|(k, n)| (k.as_str(), *n));
    add_counts(&mut tx, sql[3], by_status.collect()).await?;
    let by_status = c.tasks_by_status.iter().map(|(k, n)| (k.as_str(), *n));
    add_counts(&mut tx, sql[4], by_status.collect()).await?;
    if !c.daily.is_empty() {
        sqlx::query(sql[5])
            .bind(c.daily.iter().map(|d| d.day).collect::<Vec<NaiveDate>>())
            .bind(c.daily.iter().map(|d| d.jobs_submitted).collect::<Vec<_>>())
            .bind(
                c.daily
                    .iter()
                    .map(|d| d.tasks_completed)
                    .collect::<Vec<_>>(),
            )
            .bind(c.daily.iter().map(|d| d.tasks_failed).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
    }
    if let Some(p) = c.processing {
        sqlx::query(sql[6])
            .bind(p.count)
            .bind(p.sum_ms)
            .bind(p.min_ms)
            .bind(p.max_ms)
            .execute(&mut *tx)
            .await?;
    }
    if !c.buckets.is_empty() {
        sqlx::query(sql[7])
            .bind(
                c.buckets
                    .iter()
                    .map(|(b, _)| i32::try_from(*b).unwrap_or(i32::MAX))
                    .collect::<Vec<_>>(),
            )
            .bind(c.buckets.iter().map(|(_, n)| *n).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
    }
    if !c.throughput.is_empty() {
        sqlx::query(sql[8])
            .bind(c.throughput.iter().map(|m| m.minute).collect::<Vec<_>>())
            .bind(
                c.throughput
                    .iter()
                    .map(|m| m.tasks_completed)
                    .collect::<Vec<_>>(),
            )
            .bind(
                c.throughput
                    .iter()
                    .map(|m| m.tasks_failed)
                    .collect::<Vec<_>>(),
            )
            .execute(&mut *tx)
            .await?;
    }
    if !c.jobs_by_status.is_empty() {
        sqlx::query(sql[9]).execute(&mut *tx).await?;
    }
    if !c.tasks_by_status.is_empty() {
        sqlx::query(sql[10]).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(changes)
}

// ---------------------------------------------------------------------------------------------
// Rebuild

/// Adds counter deltas `(key, n)` with the counter upsert `sql`, in one statement (none when
/// there are no deltas).
async fn add_counts(
    conn: &mut PgConnection,
    sql: &str,
    deltas: Vec<(&str, i64)>,
) -> ReadModelResult<()> {
    if deltas.is_empty() {
        return Ok(());
    }
    let (keys, counts): (Vec<&str>, Vec<i64>) = deltas.into_iter().unzip();
    sqlx::query(sql)
        .bind(keys)
        .bind(counts)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub(crate) async fn prepare_rebuild(
    pool: &PgPool,
    projection: ProjectionName,
) -> ReadModelResult<()> {
    let mut tx = pool.begin().await?;
    sqlx::raw_sql(super::schema::pg_prepare(projection))
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM checkpoints WHERE name = $1")
        .bind(projection.checkpoint_name(Target::Rebuild))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

pub(crate) async fn index_rebuild(
    pool: &PgPool,
    projection: ProjectionName,
) -> ReadModelResult<()> {
    let ddl = super::schema::pg_index(projection);
    if !ddl.is_empty() {
        sqlx::raw_sql(ddl).execute(pool).await?;
    }
    Ok(())
}

pub(crate) async fn swap_rebuild(
    pool: &PgPool,
    projection: ProjectionName,
    at: LogPosition,
) -> ReadModelResult<()> {
    let mut tx = pool.begin().await?;
    // The live checkpoint's row lock first, as every batch takes it first: a batch in flight
    // finishes before the swap, and a batch after it finds the checkpoint moved (fenced).
    sqlx::query(SET_CHECKPOINT)
        .bind(projection.checkpoint_name(Target::Live))
        .bind(at.commit)
        .bind(at.position)
        .execute(&mut *tx)
        .await?;
    let rebuilt =
        sqlx::query("DELETE FROM checkpoints WHERE name = $1 AND commit_id = $2 AND position = $3")
            .bind(projection.checkpoint_name(Target::Rebuild))
            .bind(at.commit)
            .bind(at.position)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    if rebuilt != 1 && at != LogPosition::START {
        tx.rollback().await?;
        return Err(ReadModelError::Fenced {
            name: projection.checkpoint_name(Target::Rebuild),
        });
    }
    sqlx::raw_sql(super::schema::pg_swap(projection))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

pub(crate) async fn count_events_after(pool: &PgPool, after: LogPosition) -> ReadModelResult<u64> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE (transaction_id, position) > ($1, $2)",
    )
    .bind(after.commit)
    .bind(after.position)
    .fetch_one(pool)
    .await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

// ---------------------------------------------------------------------------------------------
// Rows

fn job_row(row: &PgRow) -> ReadModelResult<JobRow> {
    let n = |i: usize, column: &str| -> ReadModelResult<u32> { count(row.try_get(i)?, column) };
    Ok(JobRow {
        id: JobId::from_uuid(row.try_get(0)?),
        job_type: row.try_get(1)?,
        status: job_status(row.try_get(2)?)?,
        stream_status: job_status(row.try_get(3)?)?,
        progress: JobProgress {
            total_tasks: n(4, "total_tasks")?,
            created: n(6, "created")?,
            queued: n(7, "queued")?,
            running: n(8, "running")?,
            completed: n(9, "completed")?,
            failed: n(10, "failed")?,
            retrying: n(11, "retrying")?,
        },
        created_upto: n(5, "created_upto")?,
        parameters: row.try_get::<Json<Value>, _>(12)?.0,
        max_attempts: n(13, "max_attempts")?,
        timeout_seconds: n(14, "timeout_seconds")?,
        created_at: row.try_get(15)?,
        updated_at: row.try_get(16)?,
        started_at: row.try_get(17)?,
        completed_at: row.try_get(18)?,
        error_message: row.try_get(19)?,
        cancel_reason: row.try_get(20)?,
    })
}

fn task_row(row: &PgRow) -> ReadModelResult<TaskRow> {
    let n = |i: usize, column: &str| -> ReadModelResult<u32> { count(row.try_get(i)?, column) };
    Ok(TaskRow {
        id: TaskId::from_uuid(row.try_get(0)?),
        job_id: JobId::from_uuid(row.try_get(1)?),
        task_index: n(2, "task_index")?,
        job_type: row.try_get(3)?,
        status: task_status(row.try_get(4)?)?,
        attempt: n(5, "attempt")?,
        max_attempts: n(6, "max_attempts")?,
        timeout_seconds: n(7, "timeout_seconds")?,
        parameters: row
            .try_get::<Option<Json<Value>>, _>(8)?
            .map_or(Value::Null, |j| j.0),
        result: row.try_get::<Option<Json<Value>>, _>(9)?.map(|j| j.0),
        error_message: row.try_get(10)?,
        worker: row.try_get(11)?,
        created_at: row.try_get(12)?,
        updated_at: row.try_get(13)?,
        started_at: row.try_get(14)?,
        completed_at: row.try_get(15)?,
        next_attempt_at: row.try_get(16)?,
        duration_ms: row
            .try_get::<Option<i64>, _>(17)?
            .map(|ms| u64::try_from(ms).unwrap_or(0)),
        dead_lettered: row.try_get(18)?,
    })
}

// ---------------------------------------------------------------------------------------------
// Queries

macro_rules! job_filter {
    () => {
        "(cardinality($1::text[]) = 0 OR status = ANY($1))
         AND ($2::text IS NULL OR job_type = $2)
         AND ($3::timestamptz IS NULL OR created_at >= $3)
         AND ($4::timestamptz IS NULL OR created_at < $4)
         AND ($5::text IS NULL OR id::text ILIKE $5 OR job_type ILIKE $5)"
    };
}

const LIST_NEWEST: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobs WHERE ",
    job_filter!(),
    " AND ($6::timestamptz IS NULL OR (created_at, id) < ($6, $7::uuid))
     ORDER BY created_at DESC, id DESC LIMIT $8"
);
const LIST_OLDEST: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobs WHERE ",
    job_filter!(),
    " AND ($6::timestamptz IS NULL OR (created_at, id) > ($6, $7::uuid))
     ORDER BY created_at, id LIMIT $8"
);
const PAGE_NEWEST: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobs WHERE ",
    job_filter!(),
    " ORDER BY created_at DESC, id DESC LIMIT $6 OFFSET $7"
);
const PAGE_OLDEST: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobs WHERE ",
    job_filter!(),
    " ORDER BY created_at, id LIMIT $6 OFFSET $7"
);
const COUNT_JOBS: &str = concat!("SELECT count(*) FROM jobs WHERE ", job_filter!());

fn bind_filter<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    filter: &'q JobFilter,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(
            filter
                .statuses
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(filter.job_type.as_deref())
        .bind(filter.created_from)
        .bind(filter.created_to)
        .bind(search_pattern(filter.search.as_deref()))
}

pub(crate) async fn get_job(pool: &PgPool, id: JobId) -> ReadModelResult<Option<JobRow>> {
    sqlx::query(concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE id = $1"
    ))
    .bind(id.as_uuid())
    .fetch_optional(pool)
    .await?
    .as_ref()
    .map(job_row)
    .transpose()
}

pub(crate) async fn list_jobs(
    pool: &PgPool,
    filter: &JobFilter,
    sort: JobSort,
    after: Option<JobCursor>,
    limit: i64,
) -> ReadModelResult<Vec<JobRow>> {
    let sql = match sort {
        JobSort::Newest => LIST_NEWEST,
        JobSort::Oldest => LIST_OLDEST,
    };
    bind_filter(sqlx::query(sql), filter)
        .bind(after.map(|c| c.created_at))
        .bind(after.map(|c| c.id.as_uuid()))
        .bind(limit)
        .fetch_all(pool)
        .await?
        .iter()
        .map(job_row)
        .collect()
}

pub(crate) async fn page_jobs(
    pool: &PgPool,
    filter: &JobFilter,
    sort: JobSort,
    offset: i64,
    limit: i64,
) -> ReadModelResult<(Vec<JobRow>, i64)> {
    let sql = match sort {
        JobSort::Newest => PAGE_NEWEST,
        JobSort::Oldest => PAGE_OLDEST,
    };
    let total: i64 = bind_filter(sqlx::query(COUNT_JOBS), filter)
        .fetch_one(pool)
        .await?
        .try_get(0)?;
    let jobs = bind_filter(sqlx::query(sql), filter)
        .bind(limit)
        .bind(offset)
        .fetch_all(pool)
        .await?
        .iter()
        .map(job_row)
        .collect::<ReadModelResult<Vec<_>>>()?;
    Ok((jobs, total))
}

pub(crate) async fn tasks_of_job(
    pool: &PgPool,
    job_id: JobId,
    statuses: &[&str],
    after_index: Option<u32>,
    limit: i64,
) -> ReadModelResult<Vec<TaskRow>> {
    const SQL: &str = concat!(
        "SELECT ",
        task_columns!(),
        " FROM tasks
         WHERE job_id = $1 AND (cardinality($2::text[]) = 0 OR status = ANY($2))
           AND task_index > $3
         ORDER BY task_index, id LIMIT $4"
    );
    sqlx::query(SQL)
        .bind(job_id.as_uuid())
        .bind(statuses)
        .bind(after_index.map_or(-1, i64::from))
        .bind(limit)
        .fetch_all(pool)
        .await?
        .iter()
        .map(task_row)
        .collect()
}

pub(crate) async fn page_tasks_of_job(
    pool: &PgPool,
    job_id: JobId,
    statuses: &[&str],
    offset: i64,
    limit: i64,
) -> ReadModelResult<(Vec<TaskRow>, i64)> {
    const SQL: &str = concat!(
        "SELECT ",
        task_columns!(),
        " FROM tasks
         WHERE job_id = $1 AND (cardinality($2::text[]) = 0 OR status = ANY($2))
         ORDER BY task_index, id LIMIT $3 OFFSET $4"
    );
    const COUNT: &str = "SELECT count(*) FROM tasks
         WHERE job_id = $1 AND (cardinality($2::text[]) = 0 OR status = ANY($2))";
    let total: i64 = sqlx::query_scalar(COUNT)
        .bind(job_id.as_uuid())
        .bind(statuses)
        .fetch_one(pool)
        .await?;
    let tasks = sqlx::query(SQL)
        .bind(job_id.as_uuid())
        .bind(statuses)
        .bind(limit)
        .bind(offset)
        .fetch_all(pool)
        .await?
        .iter()
        .map(task_row)
        .collect::<ReadModelResult<Vec<_>>>()?;
    Ok((tasks, total))
}

pub(crate) async fn get_task(pool: &PgPool, id: TaskId) -> ReadModelResult<Option<TaskRow>> {
    sqlx::query(concat!(
        "SELECT ",
        task_columns!(),
        " FROM tasks WHERE id = $1"
    ))
    .bind(id.as_uuid())
    .fetch_optional(pool)
    .await?
    .as_ref()
    .map(task_row)
    .transpose()
}

pub(crate) async fn counts(
    pool: &PgPool,
    table: &'static str,
) -> ReadModelResult<Vec<(String, i64)>> {
    let sql = super::counts_sql(table);
    Ok(sqlx::query_as(sql).fetch_all(pool).await?)
}

pub(crate) async fn daily(
    pool: &PgPool,
    from: NaiveDate,
    to: NaiveDate,
) -> ReadModelResult<Vec<DayCounts>> {
    let rows: Vec<(NaiveDate, i64, i64, i64)> = sqlx::query_as(
        "SELECT day, jobs_submitted, tasks_completed, tasks_failed FROM analytics_daily
         WHERE day >= $1 AND day <= $2 ORDER BY day",
    )
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(date, jobs_submitted, tasks_completed, tasks_failed)| DayCounts {
                date,
                jobs_submitted,
                tasks_completed,
                tasks_failed,
            },
        )
        .collect())
}

pub(crate) async fn throughput(
    pool: &PgPool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> ReadModelResult<Vec<MinuteCounts>> {
    let rows: Vec<(DateTime<Utc>, i64, i64)> = sqlx::query_as(
        "SELECT minute, tasks_completed, tasks_failed FROM analytics_throughput
         WHERE minute >= $1 AND minute <= $2 ORDER BY minute",
    )
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(minute, tasks_completed, tasks_failed)| MinuteCounts {
            minute,
            tasks_completed,
            tasks_failed,
        })
        .collect())
}

pub(crate) async fn processing(
    pool: &PgPool,
) -> ReadModelResult<(Option<(i64, i64, i64, i64)>, Vec<(u32, i64)>)> {
    let row: Option<(i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT count, sum_ms, min_ms, max_ms FROM analytics_processing_time WHERE id = 1",
    )
    .fetch_optional(pool)
    .await?;
    let buckets: Vec<(i32, i64)> = sqlx::query_as(
        "SELECT bucket, count FROM analytics_processing_time_buckets ORDER BY bucket",
    )
    .fetch_all(pool)
    .await?;
    Ok((
        row,
        buckets
            .into_iter()
            .map(|(b, n)| (u32::try_from(b).unwrap_or(0), n))
            .collect(),
    ))
}

#[cfg(feature = "testing")]
pub(crate) async fn dump(pool: &PgPool) -> ReadModelResult<super::types::ReadModelDump> {
    use super::types::ReadModelDump;
    let jobs = sqlx::query(concat!("SELECT ", job_columns!(), " FROM jobs ORDER BY id"))
        .fetch_all(pool)
        .await?
        .iter()
        .map(job_row)
        .collect::<ReadModelResult<Vec<_>>>()?;
    let tasks = sqlx::query(concat!(
        "SELECT ",
        task_columns!(),
        " FROM tasks ORDER BY id"
    ))
    .fetch_all(pool)
    .await?
    .iter()
    .map(task_row)
    .collect::<ReadModelResult<Vec<_>>>()?;
    let job_states = sqlx::query(
        "SELECT job_id, stream_status, total_tasks, created_upto, started
         FROM analytics_job_state ORDER BY job_id",
    )
    .fetch_all(pool)
    .await?
    .iter()
    .map(|row| {
        Ok(AnalyticsJobState {
            job_id: JobId::from_uuid(row.try_get(0)?),
            stream_status: job_status(row.try_get(1)?)?,
            total_tasks: count(row.try_get(2)?, "total_tasks")?,
            created_upto: count(row.try_get(3)?, "created_upto")?,
            started: row.try_get(4)?,
        })
    })
    .collect::<ReadModelResult<Vec<_>>>()?;
    let pairs = |sql: &'static str| sqlx::query_as::<_, (String, i64)>(sql).fetch_all(pool);
    let jobs_by_type =
        pairs("SELECT job_type, count FROM analytics_jobs_by_type ORDER BY job_type").await?;
    let jobs_by_status =
        pairs("SELECT status, count FROM analytics_jobs_by_status ORDER BY status").await?;
    let tasks_by_status =
        pairs("SELECT status, count FROM analytics_tasks_by_status ORDER BY status").await?;
    let (first, last) = super::dump_range();
    let daily = daily(pool, first.date_naive(), last.date_naive()).await?;
    let (processing, buckets) = processing(pool).await?;
    let throughput = throughput(pool, first, last).await?;
    Ok(ReadModelDump {
        jobs,
        tasks,
        job_states,
        jobs_by_type,
        jobs_by_status,
        tasks_by_status,
        daily,
        processing,
        buckets,
        throughput,
    })
}
