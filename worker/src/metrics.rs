//! Counters of a running worker, readable at any time (for Prometheus, tests, logs).

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters of a worker. Shared through an `Arc` (see [`crate::Worker::metrics`]); every
/// field only grows, except the gauges `in_flight`, `held_bytes` and `running`.
#[derive(Debug, Default)]
pub struct WorkerMetrics {
    /// Messages received (poison ones included).
    pub received: AtomicU64,
    /// Tasks this worker completed.
    pub completed: AtomicU64,
    /// Tasks that failed for good here (`TaskFailed` with `final_failure`).
    pub failed: AtomicU64,
    /// Attempts that failed here with a retry scheduled.
    pub retried: AtomicU64,
    /// Deliveries skipped because the log showed them handled already (duplicate, late, or
    /// completed by another holder).
    pub skipped_duplicates: AtomicU64,
    /// Deliveries skipped because their job was cancelled.
    pub skipped_cancelled: AtomicU64,
    /// Messages this worker moved to the dead-letter queue (failed tasks and poison messages).
    pub dead_lettered: AtomicU64,
    /// Messages that could not be parsed (dead-lettered, and counted there too).
    pub poison: AtomicU64,
    /// Messages released back to the queue (too early, shutdown, a panic).
    pub released: AtomicU64,
    /// Attempts taken over from a worker presumed dead.
    pub taken_over: AtomicU64,
    /// Attempts that ran out of time.
    pub timed_out: AtomicU64,
    /// Group commits made.
    pub commits: AtomicU64,
    /// Task appends carried by those commits (`committed_batches / commits` is the grouping).
    pub committed_batches: AtomicU64,
    /// Messages this worker holds right now: buffered, started, running, or waiting for their
    /// end to commit (at most `concurrency + prefetch`).
    pub in_flight: AtomicU64,
    /// The bodies of those messages, in bytes (beyond the slots, at most about
    /// `prefetch_bytes`).
    pub held_bytes: AtomicU64,
    /// Handlers running right now (at most `concurrency`).
    pub running: AtomicU64,
    /// Times a delivery was held (its message kept hidden) and tried again because the log or
    /// the queue failed: infrastructure errors use none of a message's receives.
    pub held_on_errors: AtomicU64,
}

/// A snapshot of [`WorkerMetrics`]; what [`crate::Worker::run`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WorkerStats {
    /// See [`WorkerMetrics::received`].
    pub received: u64,
    /// See [`WorkerMetrics::completed`].
    pub completed: u64,
    /// See [`WorkerMetrics::failed`].
    pub failed: u64,
    /// See [`WorkerMetrics::retried`].
    pub retried: u64,
    /// See [`WorkerMetrics::skipped_duplicates`].
    pub skipped_duplicates: u64,
    /// See [`WorkerMetrics::skipped_cancelled`].
    pub skipped_cancelled: u64,
    /// See [`WorkerMetrics::dead_lettered`].
    pub dead_lettered: u64,
    /// See [`WorkerMetrics::poison`].
    pub poison: u64,
    /// See [`WorkerMetrics::released`].
    pub released: u64,
    /// See [`WorkerMetrics::taken_over`].
    pub taken_over: u64,
    /// See [`WorkerMetrics::timed_out`].
    pub timed_out: u64,
    /// See [`WorkerMetrics::commits`].
    pub commits: u64,
    /// See [`WorkerMetrics::committed_batches`].
    pub committed_batches: u64,
    /// See [`WorkerMetrics::in_flight`].
    pub in_flight: u64,
    /// See [`WorkerMetrics::held_bytes`].
    pub held_bytes: u64,
    /// See [`WorkerMetrics::running`].
    pub running: u64,
    /// See [`WorkerMetrics::held_on_errors`].
    pub held_on_errors: u64,
}

impl WorkerMetrics {
    /// The counters now.
    pub fn snapshot(&self) -> WorkerStats {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        WorkerStats {
            received: get(&self.received),
            completed: get(&self.completed),
            failed: get(&self.failed),
            retried: get(&self.retried),
            skipped_duplicates: get(&self.skipped_duplicates),
            skipped_cancelled: get(&self.skipped_cancelled),
            dead_lettered: get(&self.dead_lettered),
            poison: get(&self.poison),
            released: get(&self.released),
            taken_over: get(&self.taken_over),
            timed_out: get(&self.timed_out),
            commits: get(&self.commits),
            committed_batches: get(&self.committed_batches),
            in_flight: get(&self.in_flight),
            held_bytes: get(&self.held_bytes),
            running: get(&self.running),
            held_on_errors: get(&self.held_on_errors),
        }
    }

    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
