//! The queries of a job's timeline on `task_attempts` (ADR 18): what the query API needs to lay
//! a job's attempts out without reading the log. When more attempts fall in the window than a
//! client draws, the buckets are counted by the database (`buckets_sql!`), so a 100,000-task
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

/// How many attempts a window holds, and their durations.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AttemptDurations {
    /// Attempts in the window.
    pub in_window: u64,
    /// `(duration_ms, count)` of those that ended with a duration (what the percentiles are
    /// taken of), shortest first.
    pub ended: Vec<(u64, u64)>,
    /// The same, of those that started and have a duration (what the slowest are among).
    pub ran: Vec<(u64, u64)>,
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

/// The window's condition on `$1` (job), `$2` (end, microseconds), `$3` (start), `$4` (1: by
/// worker).
macro_rules! window {
    () => {
        "job_id = $1 AND queued_us <= $2 AND (ended_us IS NULL OR ended_us >= $3)
         AND ($4 = 0 OR worker IS NOT NULL)"
    };
}

/// The bucket statement, the same in both dialects (times are integers). Parameters: `$1`..`$4`
/// the window (see `window!`), `$5` lane rows, `$6` lane count, `$7` columns, `$8` the span in
/// microseconds. One scan of the window's started attempts, grouped by their first and last
/// cells (`g`: few rows, as most attempts start and end in the same slice or the next); the
/// differences are taken over those groups.
macro_rules! buckets_sql {
    ($lane:literal) => {
        concat!(
            "WITH g AS (
                 SELECT lane, c0, c1, count(*) AS n, sum(f) AS f, sum(r) AS r
                 FROM (
                     SELECT lane,
                            CASE WHEN v0 < 0 THEN 0 WHEN v0 >= $7 THEN $7 - 1 ELSE v0 END AS c0,
                            CASE WHEN v1 < 0 THEN 0 WHEN v1 >= $7 THEN $7 - 1 ELSE v1 END AS c1,
                            f, r
                     FROM (
                         SELECT ",
            $lane,
            " AS lane, (started_us - $3) * $7 / $8 AS v0,
                                (COALESCE(ended_us, $2) - $3) * $7 / $8 AS v1,
                                CASE WHEN outcome IN ('failed', 'retried') THEN 1 ELSE 0 END AS f,
                                CASE WHEN outcome = 'running' THEN 1 ELSE 0 END AS r
                         FROM task_attempts
                         WHERE ",
            window!(),
            " AND started_us IS NOT NULL
                     ) AS x
                 ) AS y
                 GROUP BY lane, c0, c1
             )
             SELECT lane, c, CAST(sum(n) AS BIGINT), CAST(sum(f) AS BIGINT),
                    CAST(sum(r) AS BIGINT)
             FROM (
                 SELECT lane, c0 AS c, n, f, r FROM g
                 UNION ALL
                 SELECT lane, c1 + 1, -n, -f, -r FROM g
             ) AS d
             GROUP BY lane, c"
        )
    };
}

const BUCKETS_BY_TASK: &str = buckets_sql!("task_index * $5 / $6");
const BUCKETS_BY_WORKER: &str = buckets_sql!("worker");
const OVERVIEW: &str =
    "SELECT count(*), max(task_index) FROM task_attempts WHERE job_id = $1 AND seq = 0";
const WORKERS: &str =
    "SELECT DISTINCT worker FROM task_attempts WHERE job_id = $1 AND worker IS NOT NULL";
const DURATIONS: &str = concat!(
    "SELECT CAST(CASE WHEN outcome IN ('completed', 'retried', 'failed') THEN 1 ELSE 0 END
                 AS BIGINT) AS e,
            CAST(CASE WHEN started_us IS NULL THEN 0 ELSE 1 END AS BIGINT) AS s, duration_ms,
            count(*)
     FROM task_attempts WHERE ",
    window!(),
    " GROUP BY e, s, duration_ms"
);
const IN_WINDOW: &str = concat!(
    "SELECT ",
    attempt_columns!(),
    " FROM task_attempts WHERE ",
    window!(),
    " ORDER BY task_index, seq LIMIT $5"
);
/// Started attempts without a duration (running) or longer than `$5` ms.
const SLOWEST_ABOVE: &str = concat!(
    "SELECT ",
    attempt_columns!(),
    " FROM task_attempts WHERE ",
    window!(),
    " AND started_us IS NOT NULL AND (duration_ms IS NULL OR duration_ms > $5)"
);
/// The first `$6` started attempts of exactly `$5` ms, in task order (the job's index).
const SLOWEST_AT: &str = concat!(
    "SELECT ",
    attempt_columns!(),
    " FROM task_attempts WHERE ",
    window!(),
    " AND started_us IS NOT NULL AND duration_ms = $5 ORDER BY task_index, seq LIMIT $6"
);

fn window_query<'q, D: ReadDialect>(
    sql: &'static str,
    window: &AttemptWindow,
) -> crate::dialect::Q<'q, D> {
    sqlx::query::<D>(sql)
        .id(window.job_id.as_uuid())
        .arg(window.to.timestamp_micros())
        .arg(window.from.timestamp_micros())
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

pub(crate) async fn durations<D: ReadDialect>(
    pool: &Pool<D>,
    window: &AttemptWindow,
) -> ReadModelResult<AttemptDurations> {
    let rows = window_query::<D>(DURATIONS, window)
        .all(D::pool(pool))
        .await?;
    let mut durations = AttemptDurations::default();
    for row in &rows {
        let ended: i64 = col::<D, _>(row, 0)?;
        let started: i64 = col::<D, _>(row, 1)?;
        let ms: Option<i64> = col::<D, _>(row, 2)?;
        let n = u64::try_from(col::<D, i64>(row, 3)?).unwrap_or(0);
        durations.in_window += n;
        if let Some(ms) = ms.map(|ms| u64::try_from(ms).unwrap_or(0)) {
            if ended == 1 {
                durations.ended.push((ms, n));
            }
            if started == 1 {
                durations.ran.push((ms, n));
            }
        }
    }
    for list in [&mut durations.ended, &mut durations.ran] {
        list.sort_unstable();
        list.dedup_by(|b, a| {
            let same = a.0 == b.0;
            if same {
                a.1 += b.1;
            }
            same
        });
    }
    Ok(durations)
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
    at: Option<(u64, u64)>,
) -> ReadModelResult<Vec<AttemptRow>> {
    let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    // Without a threshold, only the attempts without a duration (longer than -1 ms: none).
    let (ms, take) = at.map_or((-1, 0), |(ms, take)| (int(ms), int(take)));
    let mut rows = attempt_rows::<D>(
        window_query::<D>(SLOWEST_ABOVE, window)
            .arg(ms)
            .all(D::pool(pool))
            .await?,
    )?;
    if take > 0 {
        rows.extend(attempt_rows::<D>(
            window_query::<D>(SLOWEST_AT, window)
                .arg(ms)
                .arg(take)
                .all(D::pool(pool))
                .await?,
        )?);
    }
    Ok(rows)
}

pub(crate) async fn bucket_diffs<D: ReadDialect>(
    pool: &Pool<D>,
    window: &AttemptWindow,
    grid: BucketGrid,
) -> ReadModelResult<Vec<BucketDiff>> {
    let sql = if window.by_worker {
        BUCKETS_BY_WORKER
    } else {
        BUCKETS_BY_TASK
    };
    let rows = window_query::<D>(sql, window)
        .arg(i64::from(grid.lane_rows))
        .arg(i64::from(grid.lane_count.max(1)))
        .arg(i64::from(grid.columns.max(1)))
        .arg(grid.span_us.max(1))
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
