//! A job's timeline: one bar per attempt (queued -> started -> ended), grouped by task or by
//! worker; when more attempts fall in the window than the client asked to draw, aggregated
//! buckets (lanes x time) instead of bars; and the slowest attempts beside it.

use async_graphql::{Enum, SimpleObject};
use chrono::{DateTime, Duration, Utc};
use shoal_domain::{Attempt, AttemptOutcome as Outcome, JobId};
use shoal_infra::readmodel::{
    AttemptWindow, BucketGrid, BucketLane, ReadModelResult, ReadModelStore,
};

use super::types::AttemptOutcome;

/// How the timeline's lanes are made.
#[derive(Debug, Enum, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimelineGroup {
    /// One lane per task (by index).
    #[default]
    Task,
    /// One lane per worker (attempts not started yet have none and are left out).
    Worker,
}

/// One attempt on the timeline.
#[derive(Debug, Clone, PartialEq, SimpleObject)]
pub struct TimelineBar {
    /// The task's index.
    pub task_index: u32,
    /// The attempt's number.
    pub attempt: u32,
    /// Its lane (the task's index, or the worker's place in `workers`).
    pub lane: u32,
    /// Who ran it.
    pub worker: Option<String>,
    /// When it was queued.
    pub queued_at: DateTime<Utc>,
    /// When it started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended (null while it runs).
    pub ended_at: Option<DateTime<Utc>>,
    /// How long it ran (until the timeline's end while it runs), in milliseconds.
    pub duration_ms: Option<f64>,
    /// How it stands or ended.
    pub outcome: AttemptOutcome,
}

/// Attempts that ran in a block of lanes during a slice of time (aggregated timelines).
#[derive(Debug, Clone, PartialEq, SimpleObject)]
pub struct TimelineBucket {
    /// First lane of the block.
    pub lane_from: u32,
    /// One past its last lane.
    pub lane_to: u32,
    /// Start of the slice of time.
    pub from: DateTime<Utc>,
    /// End of the slice of time.
    pub to: DateTime<Utc>,
    /// Attempts that were running at some point of the slice.
    pub attempts: u32,
    /// Of them, those that failed (retried or for good).
    pub failed: u32,
    /// Of them, those still running at the timeline's end.
    pub running: u32,
}

/// A job's attempts laid out in time.
#[derive(Debug, Clone, PartialEq, SimpleObject)]
pub struct JobTimeline {
    /// Start of the window shown.
    pub from: DateTime<Utc>,
    /// End of the window shown.
    pub to: DateTime<Utc>,
    /// How the lanes are made.
    pub group_by: TimelineGroup,
    /// How many lanes there are (tasks, or workers).
    pub lane_count: u32,
    /// The workers, in lane order, when grouped by worker.
    pub workers: Vec<String>,
    /// Attempts in the window.
    pub attempt_count: u32,
    /// True: more attempts than `maxBars`, so `buckets` instead of `bars`.
    pub aggregated: bool,
    /// One per attempt in the window (empty when aggregated), by lane then time.
    pub bars: Vec<TimelineBar>,
    /// Lanes x time (only when aggregated); cells without attempts are left out.
    pub buckets: Vec<TimelineBucket>,
    /// The slowest attempts that started (running ones count until the window's end).
    pub slowest: Vec<TimelineBar>,
    /// Median duration of the attempts that ended, in milliseconds.
    pub median_ms: Option<f64>,
    /// 95th percentile of the same.
    pub p95_ms: Option<f64>,
}

/// What the client asked for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimelineRequest {
    pub group_by: TimelineGroup,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub max_bars: usize,
    pub lane_buckets: u32,
    pub time_buckets: u32,
    pub slowest: usize,
}

fn millis(d: Duration) -> f64 {
    d.num_microseconds()
        .map_or(d.num_milliseconds() as f64, |us| us as f64 / 1000.0)
}

/// The lanes of a timeline: how many, and the workers in lane order (grouped by worker).
#[derive(Debug, Clone, Default)]
struct Lanes {
    group_by: TimelineGroup,
    count: u32,
    workers: Vec<String>,
}

impl Lanes {
    /// The lanes of every attempt of the job (not only those of the window).
    fn of(attempts: &[(u32, Attempt)], group_by: TimelineGroup) -> Lanes {
        match group_by {
            TimelineGroup::Task => Lanes {
                group_by,
                count: attempts.iter().map(|(i, _)| i + 1).max().unwrap_or(0),
                workers: Vec::new(),
            },
            TimelineGroup::Worker => {
                Lanes::of_workers(attempts.iter().filter_map(|(_, a)| a.worker.clone()))
            }
        }
    }

    /// Lanes by worker, one per distinct worker, in name order.
    fn of_workers(workers: impl IntoIterator<Item = String>) -> Lanes {
        let mut workers: Vec<String> = workers.into_iter().collect();
        workers.sort();
        workers.dedup();
        Lanes {
            group_by: TimelineGroup::Worker,
            count: u32::try_from(workers.len()).unwrap_or(u32::MAX),
            workers,
        }
    }

    fn lane_of(&self, index: u32, attempt: &Attempt) -> Option<u32> {
        match self.group_by {
            TimelineGroup::Task => Some(index),
            TimelineGroup::Worker => self.worker_lane(attempt.worker.as_ref()?),
        }
    }

    fn worker_lane(&self, worker: &str) -> Option<u32> {
        self.workers
            .binary_search_by(|w| w.as_str().cmp(worker))
            .ok()
            .and_then(|i| u32::try_from(i).ok())
    }
}

/// The grid buckets are counted in (see [`BucketGrid`]).
fn grid(request: &TimelineRequest, lane_count: u32) -> BucketGrid {
    let span = (request.to - request.from).max(Duration::milliseconds(1));
    BucketGrid {
        lane_rows: request.lane_buckets.clamp(1, lane_count.max(1)),
        lane_count: lane_count.max(1),
        columns: request.time_buckets.max(1),
        span_us: span.num_microseconds().unwrap_or(i64::MAX).max(1),
    }
}

impl TimelineRequest {
    /// The slice of the window an instant falls in: `(at - from) * columns / span`, in whole
    /// microseconds, clamped to the slices (the database counts buckets the same way).
    fn column_of(&self, grid: &BucketGrid, at: DateTime<Utc>) -> u32 {
        let offset = i128::from((at - self.from).num_microseconds().unwrap_or(i64::MAX));
        let column = offset * i128::from(grid.columns) / i128::from(grid.span_us);
        column.clamp(0, i128::from(grid.columns) - 1) as u32
    }
}

/// Counts per cell, `(attempts, failed, running)`, rows of `grid.columns` cells.
type Cells = Vec<(u32, u32, u32)>;

/// The buckets of the cells that hold attempts.
fn buckets(
    request: &TimelineRequest,
    grid: &BucketGrid,
    lane_count: u32,
    cells: &Cells,
) -> Vec<TimelineBucket> {
    let (from, columns) = (request.from, grid.columns);
    let span = (request.to - from).max(Duration::milliseconds(1));
    let slice = |c: u32| from + span * i32::try_from(c).unwrap_or(i32::MAX) / columns as i32;
    let mut buckets = Vec::new();
    for row in 0..grid.lane_rows {
        let lane_from = (u64::from(row) * u64::from(lane_count) / u64::from(grid.lane_rows)) as u32;
        let lane_to =
            (u64::from(row + 1) * u64::from(lane_count) / u64::from(grid.lane_rows)) as u32;
        for column in 0..columns {
            let (attempts, failed, running) = cells[(row * columns + column) as usize];
            if attempts > 0 {
                buckets.push(TimelineBucket {
                    lane_from,
                    lane_to,
                    from: slice(column),
                    to: slice(column + 1),
                    attempts,
                    failed,
                    running,
                });
            }
        }
    }
    buckets
}

/// One attempt's bar; a running one runs until `to`.
fn bar(index: u32, lane: u32, a: &Attempt, to: DateTime<Utc>) -> TimelineBar {
    TimelineBar {
        task_index: index,
        attempt: a.attempt,
        lane,
        worker: a.worker.clone(),
        queued_at: a.queued_at,
        started_at: a.started_at,
        ended_at: a.ended_at,
        duration_ms: a
            .duration_ms
            .map(|ms| ms as f64)
            .or_else(|| Some(millis(a.end_or(to)? - a.started_at?))),
        outcome: a.outcome.into(),
    }
}

/// The `n` longest of `ran` (bars of started attempts, in task then attempt order).
fn slowest(mut ran: Vec<TimelineBar>, n: usize) -> Vec<TimelineBar> {
    ran.sort_by(|a, b| {
        b.duration_ms
            .unwrap_or(0.0)
            .total_cmp(&a.duration_ms.unwrap_or(0.0))
            .then(a.task_index.cmp(&b.task_index))
    });
    ran.truncate(n);
    ran
}

/// Where the `q`-quantile of `n` sorted values is.
fn quantile_rank(n: usize, q: f64) -> Option<usize> {
    let last = n.checked_sub(1)?;
    Some(((last as f64) * q).round() as usize)
}

/// Lays out `attempts` (with their task's index), as of `request.to`.
pub fn layout(attempts: &[(u32, Attempt)], request: TimelineRequest) -> JobTimeline {
    layout_in(Lanes::of(attempts, request.group_by), attempts, request)
}

/// Lays out those of `attempts` that fall in the window, on `lanes`.
fn layout_in(lanes: Lanes, attempts: &[(u32, Attempt)], request: TimelineRequest) -> JobTimeline {
    let TimelineRequest { from, to, .. } = request;
    let lane_count = lanes.count;
    // In the window: queued before its end, and not ended before its start.
    let shown: Vec<(u32, u32, &Attempt)> = attempts
        .iter()
        .filter(|(_, a)| a.queued_at <= to && a.ended_at.is_none_or(|end| end >= from))
        .filter_map(|(index, a)| Some((*index, lanes.lane_of(*index, a)?, a)))
        .collect();
    let attempt_count = u32::try_from(shown.len()).unwrap_or(u32::MAX);
    let aggregated = shown.len() > request.max_bars;

    let mut bars = Vec::new();
    let mut cells_out = Vec::new();
    if aggregated {
        let grid = grid(&request, lane_count);
        let columns = grid.columns;
        let mut cells: Cells = vec![(0, 0, 0); (grid.lane_rows * columns) as usize];
        for (_, lane, a) in &shown {
            let Some(started) = a.started_at else {
                continue;
            };
            let row =
                (u64::from(*lane) * u64::from(grid.lane_rows) / u64::from(grid.lane_count)) as u32;
            let end = a.end_or(to).unwrap_or(to);
            for column in request.column_of(&grid, started)..=request.column_of(&grid, end) {
                let cell = &mut cells[(row * columns + column) as usize];
                cell.0 += 1;
                if matches!(a.outcome, Outcome::Failed | Outcome::Retried) {
                    cell.1 += 1;
                }
                if a.outcome == Outcome::Running {
                    cell.2 += 1;
                }
            }
        }
        cells_out = buckets(&request, &grid, lane_count, &cells);
    } else {
        bars = shown
            .iter()
            .map(|(index, lane, a)| bar(*index, *lane, a, to))
            .collect();
        bars.sort_by_key(|b| (b.lane, b.queued_at));
    }

    let ran: Vec<TimelineBar> = shown
        .iter()
        .filter(|(_, _, a)| a.started_at.is_some())
        .map(|(index, lane, a)| bar(*index, *lane, a, to))
        .collect();
    let mut ended: Vec<f64> = shown
        .iter()
        .filter(|(_, _, a)| a.outcome.ended())
        .filter_map(|(_, _, a)| {
            a.duration_ms
                .map(|ms| ms as f64)
                .or_else(|| Some(millis(a.ended_at? - a.started_at?)))
        })
        .collect();
    ended.sort_by(f64::total_cmp);
    let quantile = |q: f64| Some(ended[quantile_rank(ended.len(), q)?]);
    JobTimeline {
        from,
        to,
        group_by: request.group_by,
        lane_count,
        workers: lanes.workers,
        attempt_count,
        aggregated,
        bars,
        buckets: cells_out,
        slowest: slowest(ran, request.slowest),
        median_ms: quantile(0.5),
        p95_ms: quantile(0.95),
    }
}

/// The job's timeline from `task_attempts` (ADR 18), the same as [`layout`] of the attempts
/// folded from the log; `None` when the table lacks some of the job's tasks (`created`: how
/// many the job has; those enqueued before the table existed have no rows until a rebuild).
/// With few attempts in the window they are read and laid out here; with more than
/// `maxBars`, the database counts the buckets (`ReadModelStore::attempt_bucket_diffs`) and the
/// attempts per duration (for the percentiles, and to know which are the slowest), so the
/// attempts themselves are never all read.
pub async fn from_table(
    store: &ReadModelStore,
    job_id: JobId,
    created: u32,
    request: TimelineRequest,
) -> ReadModelResult<Option<JobTimeline>> {
    let overview = store.attempts_overview(job_id).await?;
    if overview.tasks < u64::from(created) {
        return Ok(None);
    }
    let lanes = match request.group_by {
        TimelineGroup::Task => Lanes {
            group_by: TimelineGroup::Task,
            count: overview.lanes,
            workers: Vec::new(),
        },
        TimelineGroup::Worker => Lanes::of_workers(store.attempt_workers(job_id).await?),
    };
    let window = AttemptWindow {
        job_id,
        from: request.from,
        to: request.to,
        by_worker: request.group_by == TimelineGroup::Worker,
    };
    let durations = store.attempt_durations(&window).await?;
    let limit = i64::try_from(request.max_bars).unwrap_or(i64::MAX);
    if durations.in_window <= request.max_bars as u64 {
        let rows = store
            .attempts_in_window(&window, limit.saturating_add(1))
            .await?;
        if rows.len() <= request.max_bars {
            let attempts: Vec<(u32, Attempt)> = rows
                .into_iter()
                .map(|r| (r.task_index, r.attempt))
                .collect();
            return Ok(Some(layout_in(lanes, &attempts, request)));
        }
    }

    let lane_count = lanes.count;
    let grid = grid(&request, lane_count);
    let columns = grid.columns as usize;
    // Differences along each row, then their running sums: the cells.
    let mut diffs = vec![(0i64, 0i64, 0i64); grid.lane_rows as usize * (columns + 1)];
    for d in store.attempt_bucket_diffs(&window, grid).await? {
        let row = match &d.lane {
            BucketLane::Row(row) => Some(*row),
            BucketLane::Worker(worker) => lanes.worker_lane(worker).map(|lane| {
                (u64::from(lane) * u64::from(grid.lane_rows) / u64::from(grid.lane_count)) as u32
            }),
        };
        let Some(row) = row.filter(|r| *r < grid.lane_rows) else {
            continue;
        };
        let cell = &mut diffs[row as usize * (columns + 1) + (d.column as usize).min(columns)];
        cell.0 += d.attempts;
        cell.1 += d.failed;
        cell.2 += d.running;
    }
    let count = |n: i64| u32::try_from(n).unwrap_or(0);
    let mut cells: Cells = Vec::with_capacity(grid.lane_rows as usize * columns);
    for row in diffs.chunks(columns + 1) {
        let mut sum = (0i64, 0i64, 0i64);
        for d in &row[..columns] {
            sum = (sum.0 + d.0, sum.1 + d.1, sum.2 + d.2);
            cells.push((count(sum.0), count(sum.1), count(sum.2)));
        }
    }

    // The slowest: every started attempt longer than the `slowest`-th longest duration, and
    // of those of exactly that duration, the first ones in task order (and the running ones).
    let wanted = request.slowest as u64;
    let mut longer = 0u64;
    let mut at = None;
    for &(ms, n) in durations.ran.iter().rev() {
        if longer + n >= wanted {
            at = Some((ms, wanted - longer));
            break;
        }
        longer += n;
    }
    if at.is_none() && wanted > 0 {
        at = durations.ran.first().copied();
    }
    let mut candidates = store.slowest_attempt_candidates(&window, at).await?;
    candidates.sort_by_key(|r| (r.task_index, r.seq));
    let ran: Vec<TimelineBar> = candidates
        .iter()
        .filter_map(|r| {
            let lane = lanes.lane_of(r.task_index, &r.attempt)?;
            Some(bar(r.task_index, lane, &r.attempt, request.to))
        })
        .collect();
    let n: u64 = durations.ended.iter().map(|(_, n)| n).sum();
    let quantile = |q: f64| -> Option<f64> {
        let rank = quantile_rank(usize::try_from(n).ok()?, q)? as u64;
        let mut seen = 0;
        durations.ended.iter().find_map(|&(ms, count)| {
            seen += count;
            (seen > rank).then_some(ms as f64)
        })
    };
    Ok(Some(JobTimeline {
        from: request.from,
        to: request.to,
        group_by: request.group_by,
        lane_count,
        workers: lanes.workers.clone(),
        attempt_count: u32::try_from(durations.in_window).unwrap_or(u32::MAX),
        aggregated: true,
        bars: Vec::new(),
        buckets: buckets(&request, &grid, lane_count, &cells),
        slowest: slowest(ran, request.slowest),
        median_ms: quantile(0.5),
        p95_ms: quantile(0.95),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(ms: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap() + Duration::milliseconds(ms)
    }

    fn attempt(n: u32, worker: &str, start: i64, end: Option<i64>, outcome: Outcome) -> Attempt {
        Attempt {
            attempt: n,
            queued_at: t(0),
            not_before: None,
            worker: Some(worker.into()),
            started_at: Some(t(start)),
            ended_at: end.map(t),
            duration_ms: None,
            outcome,
            error: None,
            retry: None,
            dead_letter_reason: None,
        }
    }

    fn request(max_bars: usize) -> TimelineRequest {
        TimelineRequest {
            group_by: TimelineGroup::Task,
            from: t(0),
            to: t(1_000),
            max_bars,
            lane_buckets: 2,
            time_buckets: 4,
            slowest: 2,
        }
    }

    fn attempts() -> Vec<(u32, Attempt)> {
        vec![
            (0, attempt(1, "w1", 0, Some(100), Outcome::Completed)),
            (1, attempt(1, "w2", 0, Some(200), Outcome::Retried)),
            (1, attempt(2, "w1", 300, Some(400), Outcome::Completed)),
            (2, attempt(1, "w2", 250, Some(900), Outcome::Completed)),
            (3, attempt(1, "w1", 600, None, Outcome::Running)),
        ]
    }

    #[test]
    fn few_attempts_are_bars_with_the_slowest_beside() {
        let timeline = layout(&attempts(), request(10));
        assert!(!timeline.aggregated);
        assert_eq!((timeline.lane_count, timeline.attempt_count), (4, 5));
        let lanes: Vec<(u32, u32)> = timeline.bars.iter().map(|b| (b.lane, b.attempt)).collect();
        assert_eq!(lanes, [(0, 1), (1, 1), (1, 2), (2, 1), (3, 1)]);
        // Task 2 ran 650 ms; task 3 runs since 600 ms: 400 ms at the window's end.
        let slowest: Vec<(u32, Option<f64>)> = timeline
            .slowest
            .iter()
            .map(|b| (b.task_index, b.duration_ms))
            .collect();
        assert_eq!(slowest, [(2, Some(650.0)), (3, Some(400.0))]);
        assert_eq!(timeline.median_ms, Some(200.0));
        assert!(timeline.buckets.is_empty());
    }

    #[test]
    fn many_attempts_are_aggregated_into_buckets() {
        let timeline = layout(&attempts(), request(3));
        assert!(timeline.aggregated && timeline.bars.is_empty());
        // Lanes 0..2 and 2..4, four slices of 250 ms.
        let cells: Vec<(u32, u32, i64, u32, u32, u32)> = timeline
            .buckets
            .iter()
            .map(|b| {
                let slice = (b.from - t(0)).num_milliseconds() / 250;
                (
                    b.lane_from,
                    b.lane_to,
                    slice,
                    b.attempts,
                    b.failed,
                    b.running,
                )
            })
            .collect();
        assert_eq!(
            cells,
            [
                (0, 2, 0, 2, 1, 0),
                (0, 2, 1, 1, 0, 0),
                (2, 4, 1, 1, 0, 0),
                (2, 4, 2, 2, 0, 1),
                (2, 4, 3, 2, 0, 1),
            ]
        );
        let total: u32 = timeline.buckets.iter().map(|b| b.attempts).sum();
        assert_eq!(total, 8);
    }

    #[test]
    fn grouped_by_worker() {
        let mut request = request(10);
        request.group_by = TimelineGroup::Worker;
        let timeline = layout(&attempts(), request);
        assert_eq!(timeline.workers, ["w1", "w2"]);
        assert_eq!(timeline.lane_count, 2);
        let on_w2: Vec<u32> = timeline
            .bars
            .iter()
            .filter(|b| b.lane == 1)
            .map(|b| b.task_index)
            .collect();
        assert_eq!(on_w2, [1, 2]);
    }

    #[test]
    fn the_window_keeps_what_overlaps_it() {
        let mut request = request(10);
        request.from = t(500);
        let timeline = layout(&attempts(), request);
        let tasks: Vec<u32> = timeline.bars.iter().map(|b| b.task_index).collect();
        assert_eq!(tasks, [2, 3]);
    }
}
