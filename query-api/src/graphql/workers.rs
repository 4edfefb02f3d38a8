//! The live workers (`workers`): what each worker process last reported in its heartbeat
//! (`shoal_infra::workers`), and whether it is still heard from.

use std::time::Duration;

use async_graphql::{Enum, ID, Object};
use chrono::{DateTime, Utc};
use shoal_infra::workers::{WorkerRecord, WorkerState};

/// Workers last heard from longer ago than this are left out of `workers` (the registry
/// deletes them later).
pub const WORKERS_SHOWN_FOR: Duration = Duration::from_secs(600);

/// Where a worker stands, as its heartbeats tell.
#[derive(Debug, Enum, Clone, Copy, PartialEq, Eq)]
pub enum WorkerStatus {
    /// Taking and running tasks; heard from within its last few heartbeat intervals.
    Running,
    /// Told to stop (SIGTERM): finishes the tasks it runs, takes no more.
    Draining,
    /// Stopped cleanly.
    Stopped,
    /// Not stopped, but not heard from for three heartbeat intervals: it crashed, was killed,
    /// or cannot reach the database. Its tasks come back to the queue after their visibility
    /// timeout.
    Silent,
}

/// A worker process, as it last reported itself.
#[derive(Debug, Clone)]
pub struct Worker(pub WorkerRecord);

#[Object]
impl Worker {
    /// Its id, as the tasks it ran record it (`TaskStarted`, attempts, the timeline's lanes).
    async fn id(&self) -> ID {
        ID(self.0.report.worker_id.clone())
    }

    /// The machine (or pod) it runs on.
    async fn host(&self) -> &str {
        &self.0.report.host
    }

    /// The queue it takes tasks from: `sql`, or `sqs:<queue name>`.
    async fn queue(&self) -> &str {
        &self.0.report.queue
    }

    /// Its build's version.
    async fn version(&self) -> &str {
        &self.0.report.version
    }

    /// Running, draining, stopped, or silent.
    async fn status(&self) -> WorkerStatus {
        if self.0.is_silent() {
            return WorkerStatus::Silent;
        }
        match self.0.report.state {
            WorkerState::Running => WorkerStatus::Running,
            WorkerState::Draining => WorkerStatus::Draining,
            WorkerState::Stopped => WorkerStatus::Stopped,
        }
    }

    /// Tasks it may run at once (`--concurrency`, or `--workers` of `shoal dev`).
    async fn slots_total(&self) -> u32 {
        self.0.report.slots_total
    }

    /// Tasks it was running at its last heartbeat.
    async fn slots_used(&self) -> u32 {
        self.0.report.slots_used
    }

    /// Tasks it ended (completed or failed) per second between its last two heartbeats.
    async fn tasks_per_second(&self) -> f64 {
        self.0.report.tasks_per_second
    }

    /// Tasks it completed since it started.
    async fn tasks_completed(&self) -> i64 {
        i64::try_from(self.0.report.tasks_completed).unwrap_or(i64::MAX)
    }

    /// Tasks that failed for good on it since it started.
    async fn tasks_failed(&self) -> i64 {
        i64::try_from(self.0.report.tasks_failed).unwrap_or(i64::MAX)
    }

    /// When it started.
    async fn started_at(&self) -> DateTime<Utc> {
        self.0.report.started_at
    }

    /// When its last heartbeat arrived (the database's clock).
    async fn last_heartbeat_at(&self) -> DateTime<Utc> {
        self.0.last_heartbeat
    }

    /// Seconds since its last heartbeat (the database's clock, when this was read).
    async fn seconds_since_heartbeat(&self) -> f64 {
        self.0.since_heartbeat.as_secs_f64()
    }

    /// How often it reports, in seconds: it is silent after three intervals without a report.
    async fn heartbeat_interval_seconds(&self) -> f64 {
        self.0.report.heartbeat_interval.as_secs_f64()
    }
}

/// The order `workers` lists them in: running and draining first, then silent, then stopped;
/// by id within each.
pub fn sort(workers: &mut [Worker]) {
    let rank = |w: &Worker| {
        if w.0.is_silent() {
            1
        } else if w.0.report.state == WorkerState::Stopped {
            2
        } else {
            0
        }
    };
    workers.sort_by(|a, b| {
        rank(a)
            .cmp(&rank(b))
            .then_with(|| a.0.report.worker_id.cmp(&b.0.report.worker_id))
    });
}
