//! The queries of a job's timeline on `task_attempts` (ADR 18): what the query API needs to lay
//! a job's attempts out without reading the log. When more attempts fall in the window than a
//! client draws, the buckets are counted by the database ([`TimelineSql`]), so a 100,000-task
//! job ships a few thousand grouped rows, not its 300,000 attempts.
//!
//! A window keeps the attempts queued at or before its end that had not ended before its start
//! (and, grouped by worker, only those a worker started), like the query API's layout of
//! attempts folded from the log.

use chrono::{DateTime, Utc};
use shoal_domain::JobId;
use sqlx::Pool;

use super::sql::{ReadDialect, attempt_columns, attempt_row};
use super::types::AttemptRow;
use super::{ReadModelResult, count};
use crate::dialect::{QueryExt, col};

/// A job's attempts in a window of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptWindow {
    pub job_id: JobId,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Only attempts a worker started (lanes are workers).
    pub by_worker: bool,
}

/// What the table holds of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AttemptsOverview {
    /// Tasks with attempts in the table (every task the projection saw enqueued, once the
    /// table existed).
    pub tasks: u64,
    /// One more than the highest task index (0 without attempts).
    pub lanes: u32,
}

/// How many attempts a window holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AttemptCounts {
    /// Attempts in the window.
    pub in_window: u64,
    /// Of them, those that ended with a duration (what the percentiles are taken of).
    pub ended: u64,
}

/// The cells buckets are counted in: `lane_rows` blocks of lanes (a lane `l` of `lane_count`
/// is in row `l * lane_rows / lane_count`) by `columns` slices of `span_us` microseconds from
/// the window's start (an instant `t` is in slice `(t - from) * columns / span_us`, clamped to
/// the slices; times to the microsecond).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketGrid {
    pub lane_rows: u32,
    pub lane_count: u32,
    pub columns: u32,
    pub span_us: i64,
}

/// Where a row of bucket differences belongs: a block of lanes (grouped by task), or a
/// worker (grouped by worker: the caller knows each worker's lane).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BucketLane {
    Row(u32),
    Worker(String),
}

/// Changes of the counts along one row of buckets, at slice `column` (`0..=columns`): an
/// attempt adds 1 at the slice it starts in and takes it away after the slice it ends in, so
/// that the running sum along a row is the number of attempts in each cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketDiff {
    pub lane: BucketLane,
    pub column: u32,
    pub attempts: i64,
    /// Attempts that failed (retried or for good).
    pub failed: i64,
    /// Attempts still running.
    pub running: i64,
}

/// The bucket statements, which differ between the dialects only in how a time becomes
/// microseconds since the epoch (`$us_started`, `$us_ended`: of `started_at`, `ended_at`).
/// Parameters: `$1`..`$4` the window (see `window!`), `$5` lane rows, `$6` lane count, `$7`
/// the window's start in microseconds, `$8` columns, `$9` the span in microseconds, `$10` the
/// window's end in microseconds (the end of attempts still running).
#[derive(Debug)]
pub(crate) struct TimelineSql {
    pub buckets_by_task: &'static str,
    pub buckets_by_worker: &'static str,
}

/// The window's condition on `$1` (job), `$2` (end), `$3` (start), `$4` (1: by worker).
macro_rules! window {
    () => {
        "job_id = $1 AND queued_at <= $2 AND (ended_at IS NULL OR ended_at >= $3)
         AND ($4 = 0 OR worker IS NOT NULL)"
    };
}

macro_rules! buckets_sql {
    ($lane:literal, $us_started:literal, $us_ended:literal) => {
        concat!(
            "WITH x AS (
                 SELECT ",
            $lane,
            " AS lane, (",
            $us_started,
            " - $7) * $8 / $9 AS c0, (COALESCE(",
            $us_ended,
            ", $10) - $7) * $8 / $9 AS c1,
                        CASE WHEN outcome IN ('failed', 'retried') THEN 1 ELSE 0 END AS f,
                        CASE WHEN outcome = 'running' THEN 1 ELSE 0 END AS r
                 FROM task_attempts
                 WHERE ",
            $crate::readmodel::timeline::window!(),
            " AND started_at IS NOT NULL
             ), d AS (
                 SELECT lane, CASE WHEN c0 < 0 THEN 0 WHEN c0 >= $8 THEN $8 - 1 ELSE c0 END AS c,
                        1 AS n, f, r
                 FROM x
                 UNION ALL
                 SELECT lane, CASE WHEN c1 < 0 THEN 0 WHEN c1 >= $8 THEN $8 - 1 ELSE c1 END + 1,
                        -1, -f, -r
                 FROM x
             )
             SELECT lane, c, sum(n), sum(f), sum(r) FROM d GROUP BY lane, c"
        )
    };
}

macro_rules! timeline_sql {
    ($us_started:literal, $us_ended:literal) => {
        $crate::readmodel::timeline::TimelineSql {
            buckets_by_task: $crate::readmodel::timeline::buckets_sql!(
                "task_index * $5 / $6",
                $us_started,
                $us_ended
            ),
            buckets_by_worker: $crate::readmodel::timeline::buckets_sql!(
                "worker",
                $us_started,
                $us_ended
            ),
        }
    };
}
pub(crate) use {buckets_sql, timeline_sql, window};

const OVERVIEW: &str =
    "SELECT count(*), max(task_index) FROM task_attempts WHERE job_id = $1 AND seq = 0";
const WORKERS: &str =
    "SELECT DISTINCT worker FROM task_attempts WHERE job_id = $1 AND worker IS NOT NULL";
const COUNT: &str = concat!(
    "SELECT count(*), COALESCE(sum(CASE WHEN outcome IN ('completed', 'retried', 'failed')
                                         AND duration_ms IS NOT NULL THEN 1 ELSE 0 END), 0)
     FROM task_attempts WHERE ",
    window!()
);
const IN_WINDOW: &str = concat!(
    "SELECT ",
    attempt_columns!(),
    " FROM task_attempts WHERE ",
    window!(),
    " ORDER BY task_index, seq LIMIT $5"
);
const SLOWEST_ENDED: &str = concat!(
    "SELECT ",
    attempt_columns!(),
    " FROM task_attempts WHERE ",
    window!(),
    " AND started_at IS NOT NULL AND duration_ms IS NOT NULL
     ORDER BY duration_ms DESC, task_index, seq LIMIT $5"
);
const UNFINISHED: &str = concat!(
    "SELECT ",
    attempt_columns!(),
    " FROM task_attempts WHERE ",
    window!(),
    " AND started_at IS NOT NULL AND duration_ms IS NULL ORDER BY task_index, seq"
);
const DURATIONS_AT: &str = concat!(
    "SELECT r, duration_ms FROM (
         SELECT duration_ms, row_number() OVER (ORDER BY duration_ms) - 1 AS r
         FROM task_attempts WHERE ",
    window!(),
    " AND outcome IN ('completed', 'retried', 'failed') AND duration_ms IS NOT NULL
     ) AS s WHERE r = $5 OR r = $6"
);

fn window_query<'q, D: ReadDialect>(
    sql: &'static str,
    window: &AttemptWindow,
) -> crate::dialect::Q<'q, D> {
    sqlx::query::<D>(sql)
        .id(window.job_id.as_uuid())
        .time(Some(window.to))
        .time(Some(window.from))
        .arg(i64::from(window.by_worker))
}

fn attempt_rows<D: ReadDialect>(rows: Vec<D::Row>) -> ReadModelResult<Vec<AttemptRow>> {
    rows.iter().map(attempt_row::<D>).collect()
}

pub(crate) async fn overview<D: ReadDialect>(
    pool: &Pool<D>,
    job_id: JobId,
) -> ReadModelResult<AttemptsOverview> {
    let row = sqlx::query::<D>(OVERVIEW)
        .id(job_id.as_uuid())
        .optional(D::pool(pool))
        .await?;
    let Some(row) = row else {
        return Ok(AttemptsOverview::default());
    };
    let tasks: i64 = col::<D, _>(&row, 0)?;
    let max: Option<i64> = col::<D, _>(&row, 1)?;
    Ok(AttemptsOverview {
        tasks: u64::try_from(tasks).unwrap_or(0),
        lanes: max.map_or(Ok(0), |m| count(m + 1, "task_index"))?,
    })
}

pub(crate) async fn workers<D: ReadDialect>(
    pool: &Pool<D>,
    job_id: JobId,
) -> ReadModelResult<Vec<String>> {
    let rows = sqlx::query::<D>(WORKERS)
        .id(job_id.as_uuid())
        .all(D::pool(pool))
        .await?;
    rows.iter()
        .map(|row| Ok(col::<D, String>(row, 0)?))
        .collect()
}

pub(crate) async fn counts<D: ReadDialect>(
    pool: &Pool<D>,
    window: &AttemptWindow,
) -> ReadModelResult<AttemptCounts> {
    let row = window_query::<D>(COUNT, window)
        .optional(D::pool(pool))
        .await?;
    let Some(row) = row else {
        return Ok(AttemptCounts::default());
    };
    let in_window: i64 = col::<D, _>(&row, 0)?;
    let ended: i64 = col::<D, _>(&row, 1)?;
    Ok(AttemptCounts {
        in_window: u64::try_from(in_window).unwrap_or(0),
        ended: u64::try_from(ended).unwrap_or(0),
    })
}

pub(crate) async fn in_window<D: ReadDialect>(
    pool: &Pool<D>,
    window: &AttemptWindow,
    limit: i64,
) -> ReadModelResult<Vec<AttemptRow>> {
    let rows = window_query::<D>(IN_WINDOW, window)
        .arg(limit)
        .all(D::pool(pool))
        .await?;
    attempt_rows::<D>(rows)
}

pub(crate) async fn slowest<D: ReadDialect>(
    pool: &Pool<D>,
    window: &AttemptWindow,
    limit: i64,
) -> ReadModelResult<Vec<AttemptRow>> {
    let mut rows = attempt_rows::<D>(
        window_query::<D>(SLOWEST_ENDED, window)
            .arg(limit)
            .all(D::pool(pool))
            .await?,
    )?;
    rows.extend(attempt_rows::<D>(
        window_query::<D>(UNFINISHED, window)
            .all(D::pool(pool))
            .await?,
    )?);
    Ok(rows)
}

pub(crate) async fn durations_at<D: ReadDialect>(
    pool: &Pool<D>,
    window: &AttemptWindow,
    ranks: [u64; 2],
) -> ReadModelResult<Vec<(u64, u64)>> {
    let rank = |r: u64| i64::try_from(r).unwrap_or(i64::MAX);
    let rows = window_query::<D>(DURATIONS_AT, window)
        .arg(rank(ranks[0]))
        .arg(rank(ranks[1]))
        .all(D::pool(pool))
        .await?;
    rows.iter()
        .map(|row| {
            let r: i64 = col::<D, _>(row, 0)?;
            let ms: i64 = col::<D, _>(row, 1)?;
            Ok((
                u64::try_from(r).unwrap_or(0),
                u64::try_from(ms).unwrap_or(0),
            ))
        })
        .collect()
}

pub(crate) async fn bucket_diffs<D: ReadDialect>(
    pool: &Pool<D>,
    window: &AttemptWindow,
    grid: BucketGrid,
) -> ReadModelResult<Vec<BucketDiff>> {
    let sql = if window.by_worker {
        D::TIMELINE.buckets_by_worker
    } else {
        D::TIMELINE.buckets_by_task
    };
    let rows = window_query::<D>(sql, window)
        .arg(i64::from(grid.lane_rows))
        .arg(i64::from(grid.lane_count.max(1)))
        .arg(window.from.timestamp_micros())
        .arg(i64::from(grid.columns.max(1)))
        .arg(grid.span_us.max(1))
        .arg(window.to.timestamp_micros())
        .all(D::pool(pool))
        .await?;
    rows.iter()
        .map(|row| {
            let lane = if window.by_worker {
                BucketLane::Worker(col::<D, _>(row, 0)?)
            } else {
                BucketLane::Row(count(col::<D, _>(row, 0)?, "lane")?)
            };
            Ok(BucketDiff {
                lane,
                column: count(col::<D, _>(row, 1)?, "column")?,
                attempts: col::<D, _>(row, 2)?,
                failed: col::<D, _>(row, 3)?,
                running: col::<D, _>(row, 4)?,
            })
        })
        .collect()
}
