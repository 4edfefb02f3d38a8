//! The read model's writes on SQLite (upserts of a batch's rows: jobs, tasks and attempts as
//! bound rows, `crate::sqlite_rows`; the small analytics tables from one JSON array of rows,
//! `json_each`), and what else [`ReadDialect`] says differs from Postgres.

use std::collections::HashSet;

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Value, json};
use shoal_domain::TaskId;
use sqlx::sqlite::{Sqlite, SqlitePool};
use sqlx::{Row, SqliteConnection};

use super::ReadModelResult;
use super::sql::{
    ReadDialect, attempt_columns, attempt_updates, checkpoint_sql, job_columns, job_updates,
    query_sql, task_columns, task_updates,
};
use super::types::{
    AnalyticsChanges, AttemptRow, JobRow, JobsChanges, ProjectionName, Target, TaskRow, outcome_str,
};
use crate::dialect::{ColumnError, ColumnResult, Q, sqlite_time as ts};
use crate::eventlog::LogPosition;
use crate::sqlite_rows::RowsStatement;

/// `json_extract(j.value, '$[i]')` for each index, comma-separated.
macro_rules! extract {
    ($first:literal $(, $n:literal)*) => {
        concat!("json_extract(j.value, '$[", $first, "]')"
                $(, ", json_extract(j.value, '$[", $n, "]')")*)
    };
}

/// A row's columns, each as `json!` gives it (see `crate::sqlite_rows` for how each is bound).
macro_rules! row {
    ($($column:expr),* $(,)?) => {
        vec![$(json!($column)),*]
    };
}

/// An upsert of rows given as bound parameters (`crate::sqlite_rows`): `$cols` columns, the
/// conflict target `$key`, and the updates of an existing row.
macro_rules! upsert {
    ($t:literal, $columns:expr, $cols:literal, $key:literal, $updates:expr) => {
        RowsStatement::new(
            concat!("INSERT INTO ", $t, " (", $columns, ") VALUES "),
            $cols,
            concat!(" ON CONFLICT (", $key, ") DO UPDATE SET ", $updates),
        )
    };
}

static UPSERT_ATTEMPTS: [RowsStatement; 2] = [
    upsert!(
        "task_attempts",
        attempt_columns!(),
        18,
        "task_id, seq",
        attempt_updates!()
    ),
    upsert!(
        "task_attempts_rebuild",
        attempt_columns!(),
        18,
        "task_id, seq",
        attempt_updates!()
    ),
];
const DELETE_ATTEMPTS: [&str; 2] = [
    "DELETE FROM task_attempts WHERE task_id IN (SELECT value FROM json_each($1))",
    "DELETE FROM task_attempts_rebuild WHERE task_id IN (SELECT value FROM json_each($1))",
];

static UPSERT_JOBS: [RowsStatement; 2] = [
    upsert!("jobs", job_columns!(), 22, "id", job_updates!()),
    upsert!("jobs_rebuild", job_columns!(), 22, "id", job_updates!()),
];
static UPSERT_TASKS: [RowsStatement; 2] = [
    upsert!("tasks", task_columns!(), 19, "id", task_updates!()),
    upsert!("tasks_rebuild", task_columns!(), 19, "id", task_updates!()),
];
macro_rules! analytics_sql {
    ($s:literal) => {
        [
            // 0: job states
            concat!(
                "INSERT INTO analytics_job_state",
                $s,
                " (job_id, stream_status, total_tasks, created_upto, started) SELECT ",
                extract!(0, 1, 2, 3, 4),
                " FROM json_each($1) AS j WHERE true
                 ON CONFLICT (job_id) DO UPDATE SET
                     stream_status = excluded.stream_status, total_tasks = excluded.total_tasks,
                     created_upto = excluded.created_upto, started = excluded.started"
            ),
            // 1: jobs by type
            concat!(
                "INSERT INTO analytics_jobs_by_type",
                $s,
                " AS t (job_type, count) SELECT ",
                extract!(0, 1),
                " FROM json_each($1) AS j WHERE true
                 ON CONFLICT (job_type) DO UPDATE SET count = t.count + excluded.count"
            ),
            // 2: jobs by status
            concat!(
                "INSERT INTO analytics_jobs_by_status",
                $s,
                " AS t (status, count) SELECT ",
                extract!(0, 1),
                " FROM json_each($1) AS j WHERE true
                 ON CONFLICT (status) DO UPDATE SET count = t.count + excluded.count"
            ),
            // 3: tasks by status
            concat!(
                "INSERT INTO analytics_tasks_by_status",
                $s,
                " AS t (status, count) SELECT ",
                extract!(0, 1),
                " FROM json_each($1) AS j WHERE true
                 ON CONFLICT (status) DO UPDATE SET count = t.count + excluded.count"
            ),
            // 4: daily
            concat!(
                "INSERT INTO analytics_daily",
                $s,
                " AS t (day, jobs_submitted, tasks_completed, tasks_failed) SELECT ",
                extract!(0, 1, 2, 3),
                " FROM json_each($1) AS j WHERE true
                 ON CONFLICT (day) DO UPDATE SET
                     jobs_submitted = t.jobs_submitted + excluded.jobs_submitted,
                     tasks_completed = t.tasks_completed + excluded.tasks_completed,
                     tasks_failed = t.tasks_failed + excluded.tasks_failed"
            ),
            // 5: processing time
            concat!(
                "INSERT INTO analytics_processing_time",
                $s,
                " AS t (id, count, sum_ms, min_ms, max_ms) VALUES (1, $1, $2, $3, $4)
                 ON CONFLICT (id) DO UPDATE SET
                     count = t.count + excluded.count, sum_ms = t.sum_ms + excluded.sum_ms,
                     min_ms = min(t.min_ms, excluded.min_ms),
                     max_ms = max(t.max_ms, excluded.max_ms)"
            ),
            // 6: buckets
            concat!(
                "INSERT INTO analytics_processing_time_buckets",
                $s,
                " AS t (bucket, count) SELECT ",
                extract!(0, 1),
                " FROM json_each($1) AS j WHERE true
                 ON CONFLICT (bucket) DO UPDATE SET count = t.count + excluded.count"
            ),
            // 7: throughput
            concat!(
                "INSERT INTO analytics_throughput",
                $s,
                " AS t (minute, tasks_completed, tasks_failed) SELECT ",
                extract!(0, 1, 2),
                " FROM json_each($1) AS j WHERE true
                 ON CONFLICT (minute) DO UPDATE SET
                     tasks_completed = t.tasks_completed + excluded.tasks_completed,
                     tasks_failed = t.tasks_failed + excluded.tasks_failed"
            ),
        ]
    };
}

const ANALYTICS: [[&str; 8]; 2] = [analytics_sql!(""), analytics_sql!("_rebuild")];

const LOAD_JOBS: [&str; 2] = [
    concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE id IN (SELECT value FROM json_each($1))"
    ),
    concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs_rebuild WHERE id IN (SELECT value FROM json_each($1))"
    ),
];
const LOAD_TASKS: [&str; 2] = [
    concat!(
        "SELECT ",
        task_columns!(),
        " FROM tasks WHERE id IN (SELECT value FROM json_each($1))"
    ),
    concat!(
        "SELECT ",
        task_columns!(),
        " FROM tasks_rebuild WHERE id IN (SELECT value FROM json_each($1))"
    ),
];
const LOAD_ATTEMPTS: [&str; 2] = [
    concat!(
        "SELECT ",
        attempt_columns!(),
        " FROM task_attempts WHERE task_id IN (SELECT value FROM json_each($1))"
    ),
    concat!(
        "SELECT ",
        attempt_columns!(),
        " FROM task_attempts_rebuild WHERE task_id IN (SELECT value FROM json_each($1))"
    ),
];
const LOAD_JOB_STATES: [&str; 2] = [
    "SELECT job_id, stream_status, total_tasks, created_upto, started
     FROM analytics_job_state WHERE job_id IN (SELECT value FROM json_each($1))",
    "SELECT job_id, stream_status, total_tasks, created_upto, started
     FROM analytics_job_state_rebuild WHERE job_id IN (SELECT value FROM json_each($1))",
];

impl ReadDialect for Sqlite {
    const CHECKPOINT: super::sql::CheckpointSql =
        checkpoint_sql!("strftime('%Y-%m-%dT%H:%M:%fZ', 'now')");
    const QUERIES: super::sql::QuerySql = query_sql!(
        "(json_array_length($1) = 0 OR status IN (SELECT value FROM json_each($1)))
         AND ($2 IS NULL OR job_type = $2)
         AND ($3 IS NULL OR created_at >= $3)
         AND ($4 IS NULL OR created_at < $4)
         AND ($5 IS NULL OR id LIKE $5 ESCAPE '\\' OR job_type LIKE $5 ESCAPE '\\')",
        "(json_array_length($2) = 0 OR status IN (SELECT value FROM json_each($2)))"
    );
    const LOAD_JOBS: [&'static str; 2] = LOAD_JOBS;
    const LOAD_TASKS: [&'static str; 2] = LOAD_TASKS;
    const LOAD_JOB_STATES: [&'static str; 2] = LOAD_JOB_STATES;
    const LOAD_ATTEMPTS: [&'static str; 2] = LOAD_ATTEMPTS;
    const LOAD_BEFORE_WRITE: bool = true;

    fn bind_day(query: Q<'_, Self>, day: NaiveDate) -> Q<'_, Self> {
        query.bind(day.format("%Y-%m-%d").to_string())
    }

    fn get_day(row: &Self::Row, index: usize) -> ColumnResult<NaiveDate> {
        let day: String = row.try_get(index)?;
        NaiveDate::parse_from_str(&day, "%Y-%m-%d")
            .map_err(|_| ColumnError::Corrupt(format!("day {day:?}")))
    }

    fn get_json(row: &Self::Row, index: usize) -> ColumnResult<Option<Value>> {
        row.try_get::<Option<String>, _>(index)?
            .map(|text| {
                serde_json::from_str(&text).map_err(|e| ColumnError::Corrupt(format!("JSON: {e}")))
            })
            .transpose()
    }

    async fn write_jobs(
        conn: &mut SqliteConnection,
        target: Target,
        changes: &JobsChanges,
        _stored: &HashSet<TaskId>,
        _stored_attempts: &HashSet<(TaskId, u32)>,
    ) -> ReadModelResult<()> {
        let t = target.index();
        if !changes.attempts_reset.is_empty() {
            let ids: Vec<String> = changes
                .attempts_reset
                .iter()
                .map(ToString::to_string)
                .collect();
            sqlx::query(DELETE_ATTEMPTS[t])
                .bind(json!(ids).to_string())
                .execute(&mut *conn)
                .await?;
        }
        if !changes.attempts.is_empty() {
            let rows: Vec<Vec<Value>> = changes.attempts.iter().map(attempt_values).collect();
            UPSERT_ATTEMPTS[t].execute(conn, &rows).await?;
        }
        if !changes.jobs.is_empty() {
            let rows: Vec<Vec<Value>> = changes.jobs.iter().map(job_values).collect();
            UPSERT_JOBS[t].execute(conn, &rows).await?;
        }
        if !changes.tasks.is_empty() {
            let rows: Vec<Vec<Value>> = changes.tasks.iter().map(task_values).collect();
            UPSERT_TASKS[t].execute(conn, &rows).await?;
        }
        Ok(())
    }

    async fn write_analytics(
        conn: &mut SqliteConnection,
        target: Target,
        c: &AnalyticsChanges,
    ) -> ReadModelResult<()> {
        let sql = &ANALYTICS[target.index()];
        let mut rows: Vec<(usize, Vec<Value>)> = Vec::new();
        rows.push((
            0,
            c.job_states
                .iter()
                .map(|s| {
                    json!([
                        s.job_id.to_string(),
                        s.stream_status.as_str(),
                        s.total_tasks,
                        s.created_upto,
                        s.started
                    ])
                })
                .collect(),
        ));
        rows.push((
            1,
            c.jobs_by_type.iter().map(|(k, n)| json!([k, n])).collect(),
        ));
        rows.push((
            2,
            c.jobs_by_status
                .iter()
                .map(|(k, n)| json!([k.as_str(), n]))
                .collect(),
        ));
        rows.push((
            3,
            c.tasks_by_status
                .iter()
                .map(|(k, n)| json!([k.as_str(), n]))
                .collect(),
        ));
        rows.push((
            4,
            c.daily
                .iter()
                .map(|d| {
                    json!([
                        d.day.format("%Y-%m-%d").to_string(),
                        d.jobs_submitted,
                        d.tasks_completed,
                        d.tasks_failed
                    ])
                })
                .collect(),
        ));
        rows.push((6, c.buckets.iter().map(|(b, n)| json!([b, n])).collect()));
        rows.push((
            7,
            c.throughput
                .iter()
                .map(|m| json!([ts(m.minute), m.tasks_completed, m.tasks_failed]))
                .collect(),
        ));
        for (statement, rows) in rows {
            if !rows.is_empty() {
                sqlx::query(sql[statement])
                    .bind(Value::Array(rows).to_string())
                    .execute(&mut *conn)
                    .await?;
            }
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
        Ok(())
    }

    fn prepare_ddl(projection: ProjectionName) -> &'static str {
        super::schema::sqlite_prepare(projection)
    }

    fn swap_ddl(projection: ProjectionName) -> &'static str {
        super::schema::sqlite_swap(projection)
    }

    async fn count_events_after(pool: &SqlitePool, after: LogPosition) -> ReadModelResult<u64> {
        count_events_after(pool, after).await
    }
}

fn opt_ts(at: Option<DateTime<Utc>>) -> Value {
    at.map_or(Value::Null, |t| Value::String(ts(t)))
}

/// JSON stored as TEXT: bound as the text of the serialized value, whatever its shape.
fn json_text(value: Option<&Value>) -> Value {
    value
        .filter(|v| !v.is_null())
        .map_or(Value::Null, |v| Value::String(v.to_string()))
}

fn job_values(j: &JobRow) -> Vec<Value> {
    row![
        j.id.to_string(),
        j.job_type,
        j.status.as_str(),
        j.stream_status.as_str(),
        j.progress.total_tasks,
        j.created_upto,
        j.progress.created,
        j.progress.queued,
        j.progress.running,
        j.progress.completed,
        j.progress.failed,
        j.progress.retrying,
        j.parameters.to_string(),
        j.max_attempts,
        j.timeout_seconds,
        ts(j.created_at),
        ts(j.updated_at),
        opt_ts(j.started_at),
        opt_ts(j.completed_at),
        j.error_message,
        j.cancel_reason,
        j.priority,
    ]
}

fn task_values(r: &TaskRow) -> Vec<Value> {
    row![
        r.id.to_string(),
        r.job_id.to_string(),
        r.task_index,
        r.job_type,
        r.status.as_str(),
        r.attempt,
        r.max_attempts,
        r.timeout_seconds,
        json_text(Some(&r.parameters)),
        json_text(r.result.as_ref()),
        r.error_message,
        r.worker,
        ts(r.created_at),
        ts(r.updated_at),
        opt_ts(r.started_at),
        opt_ts(r.completed_at),
        opt_ts(r.next_attempt_at),
        r.duration_ms
            .map(|ms| i64::try_from(ms).unwrap_or(i64::MAX)),
        r.dead_lettered,
    ]
}

fn attempt_values(r: &AttemptRow) -> Vec<Value> {
    let a = &r.attempt;
    let us = |at: Option<DateTime<Utc>>| at.map(|t| t.timestamp_micros());
    row![
        r.task_id.to_string(),
        r.seq,
        r.job_id.to_string(),
        r.task_index,
        a.attempt,
        a.queued_at.timestamp_micros(),
        us(a.not_before),
        a.worker,
        us(a.started_at),
        us(a.ended_at),
        a.duration_ms
            .map(|ms| i64::try_from(ms).unwrap_or(i64::MAX)),
        outcome_str(a.outcome),
        a.error,
        us(a.retry.as_ref().map(|d| d.at)),
        us(a.retry.as_ref().map(|d| d.not_before)),
        a.retry
            .as_ref()
            .map(|d| i64::try_from(d.backoff_ms).unwrap_or(i64::MAX)),
        a.retry.as_ref().map(|d| i64::from(d.manual)),
        a.dead_letter_reason,
    ]
}

async fn count_events_after(pool: &SqlitePool, after: LogPosition) -> ReadModelResult<u64> {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE position > $1")
        .bind(after.position)
        .fetch_one(pool)
        .await?;
    Ok(u64::try_from(n).unwrap_or(0))
}
