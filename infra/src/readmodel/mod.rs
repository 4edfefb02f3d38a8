//! The read model: the tables the projector folds the log into (`jobs`, `tasks`,
//! `task_attempts`, `analytics_*`), the batch writes that keep them, the rebuild's shadow tables and swap, and
//! the queries the APIs answer from them.
//!
//! Contract of the writes ([`ReadModelStore::apply_jobs`], [`ReadModelStore::apply_analytics`]):
//! one transaction per batch that first moves the projection's checkpoint from where the
//! caller last left it (`from`) to the batch's last event (`to`), then reads the rows the
//! batch touches, hands them to the caller's pure fold, and writes what the fold returns (one
//! upsert per table). If the checkpoint is not at `from` (another projector process, or a
//! rebuild that swapped its tables in), nothing is written and the result is
//! [`ReadModelError::Fenced`]: reload the checkpoint and carry on from there. Taking the
//! checkpoint first also serializes every writer of a projection, so a read-modify-write can
//! never interleave with another.
//!
//! The SQL is static: the table names of live and shadow tables are spelled out at compile
//! time (`concat!`), never assembled from input.

mod change;
mod parked;
mod postgres;
mod schema;
mod sql;
mod sqlite;
mod timeline;
mod types;

pub use change::{ChangeSource, ProjectionChange};
pub use parked::ParkedEvent;
pub use timeline::{
    AttemptDurations, AttemptWindow, AttemptsOverview, BucketDiff, BucketGrid, BucketLane,
};
pub use types::{
    AnalyticsChanges, AnalyticsJobState, AttemptRow, DailyDelta, DayCounts, InvalidCursor,
    JobCursor, JobFilter, JobPage, JobRow, JobSort, JobsChanges, JobsKeys, MinuteCounts, Overview,
    ProcessingDelta, ProcessingTimeStats, ProjectionName, ReadModelDump, Target, TaskRow,
    ThroughputDelta, UnknownProjection, apply_to_attempts, histogram, outcome_str, parse_outcome,
    supported_time, to_micros,
};

use chrono::{DateTime, Duration, DurationRound, Utc};
use shoal_domain::{JobId, JobStatus, TaskId, TaskStatus};

use crate::db::Database;
use crate::dialect::on_pool;
use crate::eventlog::{LogError, LogPosition};

use self::sql::ReadDialect;

/// What went wrong, and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ReadModelError {
    /// The projection's checkpoint is not where this writer left it: another writer (a
    /// rebuild's swap, another projector process) moved it. Nothing was written. Reload the
    /// checkpoint and continue from there; not an error of the data.
    #[error("the checkpoint {name:?} was moved by another writer")]
    Fenced { name: &'static str },
    /// A stored value is not what this build writes (a newer or damaged schema). Rebuilding
    /// the projection may help; retrying does not.
    #[error("read model is corrupt: {0}")]
    Corrupt(String),
    /// A checkpoint name the event log refused (a programming error).
    #[error("checkpoint error: {0}")]
    Checkpoint(String),
    /// The database failed; a write either committed entirely or not at all. Retry later.
    #[error("read model database error: {0}")]
    Database(#[from] sqlx::Error),
}

pub type ReadModelResult<T> = Result<T, ReadModelError>;

fn log_error(error: LogError) -> ReadModelError {
    match error {
        LogError::Database(e) => ReadModelError::Database(e),
        other => ReadModelError::Checkpoint(other.to_string()),
    }
}

/// The analytics count tables, for the `counts` queries of the backends.
mod tables {
    pub const JOBS_BY_TYPE: &str = "analytics_jobs_by_type";
    pub const JOBS_BY_STATUS: &str = "analytics_jobs_by_status";
    pub const TASKS_BY_STATUS: &str = "analytics_tasks_by_status";
}

fn count(value: i64, column: &str) -> ReadModelResult<u32> {
    u32::try_from(value).map_err(|_| ReadModelError::Corrupt(format!("{column} = {value}")))
}

fn job_status(text: String) -> ReadModelResult<JobStatus> {
    text.parse()
        .map_err(|_| ReadModelError::Corrupt(format!("job status {text:?}")))
}

fn task_status(text: String) -> ReadModelResult<TaskStatus> {
    text.parse()
        .map_err(|_| ReadModelError::Corrupt(format!("task status {text:?}")))
}

/// A `LIKE`/`ILIKE` pattern for a case-insensitive substring search; `None` for no search.
fn search_pattern(search: Option<&str>) -> Option<String> {
    let text = search.map(str::trim).filter(|s| !s.is_empty())?;
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.to_lowercase().chars() {
        if matches!(c, '\\' | '%' | '_') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    Some(pattern)
}

/// The time range a dump covers (everything both backends can store).
#[cfg(feature = "testing")]
fn dump_range() -> (DateTime<Utc>, DateTime<Utc>) {
    use chrono::NaiveDate;
    let first = NaiveDate::from_ymd_opt(1, 1, 1).unwrap_or_default();
    let last = NaiveDate::from_ymd_opt(9999, 12, 31).unwrap_or_default();
    (
        first.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc(),
        last.and_hms_opt(23, 59, 59).unwrap_or_default().and_utc(),
    )
}

/// The query of one analytics counter table (`tables::*`), the same in both dialects: its
/// non-zero counters, largest first for job types, by status otherwise.
fn counts_sql(table: &str) -> &'static str {
    match table {
        tables::JOBS_BY_TYPE => {
            "SELECT job_type, count FROM analytics_jobs_by_type WHERE count <> 0
             ORDER BY count DESC, job_type"
        }
        tables::JOBS_BY_STATUS => {
            "SELECT status, count FROM analytics_jobs_by_status WHERE count <> 0 ORDER BY status"
        }
        _ => "SELECT status, count FROM analytics_tasks_by_status WHERE count <> 0 ORDER BY status",
    }
}

/// Most rows one list query returns.
pub const MAX_PAGE: i64 = 1000;

/// The read tables on the Postgres or SQLite database. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ReadModelStore {
    database: Database,
}

/// Runs `sql::$f` (generic over the dialect) on the store's database.
macro_rules! dispatch {
    ($self:ident, $f:ident($($arg:expr),*)) => {
        on_pool!(&$self.database, pool => sql::$f(pool $(, $arg)*).await)
    };
}

impl ReadModelStore {
    pub fn new(database: Database) -> Self {
        ReadModelStore { database }
    }

    pub fn database(&self) -> &Database {
        &self.database
    }

    /// Where a projection's live tables or its rebuild are (`START` when never written).
    pub async fn checkpoint(
        &self,
        projection: ProjectionName,
        target: Target,
    ) -> ReadModelResult<LogPosition> {
        let name = projection.checkpoint_name(target);
        dispatch!(self, checkpoint(name))
    }

    /// Whether a rebuild of `projection` has started and not been swapped in.
    pub async fn rebuild_checkpoint(
        &self,
        projection: ProjectionName,
    ) -> ReadModelResult<Option<LogPosition>> {
        let name = projection.checkpoint_name(Target::Rebuild);
        dispatch!(self, rebuild_checkpoint(name))
    }

    /// Applies one batch of the jobs projection (see the module docs): moves the checkpoint
    /// `from` -> `to`, loads the rows of `keys` (jobs, tasks, and the attempts of the loaded
    /// tasks, except those `implied_attempts` gives from a task's row: they are taken as
    /// stored), and writes what `fold` makes of them and of the rows the caller knows
    /// (`keys.known_*`). Returns what was written.
    #[tracing::instrument(
        name = "readmodel.apply_jobs",
        skip_all,
        fields(?target, to.commit = to.commit, to.position = to.position),
        err(level = "debug")
    )]
    pub async fn apply_jobs(
        &self,
        target: Target,
        from: LogPosition,
        to: LogPosition,
        keys: JobsKeys,
        implied_attempts: fn(&TaskRow) -> Option<Vec<AttemptRow>>,
        fold: impl FnOnce(Vec<JobRow>, Vec<TaskRow>, Vec<AttemptRow>) -> JobsChanges + Send,
    ) -> ReadModelResult<JobsChanges> {
        dispatch!(
            self,
            apply_jobs(target, from, to, keys, implied_attempts, fold)
        )
    }

    /// Applies one batch of the analytics projection: moves the checkpoint `from` -> `to`,
    /// loads the job states of `job_ids`, and writes what `fold` makes of them (state rows
    /// whole, counters as deltas).
    #[tracing::instrument(
        name = "readmodel.apply_analytics",
        skip_all,
        fields(?target, to.commit = to.commit, to.position = to.position),
        err(level = "debug")
    )]
    pub async fn apply_analytics(
        &self,
        target: Target,
        from: LogPosition,
        to: LogPosition,
        job_ids: &[JobId],
        fold: impl FnOnce(Vec<AnalyticsJobState>) -> AnalyticsChanges + Send,
    ) -> ReadModelResult<AnalyticsChanges> {
        dispatch!(self, apply_analytics(target, from, to, job_ids, fold))
    }

    /// Starts a rebuild: empty shadow tables, and no rebuild checkpoint (a rebuild left
    /// half-done by a crash is thrown away).
    #[tracing::instrument(name = "readmodel.prepare_rebuild", skip_all, fields(%projection), err)]
    pub async fn prepare_rebuild(&self, projection: ProjectionName) -> ReadModelResult<()> {
        dispatch!(self, prepare_rebuild(projection))
    }

    /// Creates the shadow tables' secondary indexes (Postgres; on SQLite the swap does). Call
    /// it once the bulk of the log is replayed, before the last catch-up and the swap.
    pub async fn index_rebuild(&self, projection: ProjectionName) -> ReadModelResult<()> {
        match &self.database {
            Database::Postgres(pool) => postgres::index_rebuild(pool, projection).await,
            Database::Sqlite(_) => Ok(()),
        }
    }

    /// Swaps the shadow tables in, in one transaction: the live checkpoint becomes `at` (the
    /// rebuild's checkpoint, which must be there: `Fenced` otherwise), the old tables are
    /// dropped and the shadows take their names. A live projector's next batch is then
    /// `Fenced` and continues from `at`.
    #[tracing::instrument(name = "readmodel.swap_rebuild", skip_all, fields(%projection), err)]
    pub async fn swap_rebuild(
        &self,
        projection: ProjectionName,
        at: LogPosition,
    ) -> ReadModelResult<()> {
        dispatch!(self, swap_rebuild(projection, at))
    }

    /// How many events are stored after `after` (exact on SQLite; on Postgres it includes
    /// events of transactions still in flight).
    pub async fn count_events_after(&self, after: LogPosition) -> ReadModelResult<u64> {
        on_pool!(&self.database, pool => ReadDialect::count_events_after(pool, after).await)
    }

    // -----------------------------------------------------------------------------------------
    // Queries

    /// A job by id.
    pub async fn get_job(&self, id: JobId) -> ReadModelResult<Option<JobRow>> {
        dispatch!(self, get_job(id))
    }

    /// A page of jobs after `after` (cursor pagination), at most `limit` (clamped to
    /// 1..=[`MAX_PAGE`]).
    pub async fn list_jobs(
        &self,
        filter: &JobFilter,
        sort: JobSort,
        after: Option<JobCursor>,
        limit: i64,
    ) -> ReadModelResult<JobPage> {
        let limit = limit.clamp(1, MAX_PAGE);
        let mut jobs = dispatch!(self, list_jobs(filter, sort, after, limit + 1))?;
        let more = jobs.len() as i64 > limit;
        jobs.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let next = if more {
            jobs.last().map(|job| JobCursor::after_in(job, sort))
        } else {
            None
        };
        Ok(JobPage { jobs, next })
    }

    /// Page `page` (from 1) of `page_size` jobs, and how many jobs match in all (the REST
    /// list). `page_size` is clamped to 1..=[`MAX_PAGE`].
    pub async fn page_jobs(
        &self,
        filter: &JobFilter,
        sort: JobSort,
        page: u32,
        page_size: u32,
    ) -> ReadModelResult<(Vec<JobRow>, i64)> {
        let limit = i64::from(page_size).clamp(1, MAX_PAGE);
        let offset = i64::from(page.max(1) - 1).saturating_mul(limit);
        dispatch!(self, page_jobs(filter, sort, offset, limit))
    }

    /// The newest `limit` jobs.
    pub async fn recent_jobs(&self, limit: i64) -> ReadModelResult<Vec<JobRow>> {
        Ok(self
            .list_jobs(&JobFilter::default(), JobSort::Newest, None, limit)
            .await?
            .jobs)
    }

    /// A job's tasks in index order after `after_index`, any of `statuses` (all when empty),
    /// at most `limit` (clamped to 1..=[`MAX_PAGE`]).
    pub async fn tasks_of_job(
        &self,
        job_id: JobId,
        statuses: &[TaskStatus],
        after_index: Option<u32>,
        limit: i64,
    ) -> ReadModelResult<Vec<TaskRow>> {
        let statuses: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
        let limit = limit.clamp(1, MAX_PAGE);
        dispatch!(self, tasks_of_job(job_id, &statuses, after_index, limit))
    }

    /// `limit` of a job's tasks in index order from `offset`, and how many match in all.
    /// `limit` is not clamped: the REST API has its own cap.
    pub async fn page_tasks_of_job(
        &self,
        job_id: JobId,
        statuses: &[TaskStatus],
        offset: i64,
        limit: i64,
    ) -> ReadModelResult<(Vec<TaskRow>, i64)> {
        let statuses: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
        dispatch!(
            self,
            page_tasks_of_job(job_id, &statuses, offset.max(0), limit.max(0))
        )
    }

    /// A task by id.
    pub async fn get_task(&self, id: TaskId) -> ReadModelResult<Option<TaskRow>> {
        dispatch!(self, get_task(id))
    }

    /// How many of a job's tasks have their attempts in `task_attempts`, and its lanes (ADR
    /// 18). Fewer tasks than the job has created: some predate the table (until a rebuild).
    pub async fn attempts_overview(&self, job_id: JobId) -> ReadModelResult<AttemptsOverview> {
        on_pool!(&self.database, pool => timeline::overview(pool, job_id).await)
    }

    /// The workers that started some attempt of a job (unordered).
    pub async fn attempt_workers(&self, job_id: JobId) -> ReadModelResult<Vec<String>> {
        on_pool!(&self.database, pool => timeline::workers(pool, job_id).await)
    }

    /// How many attempts a window holds, and their durations.
    pub async fn attempt_durations(
        &self,
        window: &AttemptWindow,
    ) -> ReadModelResult<AttemptDurations> {
        on_pool!(&self.database, pool => timeline::durations(pool, window).await)
    }

    /// The attempts of a window, by task index then `seq`, at most `limit`.
    pub async fn attempts_in_window(
        &self,
        window: &AttemptWindow,
        limit: i64,
    ) -> ReadModelResult<Vec<AttemptRow>> {
        on_pool!(&self.database, pool => timeline::in_window(pool, window, limit).await)
    }

    /// What the slowest attempts of a window are among: the started ones without a duration
    /// (running: theirs depends on the window's end) or longer than `at`'s milliseconds, and
    /// the first `at`'s count of those of exactly that duration, in task order.
    pub async fn slowest_attempt_candidates(
        &self,
        window: &AttemptWindow,
        at: Option<(u64, u64)>,
    ) -> ReadModelResult<Vec<AttemptRow>> {
        on_pool!(&self.database, pool => timeline::slowest(pool, window, at).await)
    }

    /// The window's started attempts counted into `grid`, as differences along each row (see
    /// [`BucketDiff`]): the aggregated timeline, counted by the database.
    pub async fn attempt_bucket_diffs(
        &self,
        window: &AttemptWindow,
        grid: BucketGrid,
    ) -> ReadModelResult<Vec<BucketDiff>> {
        on_pool!(&self.database, pool => timeline::bucket_diffs(pool, window, grid).await)
    }

    /// Jobs per type, most frequent first.
    pub async fn jobs_by_type(&self) -> ReadModelResult<Vec<(String, i64)>> {
        dispatch!(self, counts(tables::JOBS_BY_TYPE))
    }

    /// Jobs per displayed status, statuses present only.
    pub async fn jobs_by_status(&self) -> ReadModelResult<Vec<(JobStatus, i64)>> {
        dispatch!(self, counts(tables::JOBS_BY_STATUS))?
            .into_iter()
            .map(|(s, n)| Ok((job_status(s)?, n)))
            .collect()
    }

    /// Tasks per status, statuses present only.
    pub async fn tasks_by_status(&self) -> ReadModelResult<Vec<(TaskStatus, i64)>> {
        dispatch!(self, counts(tables::TASKS_BY_STATUS))?
            .into_iter()
            .map(|(s, n)| Ok((task_status(s)?, n)))
            .collect()
    }

    /// The REST overview.
    pub async fn overview(&self) -> ReadModelResult<Overview> {
        let jobs = self.jobs_by_status().await?;
        let tasks = self.tasks_by_status().await?;
        let stats = self.processing_time().await?;
        let job = |wanted: &[JobStatus]| -> i64 {
            jobs.iter()
                .filter(|(s, _)| wanted.contains(s))
                .map(|(_, n)| n)
                .sum()
        };
        let task = |wanted: &[TaskStatus]| -> i64 {
            tasks
                .iter()
                .filter(|(s, _)| wanted.contains(s))
                .map(|(_, n)| n)
                .sum()
        };
        let total_jobs = job(&JobStatus::ALL);
        let completed_jobs = job(&[JobStatus::Completed]);
        Ok(Overview {
            total_jobs,
            completed_jobs,
            failed_jobs: job(&[JobStatus::Failed]),
            running_jobs: job(&[JobStatus::Running]),
            pending_jobs: job(&[
                JobStatus::Pending,
                JobStatus::CreatingTasks,
                JobStatus::Enqueued,
            ]),
            cancelled_jobs: job(&[JobStatus::Cancelled]),
            success_rate: if total_jobs > 0 {
                completed_jobs as f64 * 100.0 / total_jobs as f64
            } else {
                0.0
            },
            total_tasks: task(&TaskStatus::ALL),
            completed_tasks: task(&[TaskStatus::Completed]),
            failed_tasks: task(&[TaskStatus::Failed]),
            running_tasks: task(&[TaskStatus::Running]),
            pending_tasks: task(&[TaskStatus::Pending, TaskStatus::Enqueued]),
            retrying_tasks: task(&[TaskStatus::Retrying]),
            avg_processing_time_seconds: stats.avg_seconds.unwrap_or(0.0),
            total_processing_time_seconds: stats.total_seconds,
        })
    }

    /// The last `days` UTC days up to `now`'s, oldest first, one entry per day (zeros
    /// included).
    pub async fn timeline(&self, days: u32, now: DateTime<Utc>) -> ReadModelResult<Vec<DayCounts>> {
        let last = now.date_naive();
        let first = last - Duration::days(i64::from(days.max(1)) - 1);
        let stored = dispatch!(self, daily(first, last))?;
        Ok(first
            .iter_days()
            .take_while(|d| *d <= last)
            .map(|date| {
                stored
                    .iter()
                    .find(|d| d.date == date)
                    .copied()
                    .unwrap_or(DayCounts {
                        date,
                        jobs_submitted: 0,
                        tasks_completed: 0,
                        tasks_failed: 0,
                    })
            })
            .collect())
    }

    /// Tasks completed and failed per minute over the last `minutes` minutes up to `now`'s,
    /// oldest first, one entry per minute (zeros included).
    pub async fn throughput(
        &self,
        minutes: u32,
        now: DateTime<Utc>,
    ) -> ReadModelResult<Vec<MinuteCounts>> {
        let last = now.duration_trunc(Duration::minutes(1)).unwrap_or(now);
        let minutes = i64::from(minutes.clamp(1, 7 * 24 * 60));
        let first = last - Duration::minutes(minutes - 1);
        let stored = dispatch!(self, throughput(first, last))?;
        Ok((0..minutes)
            .map(|i| {
                let minute = first + Duration::minutes(i);
                stored
                    .iter()
                    .find(|m| m.minute == minute)
                    .copied()
                    .unwrap_or(MinuteCounts {
                        minute,
                        tasks_completed: 0,
                        tasks_failed: 0,
                    })
            })
            .collect())
    }

    /// Processing-time statistics over every completed task.
    pub async fn processing_time(&self) -> ReadModelResult<ProcessingTimeStats> {
        let (row, buckets) = dispatch!(self, processing())?;
        let Some((count, sum_ms, min_ms, max_ms)) = row.filter(|r| r.0 > 0) else {
            return Ok(ProcessingTimeStats::default());
        };
        let (min, max) = (min_ms as f64, max_ms as f64);
        let q = |p: f64| histogram::quantile(&buckets, p, min, max).map(|ms| ms / 1000.0);
        Ok(ProcessingTimeStats {
            count,
            total_seconds: sum_ms as f64 / 1000.0,
            min_seconds: Some(min / 1000.0),
            max_seconds: Some(max / 1000.0),
            avg_seconds: Some(sum_ms as f64 / count as f64 / 1000.0),
            p50_seconds: q(0.5),
            p95_seconds: q(0.95),
            p99_seconds: q(0.99),
        })
    }

    /// Every row of the live tables, in a canonical order (tests).
    #[cfg(feature = "testing")]
    pub async fn dump(&self) -> ReadModelResult<ReadModelDump> {
        dispatch!(self, dump())
    }

    /// The columns and indexes of the live read tables, normalized (tests: a rebuild must
    /// leave the same schema as the migration).
    #[cfg(feature = "testing")]
    pub async fn schema_fingerprint(&self) -> ReadModelResult<Vec<String>> {
        let mut lines: Vec<String> = match &self.database {
            Database::Postgres(pool) => {
                let columns: Vec<(String, String, String, String)> = sqlx::query_as(
                    "SELECT table_name::text, column_name::text, data_type::text,
                            is_nullable::text
                     FROM information_schema.columns
                     WHERE table_schema = current_schema()
                       AND (table_name IN ('jobs', 'tasks', 'task_attempts')
                            OR table_name LIKE 'analytics%')",
                )
                .fetch_all(pool)
                .await?;
                let indexes: Vec<(String, String)> = sqlx::query_as(
                    "SELECT indexname::text, indexdef FROM pg_indexes
                     WHERE schemaname = current_schema()
                       AND (tablename IN ('jobs', 'tasks', 'task_attempts')
                            OR tablename LIKE 'analytics%')",
                )
                .fetch_all(pool)
                .await?;
                // Storage settings too (the fill factors that make updates HOT).
                let options: Vec<(String, String)> = sqlx::query_as(
                    "SELECT relname::text, coalesce(array_to_string(reloptions, ','), '')
                     FROM pg_class
                     WHERE relnamespace = current_schema()::regnamespace AND relkind = 'r'
                       AND (relname IN ('jobs', 'tasks', 'task_attempts')
                            OR relname LIKE 'analytics%')",
                )
                .fetch_all(pool)
                .await?;
                columns
                    .into_iter()
                    .map(|(t, c, ty, null)| format!("column {t}.{c} {ty} {null}"))
                    .chain(
                        indexes
                            .into_iter()
                            .map(|(name, def)| format!("index {name}: {def}")),
                    )
                    .chain(
                        options
                            .into_iter()
                            .map(|(table, options)| format!("table {table}: {options}")),
                    )
                    .collect()
            }
            Database::Sqlite(pool) => {
                let columns: Vec<(String, String, String, i64, i64)> = sqlx::query_as(
                    "SELECT m.name, p.name, p.type, p.\"notnull\", p.pk
                     FROM sqlite_master m, pragma_table_info(m.name) p
                     WHERE m.type = 'table'
                       AND (m.name IN ('jobs', 'tasks', 'task_attempts')
                            OR m.name LIKE 'analytics%')",
                )
                .fetch_all(pool)
                .await?;
                let indexes: Vec<(String, String, String)> = sqlx::query_as(
                    "SELECT m.name, m.tbl_name, group_concat(i.name, ',')
                     FROM sqlite_master m, pragma_index_info(m.name) i
                     WHERE m.type = 'index'
                       AND (m.tbl_name IN ('jobs', 'tasks', 'task_attempts')
                            OR m.tbl_name LIKE 'analytics%')
                     GROUP BY m.name, m.tbl_name",
                )
                .fetch_all(pool)
                .await?;
                columns
                    .into_iter()
                    .map(|(t, c, ty, nn, pk)| format!("column {t}.{c} {ty} {nn} {pk}"))
                    .chain(
                        indexes
                            .into_iter()
                            .map(|(name, t, cols)| format!("index {name} on {t}({cols})")),
                    )
                    .collect()
            }
        };
        lines.sort();
        Ok(lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_patterns_escape_wildcards() {
        assert_eq!(search_pattern(None), None);
        assert_eq!(search_pattern(Some("  ")), None);
        assert_eq!(search_pattern(Some(" Cpu ")).as_deref(), Some("%cpu%"));
        assert_eq!(
            search_pattern(Some("50%_a\\")).as_deref(),
            Some("%50\\%\\_a\\\\%")
        );
    }
}
