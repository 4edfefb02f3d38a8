//! The read model on a SQL database, written once for both dialects (see `crate::dialect`):
//! the batch transactions (fence, load, fold, write), the rebuild, the queries and the row
//! decoding. What differs is in [`ReadDialect`], implemented side by side in `postgres.rs` and
//! `sqlite.rs`: how a batch's rows go in (`UNNEST` of column arrays against `json_each` of one
//! JSON array), how a list of ids or statuses is matched, the search operator, JSON and day
//! columns, and the rebuild's DDL.

use std::collections::HashSet;
use std::future::Future;

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;
use shoal_domain::{JobId, JobProgress, TaskId};
use sqlx::Pool;

use super::types::{
    AnalyticsChanges, AnalyticsJobState, AttemptRow, DayCounts, JobCursor, JobFilter, JobRow,
    JobSort, JobsChanges, JobsKeys, MinuteCounts, ProjectionName, Target, TaskRow, parse_outcome,
};
use super::{ReadModelError, ReadModelResult, count, job_status, search_pattern, task_status};
use crate::dialect::{ColumnError, ColumnResult, Dialect, QueryExt, col};
use crate::eventlog::LogPosition;

macro_rules! job_columns {
    () => {
        "id, job_type, status, stream_status, total_tasks, created_upto, created, queued, \
         running, completed, failed, retrying, parameters, max_attempts, timeout_seconds, \
         created_at, updated_at, started_at, completed_at, error_message, cancel_reason, \
         priority"
    };
}
pub(crate) use job_columns;

macro_rules! task_columns {
    () => {
        "id, job_id, task_index, job_type, status, attempt, max_attempts, timeout_seconds, \
         parameters, result, error_message, worker, created_at, updated_at, started_at, \
         completed_at, next_attempt_at, duration_ms, dead_lettered"
    };
}
pub(crate) use task_columns;

macro_rules! attempt_columns {
    () => {
        "task_id, seq, job_id, task_index, attempt, queued_us, not_before_us, worker, started_us, \
         ended_us, duration_ms, outcome, error, retry_at_us, retry_not_before_us, retry_backoff_ms, \
         retry_manual, dead_letter_reason"
    };
}
pub(crate) use attempt_columns;

/// What an upsert of an attempt row overwrites: not its job and index, which its task's id
/// fixes (and which lead `task_attempts_job_idx`: SQLite rewrites the entry of every index
/// whose column an `UPDATE` sets, even to the same value).
macro_rules! attempt_updates {
    () => {
        "attempt = excluded.attempt, queued_us = excluded.queued_us,
         not_before_us = excluded.not_before_us, worker = excluded.worker,
         started_us = excluded.started_us, ended_us = excluded.ended_us,
         duration_ms = excluded.duration_ms, outcome = excluded.outcome,
         error = excluded.error, retry_at_us = excluded.retry_at_us,
         retry_not_before_us = excluded.retry_not_before_us,
         retry_backoff_ms = excluded.retry_backoff_ms, retry_manual = excluded.retry_manual,
         dead_letter_reason = excluded.dead_letter_reason"
    };
}
pub(crate) use attempt_updates;

/// What an upsert of a job row overwrites.
macro_rules! job_updates {
    () => {
        "job_type = excluded.job_type, status = excluded.status,
         stream_status = excluded.stream_status, total_tasks = excluded.total_tasks,
         created_upto = excluded.created_upto, created = excluded.created,
         queued = excluded.queued, running = excluded.running,
         completed = excluded.completed, failed = excluded.failed,
         retrying = excluded.retrying, parameters = excluded.parameters,
         max_attempts = excluded.max_attempts,
         timeout_seconds = excluded.timeout_seconds, created_at = excluded.created_at,
         updated_at = excluded.updated_at, started_at = excluded.started_at,
         completed_at = excluded.completed_at, error_message = excluded.error_message,
         cancel_reason = excluded.cancel_reason, priority = excluded.priority"
    };
}
pub(crate) use job_updates;

/// What an upsert of a task row overwrites: not its job and index, which its id fixes (and
/// which lead `tasks_job_index_idx` and `tasks_job_status_idx`: on SQLite setting them, even to
/// the same value, rewrote both entries of each update; docs/benchmarks.md, the sixteenth
/// session).
macro_rules! task_updates {
    () => {
        "job_type = excluded.job_type, status = excluded.status,
         attempt = excluded.attempt, max_attempts = excluded.max_attempts,
         timeout_seconds = excluded.timeout_seconds, parameters = excluded.parameters,
         result = excluded.result, error_message = excluded.error_message,
         worker = excluded.worker, created_at = excluded.created_at,
         updated_at = excluded.updated_at, started_at = excluded.started_at,
         completed_at = excluded.completed_at,
         next_attempt_at = excluded.next_attempt_at,
         duration_ms = excluded.duration_ms, dead_lettered = excluded.dead_lettered"
    };
}
pub(crate) use task_updates;

/// The checkpoint statements of the fence and the swap; `$now` is the dialect's current time.
macro_rules! checkpoint_sql {
    ($now:literal) => {
        $crate::readmodel::sql::CheckpointSql {
            move_from_start: concat!(
                "INSERT INTO checkpoints (name, commit_id, position) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO UPDATE
                 SET commit_id = excluded.commit_id, position = excluded.position,
                     updated_at = ",
                $now,
                " WHERE checkpoints.commit_id = 0 AND checkpoints.position = 0"
            ),
            move_from: concat!(
                "UPDATE checkpoints SET commit_id = $2, position = $3, updated_at = ",
                $now,
                " WHERE name = $1 AND commit_id = $4 AND position = $5"
            ),
            set: concat!(
                "INSERT INTO checkpoints (name, commit_id, position) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO UPDATE
                 SET commit_id = excluded.commit_id, position = excluded.position,
                     updated_at = ",
                $now
            ),
        }
    };
}
pub(crate) use checkpoint_sql;

/// The list queries, from a dialect's filter on `$1`..`$5` (statuses, job type, created from,
/// created before, search pattern) and its match of task statuses on `$2`.
macro_rules! query_sql {
    ($job_filter:literal, $task_statuses:literal) => {
        $crate::readmodel::sql::QuerySql {
            list_newest: concat!(
                "SELECT ",
                $crate::readmodel::sql::job_columns!(),
                " FROM jobs WHERE ",
                $job_filter,
                " AND ($6 IS NULL OR (created_at, id) < ($6, $7))
                 ORDER BY created_at DESC, id DESC LIMIT $8"
            ),
            list_oldest: concat!(
                "SELECT ",
                $crate::readmodel::sql::job_columns!(),
                " FROM jobs WHERE ",
                $job_filter,
                " AND ($6 IS NULL OR (created_at, id) > ($6, $7))
                 ORDER BY created_at, id LIMIT $8"
            ),
            page_newest: concat!(
                "SELECT ",
                $crate::readmodel::sql::job_columns!(),
                " FROM jobs WHERE ",
                $job_filter,
                " ORDER BY created_at DESC, id DESC LIMIT $6 OFFSET $7"
            ),
            page_oldest: concat!(
                "SELECT ",
                $crate::readmodel::sql::job_columns!(),
                " FROM jobs WHERE ",
                $job_filter,
                " ORDER BY created_at, id LIMIT $6 OFFSET $7"
            ),
            // Parameters numbered in the order they first appear: SQLite numbers `$N` so.
            list_priority: concat!(
                "SELECT ",
                $crate::readmodel::sql::job_columns!(),
                " FROM jobs WHERE ",
                $job_filter,
                " AND ($6 IS NULL OR (priority, created_at, id) < ($7, $6, $8))
                 ORDER BY priority DESC, created_at DESC, id DESC LIMIT $9"
            ),
            page_priority: concat!(
                "SELECT ",
                $crate::readmodel::sql::job_columns!(),
                " FROM jobs WHERE ",
                $job_filter,
                " ORDER BY priority DESC, created_at DESC, id DESC LIMIT $6 OFFSET $7"
            ),
            count_jobs: concat!("SELECT count(*) FROM jobs WHERE ", $job_filter),
            tasks_of_job: concat!(
                "SELECT ",
                $crate::readmodel::sql::task_columns!(),
                " FROM tasks WHERE job_id = $1 AND ",
                $task_statuses,
                " AND task_index > $3 ORDER BY task_index, id LIMIT $4"
            ),
            page_tasks_of_job: concat!(
                "SELECT ",
                $crate::readmodel::sql::task_columns!(),
                " FROM tasks WHERE job_id = $1 AND ",
                $task_statuses,
                " ORDER BY task_index, id LIMIT $3 OFFSET $4"
            ),
            count_tasks_of_job: concat!(
                "SELECT count(*) FROM tasks WHERE job_id = $1 AND ",
                $task_statuses
            ),
        }
    };
}
pub(crate) use query_sql;

/// See `checkpoint_sql!`.
#[derive(Debug)]
pub(crate) struct CheckpointSql {
    pub move_from_start: &'static str,
    pub move_from: &'static str,
    pub set: &'static str,
}

/// See `query_sql!`.
#[derive(Debug)]
pub(crate) struct QuerySql {
    pub list_newest: &'static str,
    pub list_oldest: &'static str,
    pub page_newest: &'static str,
    pub page_oldest: &'static str,
    pub list_priority: &'static str,
    pub page_priority: &'static str,
    pub count_jobs: &'static str,
    pub tasks_of_job: &'static str,
    pub page_tasks_of_job: &'static str,
    pub count_tasks_of_job: &'static str,
}

/// Status counts that dropped to zero go, live and rebuild tables (a data-modifying CTE could
/// not see the upsert's result, so these are statements of their own).
const DROP_ZERO_JOB_STATUSES: [&str; 2] = [
    "DELETE FROM analytics_jobs_by_status WHERE count = 0",
    "DELETE FROM analytics_jobs_by_status_rebuild WHERE count = 0",
];
const DROP_ZERO_TASK_STATUSES: [&str; 2] = [
    "DELETE FROM analytics_tasks_by_status WHERE count = 0",
    "DELETE FROM analytics_tasks_by_status_rebuild WHERE count = 0",
];

const GET_JOB: &str = concat!("SELECT ", job_columns!(), " FROM jobs WHERE id = $1");
const GET_TASK: &str = concat!("SELECT ", task_columns!(), " FROM tasks WHERE id = $1");

/// What the read model does differently on each backend. Implemented for `sqlx::Postgres` and
/// `sqlx::Sqlite`.
pub(crate) trait ReadDialect: Dialect {
    const CHECKPOINT: CheckpointSql;
    const QUERIES: QuerySql;
    /// Job rows (`job_columns!`), task rows (`task_columns!`) and analytics job states with
    /// the ids of `$1` (see `Dialect::bind_ids`); live tables first, then the rebuild's.
    const LOAD_JOBS: [&'static str; 2];
    const LOAD_TASKS: [&'static str; 2];
    const LOAD_JOB_STATES: [&'static str; 2];
    /// Attempt rows (`attempt_columns!`) of the tasks with the ids of `$1`.
    const LOAD_ATTEMPTS: [&'static str; 2];
    /// Whether a jobs batch loads its rows before its write transaction (SQLite, where the
    /// write lock is the bottleneck) rather than inside it.
    const LOAD_BEFORE_WRITE: bool;

    /// Binds a day (Postgres `date`; SQLite `YYYY-MM-DD` text).
    fn bind_day(query: crate::dialect::Q<'_, Self>, day: NaiveDate) -> crate::dialect::Q<'_, Self>;
    fn get_day(row: &Self::Row, index: usize) -> ColumnResult<NaiveDate>;
    /// Reads a nullable JSON column (Postgres `jsonb`; SQLite text).
    fn get_json(row: &Self::Row, index: usize) -> ColumnResult<Option<Value>>;

    /// Writes what the jobs fold returned (`stored`: the tasks that were loaded, so exist;
    /// `stored_attempts`: the attempt rows that were loaded).
    fn write_jobs<'c>(
        conn: &'c mut Self::Connection,
        target: Target,
        changes: &'c JobsChanges,
        stored: &'c HashSet<TaskId>,
        stored_attempts: &'c HashSet<(TaskId, u32)>,
    ) -> impl Future<Output = ReadModelResult<()>> + Send + 'c;

    /// Writes what the analytics fold returned: state rows whole, counters as deltas.
    fn write_analytics<'c>(
        conn: &'c mut Self::Connection,
        target: Target,
        changes: &'c AnalyticsChanges,
    ) -> impl Future<Output = ReadModelResult<()>> + Send + 'c;

    /// Empty shadow tables for `projection`.
    fn prepare_ddl(projection: ProjectionName) -> &'static str;
    /// Drops the live tables and renames the shadows into their place.
    fn swap_ddl(projection: ProjectionName) -> &'static str;

    fn count_events_after(
        pool: &Pool<Self>,
        after: LogPosition,
    ) -> impl Future<Output = ReadModelResult<u64>> + Send;
}

impl From<ColumnError> for ReadModelError {
    fn from(error: ColumnError) -> Self {
        match error {
            ColumnError::Database(e) => ReadModelError::Database(e),
            ColumnError::Corrupt(what) => ReadModelError::Corrupt(what),
        }
    }
}

/// Moves checkpoint `name` from `from` to `to`; false when it is not at `from`. On Postgres it
/// takes the checkpoint row's lock first, which serializes every writer of the projection
/// (batches, swaps) for the rest of the transaction; on SQLite the write transaction does.
async fn fence<D: ReadDialect>(
    conn: &mut D::Connection,
    name: &str,
    from: LogPosition,
    to: LogPosition,
) -> ReadModelResult<bool> {
    let query = if from == LogPosition::START {
        sqlx::query::<D>(D::CHECKPOINT.move_from_start)
            .arg(name)
            .arg(to.commit)
            .arg(to.position)
    } else {
        sqlx::query::<D>(D::CHECKPOINT.move_from)
            .arg(name)
            .arg(to.commit)
            .arg(to.position)
            .arg(from.commit)
            .arg(from.position)
    };
    Ok(query.run(D::conn(conn)).await? == 1)
}

pub(crate) async fn checkpoint<D: Dialect>(
    pool: &Pool<D>,
    name: &str,
) -> ReadModelResult<LogPosition> {
    crate::eventlog::sql::load_checkpoint::<D, _>(D::pool(pool), name)
        .await
        .map_err(super::log_error)
}

pub(crate) async fn rebuild_checkpoint<D: Dialect>(
    pool: &Pool<D>,
    name: &str,
) -> ReadModelResult<Option<LogPosition>> {
    let row = sqlx::query::<D>("SELECT commit_id, position FROM checkpoints WHERE name = $1")
        .arg(name)
        .optional(D::pool(pool))
        .await?;
    row.map(|row| {
        Ok(LogPosition {
            commit: col::<D, _>(&row, 0)?,
            position: col::<D, _>(&row, 1)?,
        })
    })
    .transpose()
}

pub(crate) async fn apply_jobs<D: ReadDialect>(
    pool: &Pool<D>,
    target: Target,
    from: LogPosition,
    to: LogPosition,
    keys: JobsKeys,
    implied_attempts: fn(&TaskRow) -> Option<Vec<AttemptRow>>,
    fold: impl FnOnce(Vec<JobRow>, Vec<TaskRow>, Vec<AttemptRow>) -> JobsChanges,
) -> ReadModelResult<JobsChanges> {
    let name = ProjectionName::Jobs.checkpoint_name(target);
    // On SQLite the rows are loaded and folded before the write lock (`crate::sqlite_writer`)
    // is taken, on a connection of their own: the one writer of the database then holds it only
    // to write (docs/benchmarks.md, the fourteenth session). That is safe because every write to
    // these tables moves their checkpoint in the same transaction: if the checkpoint is still
    // `from` once the lock is ours, the rows are what was loaded; if not, the batch is `Fenced`
    // as it would have been anyway.
    let folded_before = if D::LOAD_BEFORE_WRITE {
        let mut conn = pool.acquire().await?;
        let loaded = load_jobs::<D>(&mut conn, target, keys, implied_attempts).await?;
        drop(conn);
        Ok(loaded.fold(fold))
    } else {
        Err((keys, fold))
    };
    let mut tx = D::begin_write(pool).await?;
    if !fence::<D>(&mut tx, name, from, to).await? {
        tx.rollback().await?;
        return Err(ReadModelError::Fenced { name });
    }
    let folded = match folded_before {
        Ok(folded) => folded,
        Err((keys, fold)) => load_jobs::<D>(&mut tx, target, keys, implied_attempts)
            .await?
            .fold(fold),
    };
    D::write_jobs(
        &mut tx,
        target,
        &folded.changes,
        &folded.stored,
        &folded.stored_attempts,
    )
    .await?;
    tx.commit().await?;
    Ok(folded.changes)
}

/// What a jobs batch loads: the rows of its keys (and those it knows already).
struct LoadedJobs {
    jobs: Vec<JobRow>,
    tasks: Vec<TaskRow>,
    attempts: Vec<AttemptRow>,
}

/// What the fold made of a [`LoadedJobs`], and which task and attempt rows exist (were
/// loaded), for the write.
struct FoldedJobs {
    changes: JobsChanges,
    stored: HashSet<TaskId>,
    stored_attempts: HashSet<(TaskId, u32)>,
}

impl LoadedJobs {
    fn fold(
        self,
        fold: impl FnOnce(Vec<JobRow>, Vec<TaskRow>, Vec<AttemptRow>) -> JobsChanges,
    ) -> FoldedJobs {
        let stored = self.tasks.iter().map(|r| r.id).collect();
        let stored_attempts = self.attempts.iter().map(|r| (r.task_id, r.seq)).collect();
        FoldedJobs {
            changes: fold(self.jobs, self.tasks, self.attempts),
            stored,
            stored_attempts,
        }
    }
}

async fn load_jobs<D: ReadDialect>(
    conn: &mut D::Connection,
    target: Target,
    keys: JobsKeys,
    implied_attempts: fn(&TaskRow) -> Option<Vec<AttemptRow>>,
) -> ReadModelResult<LoadedJobs> {
    let t = target.index();
    let jobs = if keys.jobs.is_empty() {
        Vec::new()
    } else {
        let ids = keys.jobs.iter().map(JobId::as_uuid).collect();
        let rows = sqlx::query::<D>(D::LOAD_JOBS[t])
            .ids(ids)
            .all(D::conn(conn))
            .await?;
        rows.iter()
            .map(job_row::<D>)
            .collect::<ReadModelResult<Vec<_>>>()?
    };
    let mut tasks = if keys.tasks.is_empty() {
        Vec::new()
    } else {
        let ids = keys.tasks.iter().map(TaskId::as_uuid).collect();
        let rows = sqlx::query::<D>(D::LOAD_TASKS[t])
            .ids(ids)
            .all(D::conn(conn))
            .await?;
        rows.iter()
            .map(task_row::<D>)
            .collect::<ReadModelResult<Vec<_>>>()?
    };
    // Only loaded tasks have attempts (a task without a row has none), and of those only the
    // ones their row does not imply are read.
    let mut attempts = Vec::new();
    let mut unknown = Vec::new();
    for row in &tasks {
        match implied_attempts(row) {
            Some(implied) => attempts.extend(implied),
            None => unknown.push(row.id.as_uuid()),
        }
    }
    if !unknown.is_empty() {
        let rows = sqlx::query::<D>(D::LOAD_ATTEMPTS[t])
            .ids(unknown)
            .all(D::conn(conn))
            .await?;
        for row in &rows {
            attempts.push(attempt_row::<D>(row)?);
        }
    }
    tasks.extend(keys.known_tasks);
    attempts.extend(keys.known_attempts);
    Ok(LoadedJobs {
        jobs,
        tasks,
        attempts,
    })
}

pub(crate) async fn apply_analytics<D: ReadDialect>(
    pool: &Pool<D>,
    target: Target,
    from: LogPosition,
    to: LogPosition,
    job_ids: &[JobId],
    fold: impl FnOnce(Vec<AnalyticsJobState>) -> AnalyticsChanges,
) -> ReadModelResult<AnalyticsChanges> {
    let name = ProjectionName::Analytics.checkpoint_name(target);
    let t = target.index();
    let mut tx = D::begin_write(pool).await?;
    if !fence::<D>(&mut tx, name, from, to).await? {
        tx.rollback().await?;
        return Err(ReadModelError::Fenced { name });
    }
    let states = if job_ids.is_empty() {
        Vec::new()
    } else {
        let ids = job_ids.iter().map(JobId::as_uuid).collect();
        let rows = sqlx::query::<D>(D::LOAD_JOB_STATES[t])
            .ids(ids)
            .all(D::conn(&mut tx))
            .await?;
        rows.iter()
            .map(job_state_row::<D>)
            .collect::<ReadModelResult<Vec<_>>>()?
    };
    let changes = fold(states);
    D::write_analytics(&mut tx, target, &changes).await?;
    if !changes.jobs_by_status.is_empty() {
        sqlx::query::<D>(DROP_ZERO_JOB_STATUSES[t])
            .run(D::conn(&mut tx))
            .await?;
    }
    if !changes.tasks_by_status.is_empty() {
        sqlx::query::<D>(DROP_ZERO_TASK_STATUSES[t])
            .run(D::conn(&mut tx))
            .await?;
    }
    tx.commit().await?;
    Ok(changes)
}

// ---------------------------------------------------------------------------------------------
// Rebuild

pub(crate) async fn prepare_rebuild<D: ReadDialect>(
    pool: &Pool<D>,
    projection: ProjectionName,
) -> ReadModelResult<()> {
    let mut tx = D::begin_write(pool).await?;
    sqlx::raw_sql(D::prepare_ddl(projection))
        .execute(D::conn(&mut tx))
        .await?;
    sqlx::query::<D>("DELETE FROM checkpoints WHERE name = $1")
        .arg(projection.checkpoint_name(Target::Rebuild))
        .run(D::conn(&mut tx))
        .await?;
    tx.commit().await?;
    Ok(())
}

pub(crate) async fn swap_rebuild<D: ReadDialect>(
    pool: &Pool<D>,
    projection: ProjectionName,
    at: LogPosition,
) -> ReadModelResult<()> {
    let mut tx = D::begin_write(pool).await?;
    // The live checkpoint's row lock first, as every batch takes it first: a batch in flight
    // finishes before the swap, and a batch after it finds the checkpoint moved (fenced).
    sqlx::query::<D>(D::CHECKPOINT.set)
        .arg(projection.checkpoint_name(Target::Live))
        .arg(at.commit)
        .arg(at.position)
        .run(D::conn(&mut tx))
        .await?;
    let rebuilt = sqlx::query::<D>(
        "DELETE FROM checkpoints WHERE name = $1 AND commit_id = $2 AND position = $3",
    )
    .arg(projection.checkpoint_name(Target::Rebuild))
    .arg(at.commit)
    .arg(at.position)
    .run(D::conn(&mut tx))
    .await?;
    if rebuilt != 1 && at != LogPosition::START {
        tx.rollback().await?;
        return Err(ReadModelError::Fenced {
            name: projection.checkpoint_name(Target::Rebuild),
        });
    }
    sqlx::raw_sql(D::swap_ddl(projection))
        .execute(D::conn(&mut tx))
        .await?;
    tx.commit().await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Rows

fn job_row<D: ReadDialect>(row: &D::Row) -> ReadModelResult<JobRow> {
    let n =
        |i: usize, column: &str| -> ReadModelResult<u32> { count(col::<D, _>(row, i)?, column) };
    Ok(JobRow {
        id: JobId::from_uuid(D::get_id(row, 0)?),
        job_type: col::<D, _>(row, 1)?,
        status: job_status(col::<D, _>(row, 2)?)?,
        stream_status: job_status(col::<D, _>(row, 3)?)?,
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
        parameters: D::get_json(row, 12)?.unwrap_or(Value::Null),
        max_attempts: n(13, "max_attempts")?,
        timeout_seconds: n(14, "timeout_seconds")?,
        created_at: required_time::<D>(row, 15)?,
        updated_at: required_time::<D>(row, 16)?,
        started_at: D::get_time(row, 17)?,
        completed_at: D::get_time(row, 18)?,
        error_message: col::<D, _>(row, 19)?,
        cancel_reason: col::<D, _>(row, 20)?,
        priority: col::<D, _>(row, 21)?,
    })
}

fn task_row<D: ReadDialect>(row: &D::Row) -> ReadModelResult<TaskRow> {
    let n =
        |i: usize, column: &str| -> ReadModelResult<u32> { count(col::<D, _>(row, i)?, column) };
    Ok(TaskRow {
        id: TaskId::from_uuid(D::get_id(row, 0)?),
        job_id: JobId::from_uuid(D::get_id(row, 1)?),
        task_index: n(2, "task_index")?,
        job_type: col::<D, _>(row, 3)?,
        status: task_status(col::<D, _>(row, 4)?)?,
        attempt: n(5, "attempt")?,
        max_attempts: n(6, "max_attempts")?,
        timeout_seconds: n(7, "timeout_seconds")?,
        parameters: D::get_json(row, 8)?.unwrap_or(Value::Null),
        result: D::get_json(row, 9)?,
        error_message: col::<D, _>(row, 10)?,
        worker: col::<D, _>(row, 11)?,
        created_at: required_time::<D>(row, 12)?,
        updated_at: required_time::<D>(row, 13)?,
        started_at: D::get_time(row, 14)?,
        completed_at: D::get_time(row, 15)?,
        next_attempt_at: D::get_time(row, 16)?,
        duration_ms: col::<D, Option<i64>>(row, 17)?.map(|ms| u64::try_from(ms).unwrap_or(0)),
        dead_lettered: col::<D, _>(row, 18)?,
    })
}

/// A time stored as whole microseconds since the epoch (`task_attempts`).
fn micros_time(us: i64) -> ReadModelResult<DateTime<Utc>> {
    DateTime::from_timestamp_micros(us)
        .ok_or_else(|| ReadModelError::Corrupt(format!("a time of {us} microseconds")))
}

pub(crate) fn attempt_row<D: ReadDialect>(row: &D::Row) -> ReadModelResult<AttemptRow> {
    let n =
        |i: usize, column: &str| -> ReadModelResult<u32> { count(col::<D, _>(row, i)?, column) };
    let ms = |i: usize| -> ReadModelResult<Option<u64>> {
        Ok(col::<D, Option<i64>>(row, i)?.map(|ms| u64::try_from(ms).unwrap_or(0)))
    };
    let time = |i: usize| -> ReadModelResult<Option<DateTime<Utc>>> {
        col::<D, Option<i64>>(row, i)?.map(micros_time).transpose()
    };
    let outcome: String = col::<D, _>(row, 11)?;
    let retry = match (
        time(13)?,
        time(14)?,
        ms(15)?,
        col::<D, Option<bool>>(row, 16)?,
    ) {
        (Some(at), Some(not_before), Some(backoff_ms), Some(manual)) => {
            Some(shoal_domain::RetryDecision {
                at,
                not_before,
                backoff_ms,
                manual,
            })
        }
        _ => None,
    };
    Ok(AttemptRow {
        task_id: TaskId::from_uuid(D::get_id(row, 0)?),
        seq: n(1, "seq")?,
        job_id: JobId::from_uuid(D::get_id(row, 2)?),
        task_index: n(3, "task_index")?,
        attempt: shoal_domain::Attempt {
            attempt: n(4, "attempt")?,
            queued_at: micros_time(col::<D, i64>(row, 5)?)?,
            not_before: time(6)?,
            worker: col::<D, _>(row, 7)?,
            started_at: time(8)?,
            ended_at: time(9)?,
            duration_ms: ms(10)?,
            outcome: parse_outcome(&outcome)
                .ok_or_else(|| ReadModelError::Corrupt(format!("attempt outcome {outcome:?}")))?,
            error: col::<D, _>(row, 12)?,
            retry,
            dead_letter_reason: col::<D, _>(row, 17)?,
        },
    })
}

fn job_state_row<D: ReadDialect>(row: &D::Row) -> ReadModelResult<AnalyticsJobState> {
    Ok(AnalyticsJobState {
        job_id: JobId::from_uuid(D::get_id(row, 0)?),
        stream_status: job_status(col::<D, _>(row, 1)?)?,
        total_tasks: count(col::<D, _>(row, 2)?, "total_tasks")?,
        created_upto: count(col::<D, _>(row, 3)?, "created_upto")?,
        started: col::<D, _>(row, 4)?,
    })
}

fn required_time<D: Dialect>(row: &D::Row, index: usize) -> ReadModelResult<DateTime<Utc>> {
    D::get_time(row, index)?
        .ok_or_else(|| ReadModelError::Corrupt(format!("a NULL time in column {index}")))
}

// ---------------------------------------------------------------------------------------------
// Queries

/// Binds the filter's `$1`..`$5` (see `query_sql!`).
fn bind_filter<'q, D: ReadDialect>(
    query: crate::dialect::Q<'q, D>,
    filter: &'q JobFilter,
) -> crate::dialect::Q<'q, D> {
    query
        .strs(filter.statuses.iter().map(|s| s.as_str()).collect())
        .arg(filter.job_type.as_deref())
        .time(filter.created_from)
        .time(filter.created_to)
        .arg(search_pattern(filter.search.as_deref()))
}

fn job_rows<D: ReadDialect>(rows: Vec<D::Row>) -> ReadModelResult<Vec<JobRow>> {
    rows.iter().map(job_row::<D>).collect()
}

fn task_rows<D: ReadDialect>(rows: Vec<D::Row>) -> ReadModelResult<Vec<TaskRow>> {
    rows.iter().map(task_row::<D>).collect()
}

pub(crate) async fn get_job<D: ReadDialect>(
    pool: &Pool<D>,
    id: JobId,
) -> ReadModelResult<Option<JobRow>> {
    let row = sqlx::query::<D>(GET_JOB)
        .id(id.as_uuid())
        .optional(D::pool(pool))
        .await?;
    row.as_ref().map(job_row::<D>).transpose()
}

pub(crate) async fn list_jobs<D: ReadDialect>(
    pool: &Pool<D>,
    filter: &JobFilter,
    sort: JobSort,
    after: Option<JobCursor>,
    limit: i64,
) -> ReadModelResult<Vec<JobRow>> {
    let query = bind_filter::<D>(
        sqlx::query(match sort {
            JobSort::Newest => D::QUERIES.list_newest,
            JobSort::Oldest => D::QUERIES.list_oldest,
            JobSort::Priority => D::QUERIES.list_priority,
        }),
        filter,
    )
    .time(after.map(|c| c.created_at));
    let query = match sort {
        JobSort::Newest | JobSort::Oldest => query,
        JobSort::Priority => query.arg(after.map(|c| i64::from(c.priority.unwrap_or_default()))),
    };
    let rows = query
        .opt_id(after.map(|c| c.id.as_uuid()))
        .arg(limit)
        .all(D::pool(pool))
        .await?;
    job_rows::<D>(rows)
}

pub(crate) async fn page_jobs<D: ReadDialect>(
    pool: &Pool<D>,
    filter: &JobFilter,
    sort: JobSort,
    offset: i64,
    limit: i64,
) -> ReadModelResult<(Vec<JobRow>, i64)> {
    let sql = match sort {
        JobSort::Newest => D::QUERIES.page_newest,
        JobSort::Oldest => D::QUERIES.page_oldest,
        JobSort::Priority => D::QUERIES.page_priority,
    };
    let total = bind_filter::<D>(sqlx::query(D::QUERIES.count_jobs), filter)
        .optional(D::pool(pool))
        .await?
        .ok_or(sqlx::Error::RowNotFound)?;
    let total: i64 = col::<D, _>(&total, 0)?;
    let rows = bind_filter::<D>(sqlx::query(sql), filter)
        .arg(limit)
        .arg(offset)
        .all(D::pool(pool))
        .await?;
    Ok((job_rows::<D>(rows)?, total))
}

pub(crate) async fn tasks_of_job<D: ReadDialect>(
    pool: &Pool<D>,
    job_id: JobId,
    statuses: &[&str],
    after_index: Option<u32>,
    limit: i64,
) -> ReadModelResult<Vec<TaskRow>> {
    let rows = sqlx::query::<D>(D::QUERIES.tasks_of_job)
        .id(job_id.as_uuid())
        .strs(statuses.to_vec())
        .arg(after_index.map_or(-1, i64::from))
        .arg(limit)
        .all(D::pool(pool))
        .await?;
    task_rows::<D>(rows)
}

pub(crate) async fn page_tasks_of_job<D: ReadDialect>(
    pool: &Pool<D>,
    job_id: JobId,
    statuses: &[&str],
    offset: i64,
    limit: i64,
) -> ReadModelResult<(Vec<TaskRow>, i64)> {
    let total = sqlx::query::<D>(D::QUERIES.count_tasks_of_job)
        .id(job_id.as_uuid())
        .strs(statuses.to_vec())
        .optional(D::pool(pool))
        .await?
        .ok_or(sqlx::Error::RowNotFound)?;
    let total: i64 = col::<D, _>(&total, 0)?;
    let rows = sqlx::query::<D>(D::QUERIES.page_tasks_of_job)
        .id(job_id.as_uuid())
        .strs(statuses.to_vec())
        .arg(limit)
        .arg(offset)
        .all(D::pool(pool))
        .await?;
    Ok((task_rows::<D>(rows)?, total))
}

pub(crate) async fn get_task<D: ReadDialect>(
    pool: &Pool<D>,
    id: TaskId,
) -> ReadModelResult<Option<TaskRow>> {
    let row = sqlx::query::<D>(GET_TASK)
        .id(id.as_uuid())
        .optional(D::pool(pool))
        .await?;
    row.as_ref().map(task_row::<D>).transpose()
}

/// `(key, count)` pairs from `sql`.
async fn pairs<D: Dialect>(
    pool: &Pool<D>,
    sql: &'static str,
) -> ReadModelResult<Vec<(String, i64)>> {
    let rows = sqlx::query::<D>(sql).all(D::pool(pool)).await?;
    rows.iter()
        .map(|row| Ok((col::<D, _>(row, 0)?, col::<D, _>(row, 1)?)))
        .collect()
}

pub(crate) async fn counts<D: Dialect>(
    pool: &Pool<D>,
    table: &'static str,
) -> ReadModelResult<Vec<(String, i64)>> {
    pairs(pool, super::counts_sql(table)).await
}

pub(crate) async fn daily<D: ReadDialect>(
    pool: &Pool<D>,
    from: NaiveDate,
    to: NaiveDate,
) -> ReadModelResult<Vec<DayCounts>> {
    let query = sqlx::query::<D>(
        "SELECT day, jobs_submitted, tasks_completed, tasks_failed FROM analytics_daily
         WHERE day >= $1 AND day <= $2 ORDER BY day",
    );
    let rows = D::bind_day(D::bind_day(query, from), to)
        .all(D::pool(pool))
        .await?;
    rows.iter()
        .map(|row| {
            Ok(DayCounts {
                date: D::get_day(row, 0)?,
                jobs_submitted: col::<D, _>(row, 1)?,
                tasks_completed: col::<D, _>(row, 2)?,
                tasks_failed: col::<D, _>(row, 3)?,
            })
        })
        .collect()
}

pub(crate) async fn throughput<D: ReadDialect>(
    pool: &Pool<D>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> ReadModelResult<Vec<MinuteCounts>> {
    let rows = sqlx::query::<D>(
        "SELECT minute, tasks_completed, tasks_failed FROM analytics_throughput
         WHERE minute >= $1 AND minute <= $2 ORDER BY minute",
    )
    .time(Some(from))
    .time(Some(to))
    .all(D::pool(pool))
    .await?;
    rows.iter()
        .map(|row| {
            Ok(MinuteCounts {
                minute: required_time::<D>(row, 0)?,
                tasks_completed: col::<D, _>(row, 1)?,
                tasks_failed: col::<D, _>(row, 2)?,
            })
        })
        .collect()
}

/// The processing-time totals `(count, sum_ms, min_ms, max_ms)` and histogram buckets.
pub(crate) type Processing = (Option<(i64, i64, i64, i64)>, Vec<(u32, i64)>);

pub(crate) async fn processing<D: Dialect>(pool: &Pool<D>) -> ReadModelResult<Processing> {
    let row = sqlx::query::<D>(
        "SELECT count, sum_ms, min_ms, max_ms FROM analytics_processing_time WHERE id = 1",
    )
    .optional(D::pool(pool))
    .await?;
    let totals = row
        .map(|row| -> sqlx::Result<_> {
            Ok((
                col::<D, _>(&row, 0)?,
                col::<D, _>(&row, 1)?,
                col::<D, _>(&row, 2)?,
                col::<D, _>(&row, 3)?,
            ))
        })
        .transpose()?;
    let buckets = sqlx::query::<D>(
        "SELECT bucket, count FROM analytics_processing_time_buckets ORDER BY bucket",
    )
    .all(D::pool(pool))
    .await?
    .iter()
    .map(|row| {
        let bucket: i32 = col::<D, _>(row, 0)?;
        Ok((u32::try_from(bucket).unwrap_or(0), col::<D, _>(row, 1)?))
    })
    .collect::<sqlx::Result<Vec<_>>>()?;
    Ok((totals, buckets))
}

#[cfg(feature = "testing")]
pub(crate) async fn dump<D: ReadDialect>(
    pool: &Pool<D>,
) -> ReadModelResult<super::types::ReadModelDump> {
    use super::types::ReadModelDump;
    let rows = sqlx::query::<D>(concat!("SELECT ", job_columns!(), " FROM jobs ORDER BY id"))
        .all(D::pool(pool))
        .await?;
    let jobs = job_rows::<D>(rows)?;
    let rows = sqlx::query::<D>(concat!(
        "SELECT ",
        task_columns!(),
        " FROM tasks ORDER BY id"
    ))
    .all(D::pool(pool))
    .await?;
    let tasks = task_rows::<D>(rows)?;
    let rows = sqlx::query::<D>(
        "SELECT job_id, stream_status, total_tasks, created_upto, started
         FROM analytics_job_state ORDER BY job_id",
    )
    .all(D::pool(pool))
    .await?;
    let job_states = rows
        .iter()
        .map(job_state_row::<D>)
        .collect::<ReadModelResult<Vec<_>>>()?;
    let jobs_by_type = pairs(
        pool,
        "SELECT job_type, count FROM analytics_jobs_by_type ORDER BY job_type",
    )
    .await?;
    let jobs_by_status = pairs(
        pool,
        "SELECT status, count FROM analytics_jobs_by_status ORDER BY status",
    )
    .await?;
    let tasks_by_status = pairs(
        pool,
        "SELECT status, count FROM analytics_tasks_by_status ORDER BY status",
    )
    .await?;
    let (first, last) = super::dump_range();
    let daily = daily(pool, first.date_naive(), last.date_naive()).await?;
    let (processing, buckets) = processing(pool).await?;
    let throughput = throughput(pool, first, last).await?;
    let rows = sqlx::query::<D>(concat!(
        "SELECT ",
        attempt_columns!(),
        " FROM task_attempts ORDER BY task_id, seq"
    ))
    .all(D::pool(pool))
    .await?;
    let attempts = rows
        .iter()
        .map(attempt_row::<D>)
        .collect::<ReadModelResult<Vec<_>>>()?;
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
        attempts,
    })
}
