//! The worker's presence: a heartbeat to its registry every `heartbeat_interval` with what it
//! is doing (slots in use, tasks per second, state), at once when its state changes (draining
//! on shutdown), and a last one when it has stopped. A task of its own beside the receive loop:
//! it reads the worker's counters and touches neither the queue nor the log.
//!
//! A failed heartbeat is logged and tried again at the next tick: the registry is for people
//! watching, never a reason to stop running tasks.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use shoal_infra::workers::{WorkerRegistry, WorkerReport, WorkerState};
use tokio::sync::watch;

use crate::config::WorkerConfig;
use crate::metrics::WorkerMetrics;

/// Rows of workers silent for this long are deleted (by any live worker).
pub(super) const FORGET_AFTER: Duration = Duration::from_secs(3600);
/// How often a worker deletes them: every this many heartbeats.
const FORGET_EVERY: u64 = 60;
/// How long the last heartbeat (stopped) may take at shutdown.
pub(super) const LAST_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a worker reports itself, and what it reports that does not change.
#[derive(Debug, Clone)]
pub(super) struct Presence {
    pub(super) registry: Arc<dyn WorkerRegistry>,
    /// `sql`, or `sqs:<queue name>`.
    pub(super) queue: String,
}

/// One worker's reports.
pub(super) struct Reporter {
    registry: Arc<dyn WorkerRegistry>,
    metrics: Arc<WorkerMetrics>,
    base: WorkerReport,
    /// Tasks ended at the previous report, and when.
    previous: (u64, Instant),
    failing: bool,
}

impl Reporter {
    pub(super) fn new(
        presence: Presence,
        config: &WorkerConfig,
        metrics: Arc<WorkerMetrics>,
        started_at: DateTime<Utc>,
    ) -> Self {
        let base = WorkerReport {
            worker_id: config.worker_id.clone(),
            host: crate::config::host_name(),
            queue: presence.queue,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            state: WorkerState::Running,
            slots_total: u32::try_from(config.concurrency).unwrap_or(u32::MAX),
            slots_used: 0,
            tasks_per_second: 0.0,
            tasks_completed: 0,
            tasks_failed: 0,
            heartbeat_interval: config.heartbeat_interval,
            started_at,
        };
        let ended = ended(&metrics);
        Reporter {
            registry: presence.registry,
            metrics,
            base,
            previous: (ended, Instant::now()),
            failing: false,
        }
    }

    /// The report as of now, in `state`.
    fn report(&mut self, state: WorkerState) -> WorkerReport {
        let now = Instant::now();
        let ended = ended(&self.metrics);
        let (before, at) = self.previous;
        let seconds = now.duration_since(at).as_secs_f64();
        let tasks_per_second = if seconds > 0.0 {
            ended.saturating_sub(before) as f64 / seconds
        } else {
            0.0
        };
        self.previous = (ended, now);
        let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
        WorkerReport {
            state,
            slots_used: u32::try_from(load(&self.metrics.running)).unwrap_or(u32::MAX),
            tasks_per_second,
            tasks_completed: load(&self.metrics.completed),
            tasks_failed: load(&self.metrics.failed),
            ..self.base.clone()
        }
    }

    async fn send(&mut self, state: WorkerState) {
        let report = self.report(state);
        match self.registry.heartbeat(&report).await {
            Ok(()) => {
                if self.failing {
                    tracing::info!("worker heartbeats are recorded again");
                }
                self.failing = false;
            }
            Err(error) => {
                if !self.failing {
                    tracing::warn!(%error, "could not record the worker's heartbeat; trying again at the next");
                }
                self.failing = true;
            }
        }
    }

    /// Reports every interval, and at once when `state` changes, until the state's sender is
    /// dropped (or the task aborted: a crash).
    pub(super) async fn run(mut self, mut state: watch::Receiver<WorkerState>) {
        let mut ticker = tokio::time::interval(self.base.heartbeat_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate: the first report goes out at once below.
        ticker.tick().await;
        let mut beats: u64 = 0;
        loop {
            let current = *state.borrow_and_update();
            self.send(current).await;
            if beats.is_multiple_of(FORGET_EVERY)
                && let Err(error) = self.registry.forget(FORGET_AFTER).await
            {
                tracing::debug!(%error, "could not forget long-silent workers");
            }
            beats += 1;
            tokio::select! {
                _ = ticker.tick() => {}
                changed = state.changed() => {
                    if changed.is_err() {
                        // The worker has drained: it sends the last report itself.
                        return;
                    }
                }
            }
        }
    }

    /// The last report: the worker has stopped. Bounded in time, so that a database that does
    /// not answer cannot hold up the process's exit.
    pub(super) async fn stopped(mut self) {
        if tokio::time::timeout(LAST_HEARTBEAT_TIMEOUT, self.send(WorkerState::Stopped))
            .await
            .is_err()
        {
            tracing::warn!("could not record that the worker stopped: the registry did not answer");
        }
    }
}

/// Attempts that ended on this worker so far (completed, failed, retried).
fn ended(metrics: &WorkerMetrics) -> u64 {
    let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
    load(&metrics.completed) + load(&metrics.failed) + load(&metrics.retried)
}
