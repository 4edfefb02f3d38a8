//! The read model on SQLite: upserts from one JSON array of rows per table per batch
//! (`json_each`), loads by `IN (SELECT value FROM json_each(?1))`, and the queries.

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Value, json};
use shoal_domain::{JobId, JobProgress, TaskId};
use sqlx::sqlite::{SqlitePool, SqliteRow};
use sqlx::{Row, SqliteConnection};
use uuid::Uuid;

use super::types::{
    AnalyticsChanges, AnalyticsJobState, DayCounts, JobCursor, JobFilter, JobRow, JobSort,
    JobsChanges, JobsKeys, MinuteCounts, ProjectionName, Target, TaskRow,
};
use super::{
    ReadModelError, ReadModelResult, count, job_status, parse_ts, search_pattern, task_status, ts,
};
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

/// `json_extract(j.value, '$[i]')` for each index, comma-separated.
macro_rules! extract {
    ($first:literal $(, $n:literal)*) => {
        concat!("json_extract(j.value, '$[", $first, "]')"
                $(, ", json_extract(j.value, '$[", $n, "]')")*)
    };
}

macro_rules! upsert_jobs {
    ($t:literal) => {
        concat!(
            "INSERT INTO ",
            $t,
            " (",
            job_columns!(),
            ") SELECT ",
            extract!(
                0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20
            ),
            " FROM json_each(?1) AS j WHERE true
             ON CONFLICT (id) DO UPDATE SET
                 job_type = excluded.job_type, status = excluded.status,
                 stream_status = excluded.stream_status, total_tasks = excluded.total_tasks,
                 created_upto = excluded.created_upto, created = excluded.created,
                 queued = excluded.queued, running = excluded.running,
                 completed = excluded.completed, failed = excluded.failed,
                 retrying = excluded.retrying, parameters = excluded.parameters,
                 max_attempts = excluded.max_attempts,
                 timeout_seconds = excluded.timeout_seconds, created_at = excluded.created_at,
                 updated_at = excluded.updated_at, started_at = excluded.started_at,
                 completed_at = excluded.completed_at, error_message = excluded.error_message,
                 cancel_reason = excluded.cancel_reason"
        )
    };
}

macro_rules! upsert_tasks {
    ($t:literal) => {
        concat!(
            "INSERT INTO ",
            $t,
            " (",
            task_columns!(),
            ") SELECT ",
            extract!(
                0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18
            ),
            " FROM json_each(?1) AS j WHERE true
             ON CONFLICT (id) DO UPDATE SET
                 job_id = excluded.job_id, task_index = excluded.task_index,
                 job_type = excluded.job_type, status = excluded.status,
                 attempt = excluded.attempt, max_attempts = excluded.max_attempts,
                 timeout_seconds = excluded.timeout_seconds, parameters = excluded.parameters,
                 result = excluded.result, error_message = excluded.error_message,
                 worker = excluded.worker, created_at = excluded.created_at,
                 updated_at = excluded.updated_at, started_at = excluded.started_at,
                 completed_at = excluded.completed_at,
                 next_attempt_at = excluded.next_attempt_at,
                 duration_ms = excluded.duration_ms, dead_lettered = excluded.dead_lettered"
        )
    };
}

const UPSERT_JOBS: [&str; 2] = [upsert_jobs!("jobs"), upsert_jobs!("jobs_rebuild")];
const UPSERT_TASKS: [&str; 2] = [upsert_tasks!("tasks"), upsert_tasks!("tasks_rebuild")];
const LOAD_JOBS: [&str; 2] = [
    concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE id IN (SELECT value FROM json_each(?1))"
    ),
    concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs_rebuild WHERE id IN (SELECT value FROM json_each(?1))"
    ),
];
const LOAD_TASKS: [&str; 2] = [
    concat!(
        "SELECT ",
        task_columns!(),
        " FROM tasks WHERE id IN (SELECT value FROM json_each(?1))"
    ),
    concat!(
        "SELECT ",
        task_columns!(),
        " FROM tasks_rebuild WHERE id IN (SELECT value FROM json_each(?1))"
    ),
];

macro_rules! analytics_sql {
    ($s:literal) => {
        [
            // 0: load job states
            concat!(
                "SELECT job_id, stream_status, total_tasks, created_upto, started
                 FROM analytics_job_state",
                $s,
                " WHERE job_id IN (SELECT value FROM json_each(?1))"
            ),
            // 1: upsert job states
            concat!(
                "INSERT INTO analytics_job_state",
                $s,
                " (job_id, stream_status, total_tasks, created_upto, started) SELECT ",
                extract!(0, 1, 2, 3, 4),
                " FROM json_each(?1) AS j WHERE true
                 ON CONFLICT (job_id) DO UPDATE SET
                     stream_status = excluded.stream_status, total_tasks = excluded.total_tasks,
                     created_upto = excluded.created_upto, started = excluded.started"
            ),
            // 2: jobs by type
            concat!(
                "INSERT INTO analytics_jobs_by_type",
                $s,
                " AS t (job_type, count) SELECT ",
                extract!(0, 1),
                " FROM json_each(?1) AS j WHERE true
                 ON CONFLICT (job_type) DO UPDATE SET count = t.count + excluded.count"
            ),
            // 3: jobs by status
            concat!(
                "INSERT INTO analytics_jobs_by_status",
                $s,
                " AS t (status, count) SELECT ",
                extract!(0, 1),
                " FROM json_each(?1) AS j WHERE true
                 ON CONFLICT (status) DO UPDATE SET count = t.count + excluded.count"
            ),
            // 4: tasks by status
            concat!(
                "INSERT INTO analytics_tasks_by_status",
                $s,
                " AS t (status, count) SELECT ",
                extract!(0, 1),
                " FROM json_each(?1) AS j WHERE true
                 ON CONFLICT (status) DO UPDATE SET count = t.count + excluded.count"
            ),
            // 5: daily
            concat!(
                "INSERT INTO analytics_daily",
                $s,
                " AS t (day, jobs_submitted, tasks_completed, tasks_failed) SELECT ",
                extract!(0, 1, 2, 3),
                " FROM json_each(?1) AS j WHERE true
                 ON CONFLICT (day) DO UPDATE SET
                     jobs_submitted = t.jobs_submitted + excluded.jobs_submitted,
                     tasks_completed = t.tasks_completed + excluded.tasks_completed,
                     tasks_failed = t.tasks_failed + excluded.tasks_failed"
            ),
            // 6: processing time
            concat!(
                "INSERT INTO analytics_processing_time",
                $s,
                " AS t (id, count, sum_ms, min_ms, max_ms) VALUES (1, ?1, ?2, ?3, ?4)
                 ON CONFLICT (id) DO UPDATE SET
                     count = t.count + excluded.count, sum_ms = t.sum_ms + excluded.sum_ms,
                     min_ms = min(t.min_ms, excluded.min_ms),
                     max_ms = max(t.max_ms, excluded.max_ms)"
            ),
            // 7: buckets
            concat!(
                "INSERT INTO analytics_processing_time_buckets",
                $s,
                " AS t (bucket, count) SELECT ",
                extract!(0, 1),
                " FROM json_each(?1) AS j WHERE true
                 ON CONFLICT (bucket) DO UPDATE SET count = t.count + excluded.count"
            ),
            // 8: throughput
            concat!(
                "INSERT INTO analytics_throughput",
                $s,
                " AS t (minute, tasks_completed, tasks_failed) SELECT ",
                extract!(0, 1, 2),
                " FROM json_each(?1) AS j WHERE true
                 ON CONFLICT (minute) DO UPDATE SET
                     tasks_completed = t.tasks_completed + excluded.tasks_completed,
                     tasks_failed = t.tasks_failed + excluded.tasks_failed"
            ),
            // 9: drop zero status counts
            concat!(
                "DELETE FROM analytics_jobs_by_status",
                $s,
                " WHERE count = 0"
            ),
            // 10
            concat!(
                "DELETE FROM analytics_tasks_by_status",
                $s,
                " WHERE count = 0"
            ),
        ]
    };
}

const ANALYTICS: [[&str; 11]; 2] = [analytics_sql!(""), analytics_sql!("_rebuild")];

const MOVE_FROM_START: &str = "
INSERT INTO checkpoints (name, commit_id, position) VALUES (?1, ?2, ?3)
ON CONFLICT (name) DO UPDATE
SET commit_id = excluded.commit_id, position = excluded.position,
    updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
WHERE checkpoints.commit_id = 0 AND checkpoints.position = 0";

const MOVE: &str = "
UPDATE checkpoints SET commit_id = ?2, position = ?3,
    updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
WHERE name = ?1 AND commit_id = ?4 AND position = ?5";

const SET_CHECKPOINT: &str = "
INSERT INTO checkpoints (name, commit_id, position) VALUES (?1, ?2, ?3)
ON CONFLICT (name) DO UPDATE
SET commit_id = excluded.commit_id, position = excluded.position,
    updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

/// Moves checkpoint `name` from `from` to `to`; false when it is not at `from`.
async fn fence(
    conn: &mut SqliteConnection,
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

pub(crate) async fn checkpoint(pool: &SqlitePool, name: &str) -> ReadModelResult<LogPosition> {
    crate::eventlog::load_checkpoint_sqlite(pool, name)
        .await
        .map_err(super::log_error)
}

fn ids_json<I: IntoIterator<Item = Uuid>>(ids: I) -> String {
    Value::Array(ids.into_iter().map(|id| json!(id.to_string())).collect()).to_string()
}

pub(crate) async fn apply_jobs(
    pool: &SqlitePool,
    target: Target,
    from: LogPosition,
    to: LogPosition,
    keys: &JobsKeys,
    fold: impl FnOnce(Vec<JobRow>, Vec<TaskRow>) -> JobsChanges,
) -> ReadModelResult<JobsChanges> {
    let name = ProjectionName::Jobs.checkpoint_name(target);
    let t = target.index();
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    if !fence(&mut tx, name, from, to).await? {
        tx.rollback().await?;
        return Err(ReadModelError::Fenced { name });
    }
    let jobs = if keys.jobs.is_empty() {
        Vec::new()
    } else {
        sqlx::query(LOAD_JOBS[t])
            .bind(ids_json(keys.jobs.iter().map(JobId::as_uuid)))
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(job_row)
            .collect::<ReadModelResult<Vec<_>>>()?
    };
    let tasks = if keys.tasks.is_empty() {
        Vec::new()
    } else {
        sqlx::query(LOAD_TASKS[t])
            .bind(ids_json(keys.tasks.iter().map(TaskId::as_uuid)))
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(task_row)
            .collect::<ReadModelResult<Vec<_>>>()?
    };
    let changes = fold(jobs, tasks);
    if !changes.jobs.is_empty() {
        let rows: Vec<Value> = changes.jobs.iter().map(job_json).collect();
        sqlx::query(UPSERT_JOBS[t])
            .bind(Value::Array(rows).to_string())
            .execute(&mut *tx)
            .await?;
    }
    if !changes.tasks.is_empty() {
        let rows: Vec<Value> = changes.tasks.iter().map(task_json).collect();
        sqlx::query(UPSERT_TASKS[t])
            .bind(Value::Array(rows).to_string())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(changes)
}

fn opt_ts(at: Option<DateTime<Utc>>) -> Value {
    at.map_or(Value::Null, |t| Value::String(ts(t)))
}

/// JSON stored as TEXT: passed through the row array as a JSON string, so `json_extract`
/// gives back the serialized text whatever the value's shape.
fn json_text(value: Option<&Value>) -> Value {
    value
        .filter(|v| !v.is_null())
        .map_or(Value::Null, |v| Value::String(v.to_string()))
}

fn job_json(j: &JobRow) -> Value {
    json!([
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
    ])
}

fn task_json(r: &TaskRow) -> Value {
    json!([
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
    ])
}

pub(crate) async fn apply_analytics(
    pool: &SqlitePool,
    target: Target,
    from: LogPosition,
    to: LogPosition,
    job_ids: &[JobId],
    fold: impl FnOnce(Vec<AnalyticsJobState>) -> AnalyticsChanges,
) -> ReadModelResult<AnalyticsChanges> {
    let name = ProjectionName::Analytics.checkpoint_name(target);
    let sql = &ANALYTICS[target.index()];
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    if !fence(&mut tx, name, from, to).await? {
        tx.rollback().await?;
        return Err(ReadModelError::Fenced { name });
    }
    let states = if job_ids.is_empty() {
        Vec::new()
    } else {
        sqlx::query(sql[0])
            .bind(ids_json(job_ids.iter().map(JobId::as_uuid)))
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(job_state_row)
            .collect::<ReadModelResult<Vec<_>>>()?
    };
    let changes = fold(states);
    let c = &changes;
    let mut rows: Vec<(usize, Vec<Value>)> = Vec::new();
    rows.push((
        1,
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
        2,
        c.jobs_by_type.iter().map(|(k, n)| json!([k, n])).collect(),
    ));
    rows.push((
        3,
        c.jobs_by_status
            .iter()
            .map(|(k, n)| json!([k.as_str(), n]))
            .collect(),
    ));
    rows.push((
        4,
        c.tasks_by_status
            .iter()
            .map(|(k, n)| json!([k.as_str(), n]))
            .collect(),
    ));
    rows.push((
        5,
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
    rows.push((7, c.buckets.iter().map(|(b, n)| json!([b, n])).collect()));
    rows.push((
        8,
        c.throughput
            .iter()
            .map(|m| json!([ts(m.minute), m.tasks_completed, m.tasks_failed]))
            .collect(),
    ));
    for (statement, rows) in rows {
        if !rows.is_empty() {
            sqlx::query(sql[statement])
                .bind(Value::Array(rows).to_string())
                .execute(&mut *tx)
                .await?;
        }
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

pub(crate) async fn prepare_rebuild(
    pool: &SqlitePool,
    projection: ProjectionName,
) -> ReadModelResult<()> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::raw_sql(super::schema::sqlite_prepare(projection))
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM checkpoints WHERE name = ?1")
        .bind(projection.checkpoint_name(Target::Rebuild))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

pub(crate) async fn swap_rebuild(
    pool: &SqlitePool,
    projection: ProjectionName,
    at: LogPosition,
) -> ReadModelResult<()> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::query(SET_CHECKPOINT)
        .bind(projection.checkpoint_name(Target::Live))
        .bind(at.commit)
        .bind(at.position)
        .execute(&mut *tx)
        .await?;
    let rebuilt =
        sqlx::query("DELETE FROM checkpoints WHERE name = ?1 AND commit_id = ?2 AND position = ?3")
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
    sqlx::raw_sql(super::schema::sqlite_swap(projection))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

pub(crate) async fn count_events_after(
    pool: &SqlitePool,
    after: LogPosition,
) -> ReadModelResult<u64> {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE position > ?1")
        .bind(after.position)
        .fetch_one(pool)
        .await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

// ---------------------------------------------------------------------------------------------
// Rows

fn uuid(text: String) -> ReadModelResult<Uuid> {
    Uuid::parse_str(&text).map_err(|_| ReadModelError::Corrupt(format!("id {text:?}")))
}

fn json_value(text: String) -> ReadModelResult<Value> {
    serde_json::from_str(&text).map_err(|e| ReadModelError::Corrupt(format!("JSON: {e}")))
}

fn opt_time(text: Option<String>) -> ReadModelResult<Option<DateTime<Utc>>> {
    text.map(|t| parse_ts(&t)).transpose()
}

fn job_row(row: &SqliteRow) -> ReadModelResult<JobRow> {
    let n = |i: usize, column: &str| -> ReadModelResult<u32> { count(row.try_get(i)?, column) };
    Ok(JobRow {
        id: JobId::from_uuid(uuid(row.try_get(0)?)?),
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
        parameters: json_value(row.try_get(12)?)?,
        max_attempts: n(13, "max_attempts")?,
        timeout_seconds: n(14, "timeout_seconds")?,
        created_at: parse_ts(&row.try_get::<String, _>(15)?)?,
        updated_at: parse_ts(&row.try_get::<String, _>(16)?)?,
        started_at: opt_time(row.try_get(17)?)?,
        completed_at: opt_time(row.try_get(18)?)?,
        error_message: row.try_get(19)?,
        cancel_reason: row.try_get(20)?,
    })
}

fn task_row(row: &SqliteRow) -> ReadModelResult<TaskRow> {
    let n = |i: usize, column: &str| -> ReadModelResult<u32> { count(row.try_get(i)?, column) };
    Ok(TaskRow {
        id: TaskId::from_uuid(uuid(row.try_get(0)?)?),
        job_id: JobId::from_uuid(uuid(row.try_get(1)?)?),
        task_index: n(2, "task_index")?,
        job_type: row.try_get(3)?,
        status: task_status(row.try_get(4)?)?,
        attempt: n(5, "attempt")?,
        max_attempts: n(6, "max_attempts")?,
        timeout_seconds: n(7, "timeout_seconds")?,
        parameters: row
            .try_get::<Option<String>, _>(8)?
            .map(json_value)
            .transpose()?
            .unwrap_or(Value::Null),
        result: row
            .try_get::<Option<String>, _>(9)?
            .map(json_value)
            .transpose()?,
        error_message: row.try_get(10)?,
        worker: row.try_get(11)?,
        created_at: parse_ts(&row.try_get::<String, _>(12)?)?,
        updated_at: parse_ts(&row.try_get::<String, _>(13)?)?,
        started_at: opt_time(row.try_get(14)?)?,
        completed_at: opt_time(row.try_get(15)?)?,
        next_attempt_at: opt_time(row.try_get(16)?)?,
        duration_ms: row
            .try_get::<Option<i64>, _>(17)?
            .map(|ms| u64::try_from(ms).unwrap_or(0)),
        dead_lettered: row.try_get(18)?,
    })
}

fn job_state_row(row: &SqliteRow) -> ReadModelResult<AnalyticsJobState> {
    Ok(AnalyticsJobState {
        job_id: JobId::from_uuid(uuid(row.try_get(0)?)?),
        stream_status: job_status(row.try_get(1)?)?,
        total_tasks: count(row.try_get(2)?, "total_tasks")?,
        created_upto: count(row.try_get(3)?, "created_upto")?,
        started: row.try_get(4)?,
    })
}

// ---------------------------------------------------------------------------------------------
// Queries

macro_rules! job_filter {
    () => {
        "(json_array_length(?1) = 0 OR status IN (SELECT value FROM json_each(?1)))
         AND (?2 IS NULL OR job_type = ?2)
         AND (?3 IS NULL OR created_at >= ?3)
         AND (?4 IS NULL OR created_at < ?4)
         AND (?5 IS NULL OR id LIKE ?5 ESCAPE '\\' OR job_type LIKE ?5 ESCAPE '\\')"
    };
}

const LIST_NEWEST: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobs WHERE ",
    job_filter!(),
    " AND (?6 IS NULL OR (created_at, id) < (?6, ?7))
     ORDER BY created_at DESC, id DESC LIMIT ?8"
);
const LIST_OLDEST: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobs WHERE ",
    job_filter!(),
    " AND (?6 IS NULL OR (created_at, id) > (?6, ?7))
     ORDER BY created_at, id LIMIT ?8"
);
const PAGE_NEWEST: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobs WHERE ",
    job_filter!(),
    " ORDER BY created_at DESC, id DESC LIMIT ?6 OFFSET ?7"
);
const PAGE_OLDEST: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobs WHERE ",
    job_filter!(),
    " ORDER BY created_at, id LIMIT ?6 OFFSET ?7"
);
const COUNT_JOBS: &str = concat!("SELECT count(*) FROM jobs WHERE ", job_filter!());

type Query<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

fn bind_filter<'q>(query: Query<'q>, filter: &'q JobFilter) -> Query<'q> {
    let statuses: Vec<&str> = filter.statuses.iter().map(|s| s.as_str()).collect();
    query
        .bind(json!(statuses).to_string())
        .bind(filter.job_type.as_deref())
        .bind(filter.created_from.map(ts))
        .bind(filter.created_to.map(ts))
        .bind(search_pattern(filter.search.as_deref()))
}

pub(crate) async fn get_job(pool: &SqlitePool, id: JobId) -> ReadModelResult<Option<JobRow>> {
    sqlx::query(concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE id = ?1"
    ))
    .bind(id.to_string())
    .fetch_optional(pool)
    .await?
    .as_ref()
    .map(job_row)
    .transpose()
}

pub(crate) async fn list_jobs(
    pool: &SqlitePool,
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
        .bind(after.map(|c| ts(c.created_at)))
        .bind(after.map(|c| c.id.to_string()))
        .bind(limit)
        .fetch_all(pool)
        .await?
        .iter()
        .map(job_row)
        .collect()
}

pub(crate) async fn page_jobs(
    pool: &SqlitePool,
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
    pool: &SqlitePool,
    job_id: JobId,
    statuses: &[&str],
    after_index: Option<u32>,
    limit: i64,
) -> ReadModelResult<Vec<TaskRow>> {
    const SQL: &str = concat!(
        "SELECT ",
        task_columns!(),
        " FROM tasks
         WHERE job_id = ?1
           AND (json_array_length(?2) = 0 OR status IN (SELECT value FROM json_each(?2)))
           AND task_index > ?3
         ORDER BY task_index, id LIMIT ?4"
    );
    sqlx::query(SQL)
        .bind(job_id.to_string())
        .bind(json!(statuses).to_string())
        .bind(after_index.map_or(-1, i64::from))
        .bind(limit)
        .fetch_all(pool)
        .await?
        .iter()
        .map(task_row)
        .collect()
}

pub(crate) async fn page_tasks_of_job(
    pool: &SqlitePool,
    job_id: JobId,
    statuses: &[&str],
    offset: i64,
    limit: i64,
) -> ReadModelResult<(Vec<TaskRow>, i64)> {
    const SQL: &str = concat!(
        "SELECT ",
        task_columns!(),
        " FROM tasks
         WHERE job_id = ?1
           AND (json_array_length(?2) = 0 OR status IN (SELECT value FROM json_each(?2)))
         ORDER BY task_index, id LIMIT ?3 OFFSET ?4"
    );
    const COUNT: &str = "SELECT count(*) FROM tasks
         WHERE job_id = ?1
           AND (json_array_length(?2) = 0 OR status IN (SELECT value FROM json_each(?2)))";
    let total: i64 = sqlx::query_scalar(COUNT)
        .bind(job_id.to_string())
        .bind(json!(statuses).to_string())
        .fetch_one(pool)
        .await?;
    let tasks = sqlx::query(SQL)
        .bind(job_id.to_string())
        .bind(json!(statuses).to_string())
        .bind(limit)
        .bind(offset)
        .fetch_all(pool)
        .await?
        .iter()
        .map(task_row)
        .collect::<ReadModelResult<Vec<_>>>()?;
    Ok((tasks, total))
}

pub(crate) async fn get_task(pool: &SqlitePool, id: TaskId) -> ReadModelResult<Option<TaskRow>> {
    sqlx::query(concat!(
        "SELECT ",
        task_columns!(),
        " FROM tasks WHERE id = ?1"
    ))
    .bind(id.to_string())
    .fetch_optional(pool)
    .await?
    .as_ref()
    .map(task_row)
    .transpose()
}

pub(crate) async fn counts(
    pool: &SqlitePool,
    table: &'static str,
) -> ReadModelResult<Vec<(String, i64)>> {
    let sql = super::counts_sql(table);
    Ok(sqlx::query_as(sql).fetch_all(pool).await?)
}

pub(crate) async fn daily(
    pool: &SqlitePool,
    from: NaiveDate,
    to: NaiveDate,
) -> ReadModelResult<Vec<DayCounts>> {
    let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "SELECT day, jobs_submitted, tasks_completed, tasks_failed FROM analytics_daily
         WHERE day >= ?1 AND day <= ?2 ORDER BY day",
    )
    .bind(from.format("%Y-%m-%d").to_string())
    .bind(to.format("%Y-%m-%d").to_string())
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(day, jobs_submitted, tasks_completed, tasks_failed)| {
            Ok(DayCounts {
                date: NaiveDate::parse_from_str(&day, "%Y-%m-%d")
                    .map_err(|_| ReadModelError::Corrupt(format!("day {day:?}")))?,
                jobs_submitted,
                tasks_completed,
                tasks_failed,
            })
        })
        .collect()
}

pub(crate) async fn throughput(
    pool: &SqlitePool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> ReadModelResult<Vec<MinuteCounts>> {
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT minute, tasks_completed, tasks_failed FROM analytics_throughput
         WHERE minute >= ?1 AND minute <= ?2 ORDER BY minute",
    )
    .bind(ts(from))
    .bind(ts(to))
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(minute, tasks_completed, tasks_failed)| {
            Ok(MinuteCounts {
                minute: parse_ts(&minute)?,
                tasks_completed,
                tasks_failed,
            })
        })
        .collect()
}

pub(crate) async fn processing(
    pool: &SqlitePool,
) -> ReadModelResult<(Option<(i64, i64, i64, i64)>, Vec<(u32, i64)>)> {
    let row: Option<(i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT count, sum_ms, min_ms, max_ms FROM analytics_processing_time WHERE id = 1",
    )
    .fetch_optional(pool)
    .await?;
    let buckets: Vec<(i64, i64)> = sqlx::query_as(
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
pub(crate) async fn dump(pool: &SqlitePool) -> ReadModelResult<super::types::ReadModelDump> {
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
    .map(job_state_row)
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
