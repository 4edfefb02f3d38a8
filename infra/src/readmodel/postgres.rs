//! The read model's writes on Postgres (`UNNEST` upserts: one statement per table per batch),
//! and what else [`ReadDialect`] says differs from SQLite.

use std::collections::HashSet;

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;
use shoal_domain::TaskId;
use sqlx::postgres::{PgPool, Postgres};
use sqlx::types::Json;
use sqlx::{PgConnection, Row};

use super::ReadModelResult;
use super::sql::{
    ReadDialect, attempt_columns, attempt_updates, checkpoint_sql, job_columns, job_updates,
    query_sql, task_columns, task_updates,
};
use super::types::{
    AnalyticsChanges, AttemptRow, JobRow, JobsChanges, ProjectionName, Target, TaskRow, outcome_str,
};
use crate::dialect::{ColumnResult, Q};
use crate::eventlog::LogPosition;

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
                    completed_at, error_message, cancel_reason, priority
             FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int8[],
                         $6::int8[], $7::int8[], $8::int8[], $9::int8[], $10::int8[],
                         $11::int8[], $12::int8[], $13::text[], $14::int8[], $15::int8[],
                         $16::timestamptz[], $17::timestamptz[], $18::timestamptz[],
                         $19::timestamptz[], $20::text[], $21::text[], $22::int4[])
                  AS u(",
            job_columns!(),
            ")
             ON CONFLICT (id) DO UPDATE SET ",
            job_updates!()
        )
    };
}

/// The batch's task rows, `u`: one array per column of `tasks`, those a task's first event sets
/// first and those its later events change after them, in `update_tasks!`'s order (so one
/// binder, `bind_task_changes`, serves both statements).
macro_rules! task_rows {
    () => {
        "FROM UNNEST($1::uuid[], $2::uuid[], $3::int8[], $4::text[], $5::int8[], $6::int8[],
                     $7::text[], $8::timestamptz[], $9::text[], $10::int8[], $11::text[],
                     $12::text[], $13::text[], $14::timestamptz[], $15::timestamptz[],
                     $16::timestamptz[], $17::timestamptz[], $18::int8[], $19::bool[])
              AS u(id, job_id, task_index, job_type, max_attempts, timeout_seconds, parameters,
                   created_at, status, attempt, result, error_message, worker, updated_at,
                   started_at, completed_at, next_attempt_at, duration_ms, dead_lettered)"
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
             ",
            task_rows!()
        )
    };
}

macro_rules! upsert_tasks {
    ($t:literal) => {
        concat!(
            insert_tasks!($t),
            "
             ON CONFLICT (id) DO UPDATE SET ",
            task_updates!()
        )
    };
}

/// The batch's attempt rows: one array per column of `task_attempts`, in `attempt_columns!`
/// order.
macro_rules! attempt_rows {
    () => {
        "UNNEST($1::uuid[], $2::int8[], $3::uuid[], $4::int8[], $5::int8[],
                $6::int8[], $7::int8[], $8::text[], $9::int8[], $10::int8[],
                $11::int8[], $12::text[], $13::text[], $14::int8[],
                $15::int8[], $16::int8[], $17::bool[], $18::text[])"
    };
}

macro_rules! insert_attempts {
    ($t:literal) => {
        concat!(
            "INSERT INTO ",
            $t,
            " (",
            attempt_columns!(),
            ")
             SELECT * FROM ",
            attempt_rows!()
        )
    };
}

/// For attempt rows known to be stored: a plain update by key (see `update_tasks!`).
macro_rules! update_attempts {
    ($t:literal) => {
        concat!(
            "UPDATE ",
            $t,
            " AS a SET job_id = u.job_id, task_index = u.task_index, attempt = u.attempt,
                 queued_us = u.queued_us, not_before_us = u.not_before_us, worker = u.worker,
                 started_us = u.started_us, ended_us = u.ended_us,
                 duration_ms = u.duration_ms, outcome = u.outcome, error = u.error,
                 retry_at_us = u.retry_at_us, retry_not_before_us = u.retry_not_before_us,
                 retry_backoff_ms = u.retry_backoff_ms, retry_manual = u.retry_manual,
                 dead_letter_reason = u.dead_letter_reason
             FROM ",
            attempt_rows!(),
            " AS u(",
            attempt_columns!(),
            ")
             WHERE a.task_id = u.task_id AND a.seq = u.seq"
        )
    };
}

/// For the rows a batch loaded (they exist, and the fence keeps other projectors out until the
/// commit): a plain update by key. `ON CONFLICT DO UPDATE` would probe the key before each row,
/// lock the row it finds and log that lock, then update: a WAL record and a probe per row more
/// (docs/benchmarks.md, "Issue 15: statements and WAL per task").
///
/// Only the columns a task's later events change are sent: what its `TaskEnqueued` set (its
/// job, index, type, budget, timeout, parameters, creation time) is the first event of its
/// stream and never changes, so the stored values stand. Sending them again cost every update
/// a parse of the parameters into `jsonb` and, for parameters large enough to be stored
/// out of line, a new copy of them in the TOAST table (docs/benchmarks.md, "Issue 15: the
/// seventh session").
macro_rules! update_tasks {
    ($t:literal) => {
        concat!(
            "UPDATE ",
            $t,
            " AS t SET status = u.status, attempt = u.attempt, result = u.result::jsonb,
                 error_message = u.error_message, worker = u.worker, updated_at = u.updated_at,
                 started_at = u.started_at, completed_at = u.completed_at,
                 next_attempt_at = u.next_attempt_at, duration_ms = u.duration_ms,
                 dead_lettered = u.dead_lettered
             FROM UNNEST($1::uuid[], $2::text[], $3::int8[], $4::text[], $5::text[], $6::text[],
                         $7::timestamptz[], $8::timestamptz[], $9::timestamptz[],
                         $10::timestamptz[], $11::int8[], $12::bool[])
                  AS u(id, status, attempt, result, error_message, worker, updated_at,
                       started_at, completed_at, next_attempt_at, duration_ms, dead_lettered)
             WHERE t.id = u.id"
        )
    };
}

macro_rules! upsert_attempts {
    ($t:literal) => {
        concat!(
            insert_attempts!($t),
            "
             ON CONFLICT (task_id, seq) DO UPDATE SET ",
            attempt_updates!()
        )
    };
}

/// Attempt rows: a plain insert for those not stored yet (as for tasks), an upsert otherwise.
const INSERT_ATTEMPTS: [&str; 2] = [
    insert_attempts!("task_attempts"),
    insert_attempts!("task_attempts_rebuild"),
];
const UPSERT_ATTEMPTS: [&str; 2] = [
    upsert_attempts!("task_attempts"),
    upsert_attempts!("task_attempts_rebuild"),
];
const UPDATE_ATTEMPTS: [&str; 2] = [
    update_attempts!("task_attempts"),
    update_attempts!("task_attempts_rebuild"),
];
const DELETE_ATTEMPTS: [&str; 2] = [
    "DELETE FROM task_attempts WHERE task_id = ANY($1)",
    "DELETE FROM task_attempts_rebuild WHERE task_id = ANY($1)",
];

const UPSERT_JOBS: [&str; 2] = [upsert_jobs!("jobs"), upsert_jobs!("jobs_rebuild")];
const UPSERT_TASKS: [&str; 2] = [upsert_tasks!("tasks"), upsert_tasks!("tasks_rebuild")];
/// For the rows a batch creates (no stored row was loaded for them): a plain insert, without
/// the cost of `ON CONFLICT` (a probe of the key before each row and a second WAL record).
const INSERT_TASKS: [&str; 2] = [insert_tasks!("tasks"), insert_tasks!("tasks_rebuild")];
const UPDATE_TASKS: [&str; 2] = [update_tasks!("tasks"), update_tasks!("tasks_rebuild")];
macro_rules! analytics_sql {
    ($s:literal) => {
        [
            // 0: job states
            concat!(
                "INSERT INTO analytics_job_state", $s,
                " (job_id, stream_status, total_tasks, created_upto, started)
                 SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::int8[], $4::int8[], $5::bool[])
                 ON CONFLICT (job_id) DO UPDATE SET
                     stream_status = EXCLUDED.stream_status, total_tasks = EXCLUDED.total_tasks,
                     created_upto = EXCLUDED.created_upto, started = EXCLUDED.started"
            ),
            // 1: jobs by type
            concat!(
                "INSERT INTO analytics_jobs_by_type", $s, " AS t (job_type, count)
                 SELECT * FROM UNNEST($1::text[], $2::int8[])
                 ON CONFLICT (job_type) DO UPDATE SET count = t.count + EXCLUDED.count"
            ),
            // 2: jobs by status
            concat!(
                "INSERT INTO analytics_jobs_by_status", $s, " AS t (status, count)
                 SELECT * FROM UNNEST($1::text[], $2::int8[])
                 ON CONFLICT (status) DO UPDATE SET count = t.count + EXCLUDED.count"
            ),
            // 3: tasks by status
            concat!(
                "INSERT INTO analytics_tasks_by_status", $s, " AS t (status, count)
                 SELECT * FROM UNNEST($1::text[], $2::int8[])
                 ON CONFLICT (status) DO UPDATE SET count = t.count + EXCLUDED.count"
            ),
            // 4: daily
            concat!(
                "INSERT INTO analytics_daily", $s,
                " AS t (day, jobs_submitted, tasks_completed, tasks_failed)
                 SELECT * FROM UNNEST($1::date[], $2::int8[], $3::int8[], $4::int8[])
                 ON CONFLICT (day) DO UPDATE SET
                     jobs_submitted = t.jobs_submitted + EXCLUDED.jobs_submitted,
                     tasks_completed = t.tasks_completed + EXCLUDED.tasks_completed,
                     tasks_failed = t.tasks_failed + EXCLUDED.tasks_failed"
            ),
            // 5: processing time
            concat!(
                "INSERT INTO analytics_processing_time", $s,
                " AS t (id, count, sum_ms, min_ms, max_ms) VALUES (1, $1, $2, $3, $4)
                 ON CONFLICT (id) DO UPDATE SET
                     count = t.count + EXCLUDED.count, sum_ms = t.sum_ms + EXCLUDED.sum_ms,
                     min_ms = LEAST(t.min_ms, EXCLUDED.min_ms),
                     max_ms = GREATEST(t.max_ms, EXCLUDED.max_ms)"
            ),
            // 6: buckets
            concat!(
                "INSERT INTO analytics_processing_time_buckets", $s, " AS t (bucket, count)
                 SELECT * FROM UNNEST($1::int4[], $2::int8[])
                 ON CONFLICT (bucket) DO UPDATE SET count = t.count + EXCLUDED.count"
            ),
            // 7: throughput
            concat!(
                "INSERT INTO analytics_throughput", $s,
                " AS t (minute, tasks_completed, tasks_failed)
                 SELECT * FROM UNNEST($1::timestamptz[], $2::int8[], $3::int8[])
                 ON CONFLICT (minute) DO UPDATE SET
                     tasks_completed = t.tasks_completed + EXCLUDED.tasks_completed,
                     tasks_failed = t.tasks_failed + EXCLUDED.tasks_failed"
            ),
        ]
    };
}

const ANALYTICS: [[&str; 8]; 2] = [analytics_sql!(""), analytics_sql!("_rebuild")];

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
const LOAD_ATTEMPTS: [&str; 2] = [
    concat!(
        "SELECT ",
        attempt_columns!(),
        " FROM task_attempts WHERE task_id = ANY($1)"
    ),
    concat!(
        "SELECT ",
        attempt_columns!(),
        " FROM task_attempts_rebuild WHERE task_id = ANY($1)"
    ),
];
const LOAD_JOB_STATES: [&str; 2] = [
    "SELECT job_id, stream_status, total_tasks, created_upto, started
     FROM analytics_job_state WHERE job_id = ANY($1)",
    "SELECT job_id, stream_status, total_tasks, created_upto, started
     FROM analytics_job_state_rebuild WHERE job_id = ANY($1)",
];

impl ReadDialect for Postgres {
    const CHECKPOINT: super::sql::CheckpointSql = checkpoint_sql!("now()");
    const QUERIES: super::sql::QuerySql = query_sql!(
        "(cardinality($1::text[]) = 0 OR status = ANY($1))
         AND ($2::text IS NULL OR job_type = $2)
         AND ($3::timestamptz IS NULL OR created_at >= $3)
         AND ($4::timestamptz IS NULL OR created_at < $4)
         AND ($5::text IS NULL OR id::text ILIKE $5 OR job_type ILIKE $5)",
        "(cardinality($2::text[]) = 0 OR status = ANY($2))"
    );
    const LOAD_JOBS: [&'static str; 2] = LOAD_JOBS;
    const LOAD_TASKS: [&'static str; 2] = LOAD_TASKS;
    const LOAD_JOB_STATES: [&'static str; 2] = LOAD_JOB_STATES;
    const LOAD_ATTEMPTS: [&'static str; 2] = LOAD_ATTEMPTS;
    const LOAD_BEFORE_WRITE: bool = false;

    fn bind_day(query: Q<'_, Self>, day: NaiveDate) -> Q<'_, Self> {
        query.bind(day)
    }

    fn get_day(row: &Self::Row, index: usize) -> ColumnResult<NaiveDate> {
        Ok(row.try_get(index)?)
    }

    fn get_json(row: &Self::Row, index: usize) -> ColumnResult<Option<Value>> {
        Ok(row.try_get::<Option<Json<Value>>, _>(index)?.map(|j| j.0))
    }

    async fn write_jobs(
        conn: &mut PgConnection,
        target: Target,
        changes: &JobsChanges,
        stored: &HashSet<TaskId>,
        stored_attempts: &HashSet<(TaskId, u32)>,
    ) -> ReadModelResult<()> {
        let t = target.index();
        write_job_rows(conn, t, &changes.jobs).await?;
        let (updated, created): (Vec<&TaskRow>, Vec<&TaskRow>) =
            changes.tasks.iter().partition(|r| stored.contains(&r.id));
        write_tasks(conn, INSERT_TASKS[t], &created).await?;
        if update_tasks(conn, UPDATE_TASKS[t], &updated).await? < updated.len() as u64 {
            // A loaded row is gone (nothing in Shoal deletes one under the fence): write them
            // all again as the upsert would, which is idempotent.
            write_tasks(conn, UPSERT_TASKS[t], &updated).await?;
        }
        if !changes.attempts_reset.is_empty() {
            sqlx::query(DELETE_ATTEMPTS[t])
                .bind(
                    changes
                        .attempts_reset
                        .iter()
                        .map(TaskId::as_uuid)
                        .collect::<Vec<_>>(),
                )
                .execute(&mut *conn)
                .await?;
        }
        let reset: HashSet<TaskId> = changes.attempts_reset.iter().copied().collect();
        let (updated, created): (Vec<&AttemptRow>, Vec<&AttemptRow>) =
            changes.attempts.iter().partition(|r| {
                !reset.contains(&r.task_id) && stored_attempts.contains(&(r.task_id, r.seq))
            });
        write_attempts(conn, INSERT_ATTEMPTS[t], &created).await?;
        if write_attempts(conn, UPDATE_ATTEMPTS[t], &updated).await? < updated.len() as u64 {
            // As for tasks: a stored row is gone; the upsert writes them all again.
            write_attempts(conn, UPSERT_ATTEMPTS[t], &updated).await?;
        }
        Ok(())
    }

    async fn write_analytics(
        conn: &mut PgConnection,
        target: Target,
        c: &AnalyticsChanges,
    ) -> ReadModelResult<()> {
        let sql = &ANALYTICS[target.index()];
        if !c.job_states.is_empty() {
            sqlx::query(sql[0])
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
                .execute(&mut *conn)
                .await?;
        }
        let by_type = c.jobs_by_type.iter().map(|(k, n)| (k.as_str(), *n));
        add_counts(&mut *conn, sql[1], by_type.collect()).await?;
        let by_status = c.jobs_by_status.iter().map(|(k, n)| (k.as_str(), *n));
        add_counts(&mut *conn, sql[2], by_status.collect()).await?;
        let by_status = c.tasks_by_status.iter().map(|(k, n)| (k.as_str(), *n));
        add_counts(&mut *conn, sql[3], by_status.collect()).await?;
        if !c.daily.is_empty() {
            sqlx::query(sql[4])
                .bind(c.daily.iter().map(|d| d.day).collect::<Vec<NaiveDate>>())
                .bind(c.daily.iter().map(|d| d.jobs_submitted).collect::<Vec<_>>())
                .bind(
                    c.daily
                        .iter()
                        .map(|d| d.tasks_completed)
                        .collect::<Vec<_>>(),
                )
                .bind(c.daily.iter().map(|d| d.tasks_failed).collect::<Vec<_>>())
                .execute(&mut *conn)
                .await?;
        }
        if let Some(p) = c.processing {
            sqlx::query(sql[5])
                .bind(p.count)
                .bind(p.sum_ms)
                .bind(p.min_ms)
                .bind(p.max_ms)
                .execute(&mut *conn)
                .await?;
        }
        if !c.buckets.is_empty() {
            sqlx::query(sql[6])
                .bind(
                    c.buckets
                        .iter()
                        .map(|(b, _)| i32::try_from(*b).unwrap_or(i32::MAX))
                        .collect::<Vec<_>>(),
                )
                .bind(c.buckets.iter().map(|(_, n)| *n).collect::<Vec<_>>())
                .execute(&mut *conn)
                .await?;
        }
        if !c.throughput.is_empty() {
            sqlx::query(sql[7])
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
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }

    fn prepare_ddl(projection: ProjectionName) -> &'static str {
        super::schema::pg_prepare(projection)
    }

    fn swap_ddl(projection: ProjectionName) -> &'static str {
        super::schema::pg_swap(projection)
    }

    async fn count_events_after(pool: &PgPool, after: LogPosition) -> ReadModelResult<u64> {
        count_events_after(pool, after).await
    }
}

async fn write_job_rows(conn: &mut PgConnection, t: usize, jobs: &[JobRow]) -> ReadModelResult<()> {
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
        .bind(jobs.iter().map(|j| j.priority).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Writes whole task rows with `sql` (`INSERT_TASKS` or `UPSERT_TASKS`), one
/// statement; returns the rows written.
async fn write_tasks(
    conn: &mut PgConnection,
    sql: &str,
    tasks: &[&TaskRow],
) -> ReadModelResult<u64> {
    if tasks.is_empty() {
        return Ok(0);
    }
    let query = sqlx::query(sql)
        .bind(column(tasks, |r| r.id.as_uuid()))
        .bind(column(tasks, |r| r.job_id.as_uuid()))
        .bind(column(tasks, |r| i64::from(r.task_index)))
        .bind(column(tasks, |r| r.job_type.as_str()))
        .bind(column(tasks, |r| i64::from(r.max_attempts)))
        .bind(column(tasks, |r| i64::from(r.timeout_seconds)))
        .bind(column(tasks, |r| json_text(Some(&r.parameters))))
        .bind(column(tasks, |r| r.created_at));
    let result = bind_task_changes(query, tasks).execute(&mut *conn).await?;
    Ok(result.rows_affected())
}

/// Updates stored task rows with `UPDATE_TASKS`: the columns a task's events change, one
/// statement; returns the rows updated.
async fn update_tasks(
    conn: &mut PgConnection,
    sql: &str,
    tasks: &[&TaskRow],
) -> ReadModelResult<u64> {
    if tasks.is_empty() {
        return Ok(0);
    }
    let query = sqlx::query(sql).bind(column(tasks, |r| r.id.as_uuid()));
    let result = bind_task_changes(query, tasks).execute(&mut *conn).await?;
    Ok(result.rows_affected())
}

/// Binds the columns of `tasks` that a task's events change, `status` to `dead_lettered`, in
/// the order `task_rows!` and `update_tasks!` take them (after the columns before them).
fn bind_task_changes<'q>(
    query: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    tasks: &[&'q TaskRow],
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(column(tasks, |r| r.status.as_str()))
        .bind(column(tasks, |r| i64::from(r.attempt)))
        .bind(column(tasks, |r| json_text(r.result.as_ref())))
        .bind(column(tasks, |r| r.error_message.as_deref()))
        .bind(column(tasks, |r| r.worker.as_deref()))
        .bind(column(tasks, |r| r.updated_at))
        .bind(column(tasks, |r| r.started_at))
        .bind(column(tasks, |r| r.completed_at))
        .bind(column(tasks, |r| r.next_attempt_at))
        .bind(column(tasks, duration_ms))
        .bind(column(tasks, |r| r.dead_lettered))
}

/// One column of `rows`, as an array parameter.
fn column<'a, R, T>(rows: &[&'a R], f: impl Fn(&'a R) -> T) -> Vec<T> {
    rows.iter().map(|r| f(r)).collect()
}

/// A row's `duration_ms`, as the tables keep it.
fn duration_ms(row: &TaskRow) -> Option<i64> {
    row.duration_ms
        .map(|ms| i64::try_from(ms).unwrap_or(i64::MAX))
}

/// Writes attempt rows with `sql` (`INSERT_ATTEMPTS`, `UPDATE_ATTEMPTS` or `UPSERT_ATTEMPTS`),
/// one statement; the number of rows written.
async fn write_attempts(
    conn: &mut PgConnection,
    sql: &str,
    rows: &[&AttemptRow],
) -> ReadModelResult<u64> {
    if rows.is_empty() {
        return Ok(0);
    }
    let int = |f: fn(&AttemptRow) -> Option<u64>| {
        rows.iter()
            .map(|r| f(r).map(|n| i64::try_from(n).unwrap_or(i64::MAX)))
            .collect::<Vec<_>>()
    };
    let time = |f: fn(&AttemptRow) -> Option<DateTime<Utc>>| {
        rows.iter()
            .map(|r| f(r).map(|at| at.timestamp_micros()))
            .collect::<Vec<_>>()
    };
    let text = |f: fn(&AttemptRow) -> Option<&str>| rows.iter().map(|r| f(r)).collect::<Vec<_>>();
    let result = sqlx::query(sql)
        .bind(rows.iter().map(|r| r.task_id.as_uuid()).collect::<Vec<_>>())
        .bind(int(|r| Some(u64::from(r.seq))))
        .bind(rows.iter().map(|r| r.job_id.as_uuid()).collect::<Vec<_>>())
        .bind(int(|r| Some(u64::from(r.task_index))))
        .bind(int(|r| Some(u64::from(r.attempt.attempt))))
        .bind(time(|r| Some(r.attempt.queued_at)))
        .bind(time(|r| r.attempt.not_before))
        .bind(text(|r| r.attempt.worker.as_deref()))
        .bind(time(|r| r.attempt.started_at))
        .bind(time(|r| r.attempt.ended_at))
        .bind(int(|r| r.attempt.duration_ms))
        .bind(text(|r| Some(outcome_str(r.attempt.outcome))))
        .bind(text(|r| r.attempt.error.as_deref()))
        .bind(time(|r| r.attempt.retry.as_ref().map(|d| d.at)))
        .bind(time(|r| r.attempt.retry.as_ref().map(|d| d.not_before)))
        .bind(int(|r| r.attempt.retry.as_ref().map(|d| d.backoff_ms)))
        .bind(
            rows.iter()
                .map(|r| r.attempt.retry.as_ref().map(|d| d.manual))
                .collect::<Vec<_>>(),
        )
        .bind(text(|r| r.attempt.dead_letter_reason.as_deref()))
        .execute(&mut *conn)
        .await?;
    Ok(result.rows_affected())
}

/// JSON as text, `None` for SQL NULL (and for a JSON `null`).
fn json_text(value: Option<&Value>) -> Option<String> {
    value.filter(|v| !v.is_null()).map(Value::to_string)
}

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

async fn count_events_after(pool: &PgPool, after: LogPosition) -> ReadModelResult<u64> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE (transaction_id, position) > ($1, $2)",
    )
    .bind(after.commit)
    .bind(after.position)
    .fetch_one(pool)
    .await?;
    Ok(u64::try_from(n).unwrap_or(0))
}
