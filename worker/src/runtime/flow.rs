//! How many messages a worker holds, and how many it has started, ahead of its slots.
//!
//! A slot is busy only while a handler runs. Everything around a handler costs a commit or a
//! round trip (the receive, the `TaskStarted` commit, the `TaskCompleted` commit and the
//! acknowledgement), so the worker keeps a local buffer of received messages and starts some of
//! them ahead, in the background, so that a freed slot finds a started task waiting. Two limits
//! keep that buffer honest:
//!
//! - **Held** (received, not yet settled: buffered, starting, waiting for a slot, running,
//!   waiting for its end to commit, or being acknowledged or released): at most `concurrency + prefetch`,
//!   and, below that, about what the slots consume during a few receives and commits
//!   ([`Pacing::hold_target`]). A worker of slow tasks therefore holds little more than its
//!   slots (it does not hoard messages other workers could run), a worker of fast tasks fills
//!   its buffer, and a worker whose commits are slow stops receiving at the bound
//!   (back-pressure).
//! - **Ahead** (dispatched, no slot yet: a redelivery or a retry with its `TaskStarted`
//!   appended or being appended, or a first attempt waiting for a slot, which appends nothing
//!   before its handler runs, ADR 27): at most the free slots or what the slots consume during
//!   a few commits, whichever is more ([`Pacing::start_target`]). A task is recorded as started
//!   only shortly before a slot runs it, so its `TaskStarted` time, its deadline (which the
//!   orchestrator's reconciler checks) and the dashboard's RUNNING stay true.
//!
//! The estimates are a rate (handlers done per second, i.e. slots freed: rising fast, decaying
//! over ~100 ms; not slots taken, which an idle worker takes all at once when work arrives) and
//! two latencies (the group commit's, measured by the committer, and a receive's). They only
//! size the lookahead; correctness never depends on them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};

use crate::metrics::WorkerMetrics;

/// How fast the rate estimate forgets (its time constant).
const RATE_MEMORY: Duration = Duration::from_millis(100);
/// The rate is sampled at most this often...
const RATE_SAMPLE: Duration = Duration::from_millis(10);
/// ...and over at least this many handlers done (or [`RATE_MEMORY`]).
/// The most the buffer covers beyond the slots, in time at the current rate. The latencies it
/// multiplies can be far above their usual values for a moment (a worker's first receive and
/// commits while a big job is being expanded took 150-400 ms on SQLite), and a buffer filled
/// for them holds that much of one job's work in front of any job that arrives next.
const MAX_HOLD_SPAN: f64 = 0.5;
const SAMPLE_ENDS: u64 = 8;

/// The counters the slots, the deliveries and the intake loop share.
pub(super) struct Flow {
    slots: Arc<Semaphore>,
    concurrency: usize,
    /// Deliveries dispatched to be started that have not taken a slot (or ended) yet.
    ahead: AtomicUsize,
    /// Handlers done (slots freed) since the start (for the rate).
    done: AtomicU64,
    /// Messages out of the in-flight set whose acknowledgement or release is under way: still
    /// held, for the bound.
    settling: AtomicUsize,
    /// Wakes the intake loop: a slot, a held message or a started one was freed.
    changed: Notify,
    /// Set when the worker stops: deliveries not yet running are released.
    stopping: watch::Sender<bool>,
    metrics: Arc<WorkerMetrics>,
}

impl Flow {
    pub(super) fn new(concurrency: usize, metrics: Arc<WorkerMetrics>) -> Arc<Flow> {
        Arc::new(Flow {
            slots: Arc::new(Semaphore::new(concurrency)),
            concurrency,
            ahead: AtomicUsize::new(0),
            done: AtomicU64::new(0),
            settling: AtomicUsize::new(0),
            changed: Notify::new(),
            stopping: watch::Sender::new(false),
            metrics,
        })
    }

    /// Slots not running a handler.
    pub(super) fn free_slots(&self) -> usize {
        self.slots.available_permits()
    }

    pub(super) fn running(&self) -> usize {
        self.concurrency - self.free_slots().min(self.concurrency)
    }

    pub(super) fn ahead(&self) -> usize {
        self.ahead.load(Ordering::Acquire)
    }

    pub(super) fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Messages being acknowledged or released.
    pub(super) fn settling(&self) -> usize {
        self.settling.load(Ordering::Acquire)
    }

    /// A message leaves the in-flight set to be acknowledged or released; call
    /// [`Flow::settled`] once that is done.
    pub(super) fn settle(&self) {
        self.settling.fetch_add(1, Ordering::AcqRel);
    }

    /// `n` messages were acknowledged or released (or given up on).
    pub(super) fn settled(&self, n: usize) {
        let _ = self
            .settling
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                Some(s.saturating_sub(n))
            });
        self.notify();
    }

    /// Something the intake loop waits on has changed.
    pub(super) fn notify(&self) {
        self.changed.notify_one();
    }

    /// Resolves after the next [`Flow::notify`] (or at once if one came since the last wait).
    pub(super) async fn changed(&self) {
        self.changed.notified().await;
    }

    pub(super) fn stop(&self) {
        self.stopping.send_replace(true);
    }

    pub(super) fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    /// Resolves once the worker stops.
    pub(super) async fn stopped(&self) {
        let mut stopping = self.stopping.subscribe();
        let _ = stopping.wait_for(|s| *s).await;
    }

    /// Counts a delivery as dispatched to be started; it stops counting when it takes a slot
    /// or ends.
    pub(super) fn dispatch(self: &Arc<Self>) -> Ahead {
        self.ahead.fetch_add(1, Ordering::AcqRel);
        Ahead {
            flow: self.clone(),
            counted: std::sync::atomic::AtomicBool::new(true),
        }
    }

    /// Waits for a free slot (slots are handed out in the order asked), or `None` when the
    /// worker stops first.
    pub(super) async fn slot(self: &Arc<Self>) -> Option<Slot> {
        let permit = tokio::select! {
            biased;
            () = self.stopped() => return None,
            permit = self.slots.clone().acquire_owned() => permit.ok()?,
        };
        self.metrics.running.fetch_add(1, Ordering::Relaxed);
        Some(Slot {
            permit: Some(permit),
            flow: self.clone(),
        })
    }
}

/// A delivery counted as started ahead of the slots.
pub(super) struct Ahead {
    flow: Arc<Flow>,
    counted: std::sync::atomic::AtomicBool,
}

impl Ahead {
    /// No longer ahead (it took a slot, or will not run). Idempotent.
    pub(super) fn leave(&self) {
        if self.counted.swap(false, Ordering::AcqRel) {
            self.flow.ahead.fetch_sub(1, Ordering::AcqRel);
            self.flow.notify();
        }
    }
}

impl Drop for Ahead {
    fn drop(&mut self) {
        self.leave();
    }
}

/// A concurrency slot, held while a handler runs.
pub(super) struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    flow: Arc<Flow>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        // Free the slot before waking the intake loop, so that it sees the slot free.
        drop(self.permit.take());
        self.flow.done.fetch_add(1, Ordering::Relaxed);
        self.flow.metrics.running.fetch_sub(1, Ordering::Relaxed);
        self.flow.notify();
    }
}

/// The intake loop's estimates: how fast the slots get through tasks, how long a receive takes.
#[derive(Debug)]
pub(super) struct Pacing {
    last_at: Instant,
    last_done: u64,
    /// Handlers done per second.
    rate: f64,
    /// A receive that found messages waiting, in seconds (0 until one is seen).
    receive: f64,
}

impl Pacing {
    pub(super) fn new(now: Instant) -> Self {
        Pacing {
            last_at: now,
            last_done: 0,
            rate: 0.0,
            receive: 0.0,
        }
    }

    /// Updates the rate from the count of handlers done so far.
    pub(super) fn observe(&mut self, done: u64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last_at);
        let ends = done.saturating_sub(self.last_done);
        // Handlers end one at a time: a sample spans a few ends, or ~100 ms when they are
        // rare, so that one end does not look like a burst.
        if elapsed < RATE_SAMPLE || (ends < SAMPLE_ENDS && elapsed < RATE_MEMORY) {
            return;
        }
        let seconds = elapsed.as_secs_f64();
        let sample = ends as f64 / seconds;
        // Up quickly (half-way per sample: a worker that is getting faster should not wait
        // for its estimate), down over ~100 ms (a short lull should not empty the buffer).
        let weight = if sample > self.rate {
            0.5
        } else {
            1.0 - (-seconds / RATE_MEMORY.as_secs_f64()).exp()
        };
        self.rate += weight * (sample - self.rate);
        self.last_at = now;
        self.last_done = done;
    }

    /// A receive that returned as many messages as asked took `took` (one that waited for
    /// messages says nothing about the queue's latency, and is not counted).
    pub(super) fn received(&mut self, took: Duration) {
        let took = took.as_secs_f64();
        self.receive = if self.receive == 0.0 {
            took
        } else {
            0.8 * self.receive + 0.2 * took
        };
    }

    /// Tasks the slots take in `span`, rounded up.
    fn consumed_in(&self, span: f64) -> usize {
        let tasks = (self.rate * span).ceil();
        if tasks.is_finite() && tasks > 0.0 {
            // Bounded by the callers' caps; the float-to-int conversion saturates.
            tasks.min(1e9) as usize
        } else {
            0
        }
    }

    /// How many deliveries may be started ahead of the slots: the free slots, or what the
    /// slots consume during three commits, whichever is more (at most `cap`).
    pub(super) fn start_target(&self, free_slots: usize, commit: Duration, cap: usize) -> usize {
        // A rate that needs less than half a task per three commits (slow handlers) starts
        // nothing beyond the free slots.
        let ahead = if self.rate * 3.0 * commit.as_secs_f64() < 0.5 {
            0
        } else {
            self.consumed_in(3.0 * commit.as_secs_f64())
        };
        free_slots.max(ahead).min(cap)
    }

    /// How many messages the worker may hold: its slots, plus twice what they consume while
    /// one message goes through a receive and four commits (its start, its end, its
    /// acknowledgement, and a commit under way when it arrives), or what they consume in
    /// [`MAX_HOLD_SPAN`] if that is less, at most `prefetch` more. Twice
    /// leaves the buffer room to grow while the rate it feeds is still rising, and keeps what
    /// a worker of slow tasks holds to a message or two beyond its slots.
    pub(super) fn hold_target(
        &self,
        concurrency: usize,
        prefetch: usize,
        commit: Duration,
    ) -> usize {
        let round = self.receive + 4.0 * commit.as_secs_f64();
        concurrency
            + self
                .consumed_in((2.0 * round).min(MAX_HOLD_SPAN))
                .min(prefetch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paced(rate_per_second: u64) -> Pacing {
        let begin = Instant::now();
        let mut pacing = Pacing::new(begin);
        // Two seconds at a steady rate: the estimate converges.
        for step in 1..=200u64 {
            pacing.observe(
                rate_per_second * step / 100,
                begin + Duration::from_millis(10 * step),
            );
        }
        pacing.received(Duration::from_millis(2));
        pacing
    }

    #[test]
    fn the_rate_follows_what_the_slots_take() {
        let pacing = paced(10_000);
        assert!((pacing.rate - 10_000.0).abs() < 200.0, "{pacing:?}");
        // Idle for a second: it forgets.
        let mut idle = paced(10_000);
        let later = idle.last_at + Duration::from_secs(1);
        idle.observe(idle.last_done, later);
        assert!(idle.rate < 1.0, "{idle:?}");
    }

    #[test]
    fn fast_tasks_fill_the_buffer_and_start_ahead() {
        let pacing = paced(40_000);
        let commit = Duration::from_millis(5);
        // 2 x 40,000/s x (2 + 4 x 5) ms = 1,760 beyond the slots, capped by the prefetch.
        assert_eq!(pacing.hold_target(16, 512, commit), 16 + 512);
        let held = pacing.hold_target(16, 4096, commit);
        assert!((16 + 1740..=16 + 1780).contains(&held), "{held}");
        // 3 x 40,000/s x 5 ms = 600 started ahead, whatever the free slots.
        let ahead = pacing.start_target(0, commit, 10_000);
        assert!((590..=610).contains(&ahead), "{ahead}");
    }

    #[test]
    fn slow_tasks_hold_little_more_than_their_slots() {
        // 16 slots of 2-second tasks: 8 tasks/s.
        let pacing = paced(8);
        let commit = Duration::from_millis(5);
        assert_eq!(pacing.hold_target(16, 512, commit), 17);
        // Nothing is started before a slot is free.
        assert_eq!(pacing.start_target(0, commit, 528), 0);
        assert_eq!(pacing.start_target(2, commit, 528), 2);
    }

    #[test]
    fn a_moment_of_slow_commits_buffers_at_most_half_a_second_of_work() {
        // 8 slots of 50 ms tasks (160/s) while a big job is being expanded: a receive took
        // 380 ms and a commit 150 ms. Twice that round would be ~310 messages beyond the slots.
        let mut pacing = paced(160);
        pacing.receive = 0.38;
        assert_eq!(
            pacing.hold_target(8, 2048, Duration::from_millis(150)),
            8 + 80
        );
        // Usual latencies are under the bound: 2 x 160/s x (2 + 4 x 5) ms, rounded up.
        pacing.receive = 0.002;
        assert_eq!(pacing.hold_target(8, 2048, Duration::from_millis(5)), 8 + 8);
    }

    #[test]
    fn a_fresh_worker_asks_for_its_slots_and_a_zero_prefetch_never_more() {
        let pacing = Pacing::new(Instant::now());
        let commit = Duration::from_millis(5);
        assert_eq!(pacing.hold_target(16, 512, commit), 16);
        assert_eq!(pacing.start_target(16, commit, 528), 16);
        assert_eq!(paced(40_000).hold_target(16, 0, commit), 16);
    }
}
