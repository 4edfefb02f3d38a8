//! A job's timeline: one bar per attempt (queued -> started -> ended), grouped by task or by
//! worker; when more attempts fall in the window than the client asked to draw, aggregated
//! buckets (lanes x time) instead of bars; and the slowest attempts beside it.

use async_graphql::{Enum, SimpleObject};
use chrono::{DateTime, Duration, Utc};
use shoal_domain::{Attempt, AttemptOutcome as Outcome};

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
#[derive(Debug, Clone, Copy)]
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

/// Lays out `attempts` (with their task's index), as of `request.to`.
pub fn layout(attempts: &[(u32, Attempt)], request: TimelineRequest) -> JobTimeline {
    let TimelineRequest { from, to, .. } = request;
    let mut workers: Vec<String> = Vec::new();
    if request.group_by == TimelineGroup::Worker {
        workers = attempts
            .iter()
            .filter_map(|(_, a)| a.worker.clone())
            .collect();
        workers.sort();
        workers.dedup();
    }
    let lane_of = |index: u32, attempt: &Attempt| -> Option<u32> {
        match request.group_by {
            TimelineGroup::Task => Some(index),
            TimelineGroup::Worker => {
                let worker = attempt.worker.as_ref()?;
                workers
                    .binary_search(worker)
                    .ok()
                    .and_then(|i| u32::try_from(i).ok())
            }
        }
    };
    let lane_count = match request.group_by {
        TimelineGroup::Task => attempts.iter().map(|(i, _)| i + 1).max().unwrap_or(0),
        TimelineGroup::Worker => u32::try_from(workers.len()).unwrap_or(u32::MAX),
    };
    let bar = |index: u32, lane: u32, a: &Attempt| TimelineBar {
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
    };
    // In the window: queued before its end, and not ended before its start.
    let shown: Vec<(u32, u32, &Attempt)> = attempts
        .iter()
        .filter(|(_, a)| a.queued_at <= to && a.ended_at.is_none_or(|end| end >= from))
        .filter_map(|(index, a)| Some((*index, lane_of(*index, a)?, a)))
        .collect();
    let attempt_count = u32::try_from(shown.len()).unwrap_or(u32::MAX);
    let aggregated = shown.len() > request.max_bars;

    let mut bars = Vec::new();
    let mut buckets = Vec::new();
    if aggregated {
        let lane_rows = request.lane_buckets.clamp(1, lane_count.max(1));
        let columns = request.time_buckets.max(1);
        let span = (to - from).max(Duration::milliseconds(1));
        let mut cells = vec![(0u32, 0u32, 0u32); (lane_rows * columns) as usize];
        let column_of = |at: DateTime<Utc>| -> u32 {
            let offset = millis(at - from) / millis(span);
            ((offset * f64::from(columns)).floor() as i64).clamp(0, i64::from(columns) - 1) as u32
        };
        for (_, lane, a) in &shown {
            let Some(started) = a.started_at else {
                continue;
            };
            let row =
                (u64::from(*lane) * u64::from(lane_rows) / u64::from(lane_count.max(1))) as u32;
            let end = a.end_or(to).unwrap_or(to);
            for column in column_of(started.max(from))..=column_of(end.min(to)) {
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
        let slice = |c: u32| from + span * i32::try_from(c).unwrap_or(i32::MAX) / columns as i32;
        for row in 0..lane_rows {
            let lane_from = (u64::from(row) * u64::from(lane_count) / u64::from(lane_rows)) as u32;
            let lane_to =
                (u64::from(row + 1) * u64::from(lane_count) / u64::from(lane_rows)) as u32;
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
    } else {
        bars = shown
            .iter()
            .map(|(index, lane, a)| bar(*index, *lane, a))
            .collect();
        bars.sort_by_key(|b| (b.lane, b.queued_at));
    }

    let mut ran: Vec<TimelineBar> = shown
        .iter()
        .filter(|(_, _, a)| a.started_at.is_some())
        .map(|(index, lane, a)| bar(*index, *lane, a))
        .collect();
    ran.sort_by(|a, b| {
        b.duration_ms
            .unwrap_or(0.0)
            .total_cmp(&a.duration_ms.unwrap_or(0.0))
            .then(a.task_index.cmp(&b.task_index))
    });
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
    let quantile = |q: f64| -> Option<f64> {
        let last = ended.len().checked_sub(1)?;
        Some(ended[((last as f64) * q).round() as usize])
    };
    ran.truncate(request.slowest);
    JobTimeline {
        from,
        to,
        group_by: request.group_by,
        lane_count,
        workers,
        attempt_count,
        aggregated,
        bars,
        buckets,
        slowest: ran,
        median_ms: quantile(0.5),
        p95_ms: quantile(0.95),
    }
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
