//! The worker loop: receives ahead into a local buffer (bounded by `prefetch`, paced by
//! [`flow`]), dispatches buffered deliveries to [`delivery`] on tasks of their own a little
//! ahead of the slots, keeps every message it holds hidden (heartbeat), and on shutdown drains:
//! the buffer and the deliveries not yet running are released at once, running tasks get the
//! grace period, then what is left is released and the pending appends and acknowledgements
//! are written.
//!
//! What happens to one delivery, and when its message is acknowledged, is all in
//! [`delivery`]; this file only decides how many messages are held and started, and when the
//! loop ends. ADR 0013 has the design and what a crash at each point does.

mod buffer;
mod delivery;
mod firsts;
mod flow;
mod health;
mod job_cache;
mod presence;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use shoal_infra::eventlog::EventLog;
use shoal_infra::queue::{Delivery, Receipt, TaskQueue};
use shoal_infra::workers::{WorkerRegistry, WorkerState};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::batching::{AckBatcher, CommitLatency, GroupCommitter};
use crate::config::{ConfigError, WorkerConfig};
use crate::handler::Handlers;
use crate::metrics::{WorkerMetrics, WorkerStats};

use self::buffer::FairBuffer;
use self::delivery::{Shared, process};
use self::firsts::Firsts;
use self::flow::{Flow, Pacing};
use self::health::{LogHealth, next_backoff};
use self::job_cache::JobCache;
use self::presence::{Presence, Reporter};

/// Why a worker could not run.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The configuration is unusable (see [`WorkerConfig::validate`]); fix it and restart.
    #[error("invalid worker configuration")]
    Config(#[from] ConfigError),
}

/// A worker: runs tasks from a queue until told to stop. See the crate docs.
#[derive(Debug)]
pub struct Worker {
    config: WorkerConfig,
    handlers: Handlers,
    log: Arc<dyn EventLog>,
    queue: Arc<dyn TaskQueue>,
    metrics: Arc<WorkerMetrics>,
    presence: Option<Presence>,
}

impl Worker {
    /// A worker that takes tasks from `queue`, runs them with `handlers`, and records what
    /// happened in `log`.
    pub fn new(
        config: WorkerConfig,
        handlers: Handlers,
        log: Arc<dyn EventLog>,
        queue: Arc<dyn TaskQueue>,
    ) -> Self {
        Worker {
            config,
            handlers,
            log,
            queue,
            metrics: Arc::new(WorkerMetrics::default()),
            presence: None,
        }
    }

    /// Reports the worker to `registry` while it runs (the dashboard's workers page): a
    /// heartbeat every [`WorkerConfig::heartbeat_interval`] with its slots in use and tasks per
    /// second, `draining` as soon as it is told to stop, and `stopped` once it has drained. A
    /// worker that dies without stopping goes silent. `queue` names its queue there (`sql`,
    /// or `sqs:<queue name>`).
    pub fn reporting_to(
        mut self,
        registry: Arc<dyn WorkerRegistry>,
        queue: impl Into<String>,
    ) -> Self {
        self.presence = Some(Presence {
            registry,
            queue: queue.into(),
        });
        self
    }

    /// The worker's live counters (for metrics endpoints and tests); valid before, during and
    /// after [`Worker::run`].
    pub fn metrics(&self) -> Arc<WorkerMetrics> {
        self.metrics.clone()
    }

    /// Runs until `shutdown` completes, then drains: stops receiving, releases at once the
    /// messages it holds that no handler runs yet (the buffer), gives running tasks
    /// `grace_period` to finish and records their ends, releases the messages of those still
    /// running after it (they are visible to other workers at once), flushes pending writes,
    /// and returns the counters.
    ///
    /// Queue and log errors never end the loop: they are logged and retried with backoff.
    /// A delivery that meets one keeps its message (hidden by the heartbeat) and tries again,
    /// so an outage uses none of a message's receives; while the log fails, the loop receives
    /// nothing and probes the log instead (see `health`). Dropping the returned future stops
    /// everything at once, like a crash: messages then come back after their visibility
    /// timeout.
    pub async fn run<F>(self, shutdown: F) -> Result<WorkerStats, WorkerError>
    where
        F: Future + Send,
    {
        self.config.validate()?;
        let Worker {
            config,
            handlers,
            log,
            queue,
            metrics,
            presence,
        } = self;
        let started_at = chrono::Utc::now();
        let (state, state_seen) = watch::channel(WorkerState::Running);
        let reporting = presence.clone().map(|presence| {
            let reporter = Reporter::new(presence, &config, metrics.clone(), started_at);
            AbortOnDrop(tokio::spawn(reporter.run(state_seen)))
        });
        tracing::info!(
            worker_id = %config.worker_id,
            concurrency = config.concurrency,
            prefetch = config.prefetch,
            handlers = %handlers.names().collect::<Vec<_>>().join(","),
            "worker starting"
        );

        let commit_latency = Arc::new(CommitLatency::default());
        let (committer, commit_task) = GroupCommitter::new(
            log.clone(),
            config.max_commit_batches,
            config.max_concurrent_commits,
            config.acks_in_commit,
            metrics.clone(),
            commit_latency.clone(),
        );
        let commit_task = AbortOnDrop(tokio::spawn(commit_task));
        let flow = Flow::new(config.concurrency, metrics.clone());
        let acked = {
            let flow = flow.clone();
            Arc::new(move |n| flow.settled(n))
        };
        let (acks, ack_task) = AckBatcher::new(queue.clone(), acked);
        let ack_task = AbortOnDrop(tokio::spawn(ack_task));
        let inflight = Arc::new(Inflight::new(metrics.clone()));
        let heartbeat = AbortOnDrop(tokio::spawn(heartbeat(
            queue.clone(),
            inflight.clone(),
            config.visibility_timeout,
        )));

        let shared = Arc::new(Shared {
            jobs: JobCache::new(config.cancel_check_ttl),
            config,
            handlers,
            log,
            queue: queue.clone(),
            metrics: metrics.clone(),
            committer,
            acks,
            inflight: inflight.clone(),
            health: Arc::new(LogHealth::default()),
            flow: flow.clone(),
            firsts: Firsts::default(),
        });
        let config = &shared.config;
        let concurrency = config.concurrency;
        let prefetch = config.prefetch;
        let mut tasks = JoinSet::new();
        // Received, not yet dispatched to be started: the local buffer, in the queue's fair
        // order (priority, then each job in turn).
        let mut buffered = FairBuffer::default();
        let mut receiving: Option<Receiving<'_>> = None;
        let mut receive_backoff = Duration::ZERO;
        let mut retry_receive_at: Option<tokio::time::Instant> = None;
        let mut probe_backoff = Duration::ZERO;
        let mut pacing = Pacing::new(Instant::now());
        let shutdown = shutdown;
        tokio::pin!(shutdown);

        loop {
            while let Some(done) = tasks.try_join_next() {
                report_task_end(done);
            }
            pacing.observe(flow.done(), Instant::now());
            let commit = commit_latency.get();
            let held_cap = concurrency + prefetch;

            // Start buffered deliveries, about as many as the slots will take soon.
            let start_target = pacing.start_target(flow.free_slots(), commit, held_cap);
            while flow.ahead() < start_target {
                let Some((delivery, key)) = buffered.pop() else {
                    break;
                };
                let span = delivery_span(&delivery, &shared.config.worker_id);
                let ahead = flow.dispatch();
                tasks.spawn(process(shared.clone(), delivery, key, ahead).instrument(span));
            }

            if receiving.is_none() && retry_receive_at.is_none() {
                if !shared.health.is_healthy() {
                    // Messages received now could not be started: leave them to the queue.
                    probe_backoff = next_backoff(probe_backoff);
                    tokio::select! {
                        biased;
                        _ = &mut shutdown => break,
                        () = shared.health.wait(probe_backoff) => {}
                    }
                    if !shared.health.is_healthy() {
                        match shared.log.head().await {
                            Ok(_) => shared.health.succeeded(),
                            Err(error) => {
                                tracing::debug!(%error, "the event log still fails");
                            }
                        }
                    }
                    continue;
                }
                probe_backoff = Duration::ZERO;
                let target = pacing
                    .hold_target(concurrency, prefetch, commit)
                    .min(held_cap);
                let held = inflight.len() + flow.settling();
                // Beyond the slots, only as many as fit in the buffer's bytes.
                let fit = inflight
                    .fit_in(config.prefetch_bytes)
                    .max(concurrency.saturating_sub(held));
                let room = target
                    .saturating_sub(held)
                    .min(config.receive_batch)
                    .min(fit);
                if room > 0 {
                    receiving = Some(Receiving {
                        asked: room,
                        began: Instant::now(),
                        future: queue.receive(room, config.visibility_timeout, config.long_poll),
                    });
                }
            }

            // A receive under way is not dropped here: shutdown lets it finish.
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                received = async { Some((&mut receiving.as_mut()?.future).await) }, if receiving.is_some() => {
                    let Some(Receiving { asked, began, .. }) = receiving.take() else {
                        continue;
                    };
                    match received {
                        Some(Ok(deliveries)) => {
                            receive_backoff = Duration::ZERO;
                            // A receive that found messages waiting (as many as asked, or
                            // a full SQS batch) measures the queue's latency; one that waited
                            // for messages does not.
                            if !deliveries.is_empty()
                                && (deliveries.len() >= asked || deliveries.len() >= 10)
                            {
                                pacing.received(began.elapsed());
                            }
                            for delivery in deliveries {
                                WorkerMetrics::inc(&metrics.received);
                                let key = inflight.insert(&delivery);
                                buffered.push((delivery, key));
                            }
                        }
                        Some(Err(error)) => {
                            receive_backoff = next_backoff(receive_backoff);
                            tracing::warn!(%error, retry_in = ?receive_backoff, "receiving from the queue failed");
                            retry_receive_at = Some(tokio::time::Instant::now() + receive_backoff);
                        }
                        None => {}
                    }
                }
                () = sleep_until_some(retry_receive_at), if retry_receive_at.is_some() => {
                    retry_receive_at = None;
                }
                () = flow.changed() => {}
            }
        }

        state.send_replace(WorkerState::Draining);
        // Not yet running: released at once, to be run elsewhere.
        flow.stop();
        // A receive under way is let finish (a long poll briefly): one dropped in the middle of
        // its claim could leave its messages hidden until their visibility timeout, and its
        // database connection in the claim's transaction. What it brings is released.
        if let Some(Receiving { future, .. }) = receiving.take()
            && let Ok(Ok(deliveries)) = tokio::time::timeout(RECEIVE_DRAIN, future).await
        {
            for delivery in deliveries {
                WorkerMetrics::inc(&metrics.received);
                let key = inflight.insert(&delivery);
                buffered.push((delivery, key));
            }
        }
        tracing::info!(
            buffered = buffered.len(),
            running = flow.running(),
            grace_period = ?shared.config.grace_period,
            "worker stopping: no new messages; releasing the buffer, waiting for running tasks"
        );
        let unstarted: Vec<Receipt> = buffered
            .drain()
            .map(|(delivery, key)| {
                inflight.remove(key);
                delivery.receipt
            })
            .collect();
        release_all(&shared, unstarted.into_iter()).await;
        let drained = tokio::time::timeout(shared.config.grace_period, async {
            while let Some(done) = tasks.join_next().await {
                report_task_end(done);
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                running = tasks.len(),
                "grace period over: releasing the messages of tasks still running"
            );
            tasks.shutdown().await;
        }
        let unfinished = inflight.drain();
        release_all(&shared, unfinished.into_iter()).await;
        drop(heartbeat);
        // The tasks are gone: the last handles to the committer and the acknowledger go with
        // `shared`, and both end once what they hold is written.
        let config = shared.config.clone();
        drop(shared);
        drop(flow);
        let _ = ack_task.join().await;
        let _ = commit_task.join().await;
        // The reporter ends once the state's sender is gone (after a report in flight, so that
        // it cannot land after the last one).
        drop(state);
        if let Some(reporting) = reporting {
            let _ = tokio::time::timeout(presence::LAST_HEARTBEAT_TIMEOUT, reporting.join()).await;
        }
        if let Some(presence) = presence {
            Reporter::new(presence, &config, metrics.clone(), started_at)
                .stopped()
                .await;
        }
        let stats = metrics.snapshot();
        tracing::info!(?stats, "worker stopped");
        Ok(stats)
    }
}

/// A receive under way.
struct Receiving<'a> {
    asked: usize,
    began: Instant,
    future: std::pin::Pin<
        Box<dyn Future<Output = shoal_infra::queue::QueueResult<Vec<Delivery>>> + Send + 'a>,
    >,
}

async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

/// Makes messages visible again at once (a few calls at a time). Their receipts are out of
/// the in-flight set already.
async fn release_all(shared: &Shared, receipts: impl Iterator<Item = Receipt>) {
    shared.inflight.extended().await;
    futures::stream::iter(receipts)
        .for_each_concurrent(RELEASE_CONCURRENCY, |receipt| async move {
            match shared.queue.release(&receipt, Duration::ZERO).await {
                Ok(()) => WorkerMetrics::inc(&shared.metrics.released),
                Err(error) => tracing::warn!(%error, "could not release a message at shutdown"),
            }
        })
        .await;
}

/// Releases at shutdown made at once.
const RELEASE_CONCURRENCY: usize = 16;

/// How long shutdown waits for a receive under way (the SQL queue's long poll is 1 s; an SQS
/// receive, which is safe to drop, waits up to 20 s and is dropped after this).
const RECEIVE_DRAIN: Duration = Duration::from_millis(1500);

fn report_task_end(done: Result<(), tokio::task::JoinError>) {
    if let Err(error) = done
        && error.is_panic()
    {
        tracing::error!(%error, "a task's processing panicked; its message will come back");
    }
}

fn delivery_span(delivery: &Delivery, worker_id: &str) -> tracing::Span {
    match &delivery.body {
        Ok(message) => {
            let span = tracing::info_span!(
                "task",
                job_id = %message.job_id,
                task_id = %message.task_id,
                job_type = %message.job_type,
                attempt = message.attempt,
                worker_id = %worker_id,
                receive_count = delivery.receive_count,
            );
            crate::telemetry::follow_trace(&span, message);
            span
        }
        Err(_) => tracing::info_span!("poison_message", receive_count = delivery.receive_count),
    }
}

/// The receipts of the messages this worker holds (buffered, running, or being recorded):
/// what the heartbeat extends and what shutdown releases. Its size is the `in_flight` gauge;
/// their bodies' bytes bound the buffer ([`WorkerConfig::prefetch_bytes`]).
struct Inflight {
    next: AtomicU64,
    held: std::sync::Mutex<HeldReceipts>,
    metrics: Arc<WorkerMetrics>,
    /// Held by the heartbeat from the moment it takes the receipts until its `extend` has
    /// answered. A release waits for it ([`Inflight::extended`]): an `extend` of a receipt sent
    /// before its release and applied after it would hide the message again for a whole
    /// visibility timeout (an SQS call can take seconds).
    extending: tokio::sync::Mutex<()>,
}

/// Each held message's receipt and body size, and the sizes' sum.
#[derive(Default)]
struct HeldReceipts {
    receipts: HashMap<u64, (Receipt, usize)>,
    bytes: usize,
}

impl Inflight {
    fn new(metrics: Arc<WorkerMetrics>) -> Self {
        Inflight {
            next: AtomicU64::new(0),
            held: std::sync::Mutex::default(),
            metrics,
            extending: tokio::sync::Mutex::new(()),
        }
    }

    /// Returns once no `extend` that may carry a receipt removed before this call is under way:
    /// call it between removing a receipt and releasing its message.
    async fn extended(&self) {
        drop(self.extending.lock().await);
    }

    fn insert(&self, delivery: &Delivery) -> u64 {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        let mut held = self.lock();
        held.receipts
            .insert(key, (delivery.receipt.clone(), delivery.size));
        held.bytes += delivery.size;
        self.gauge(&held);
        key
    }

    fn remove(&self, key: u64) {
        let mut held = self.lock();
        if let Some((_, size)) = held.receipts.remove(&key) {
            held.bytes -= size;
        }
        self.gauge(&held);
    }

    fn len(&self) -> usize {
        self.lock().receipts.len()
    }

    /// How many more messages fit in `budget` bytes at the average size of those held (at
    /// least one while any room is left; no bound while nothing is held).
    fn fit_in(&self, budget: usize) -> usize {
        let held = self.lock();
        let count = held.receipts.len();
        if count == 0 {
            return usize::MAX;
        }
        let Some(room) = budget.checked_sub(held.bytes).filter(|room| *room > 0) else {
            return 0;
        };
        let average = (held.bytes / count).max(1);
        room.div_ceil(average)
    }

    fn receipts(&self) -> Vec<Receipt> {
        self.lock()
            .receipts
            .values()
            .map(|(receipt, _)| receipt.clone())
            .collect()
    }

    fn drain(&self) -> Vec<Receipt> {
        let mut held = self.lock();
        held.bytes = 0;
        let drained = held
            .receipts
            .drain()
            .map(|(_, (receipt, _))| receipt)
            .collect();
        self.gauge(&held);
        drained
    }

    fn gauge(&self, held: &HeldReceipts) {
        let set = |gauge: &AtomicU64, value: usize| gauge.store(value as u64, Ordering::Relaxed);
        set(&self.metrics.in_flight, held.receipts.len());
        set(&self.metrics.held_bytes, held.bytes);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HeldReceipts> {
        // A panic while holding this lock cannot leave the counts half-changed.
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Keeps every message being handled hidden: one `extend` call for all of them, every third of
/// the visibility timeout.
async fn heartbeat(queue: Arc<dyn TaskQueue>, inflight: Arc<Inflight>, visibility: Duration) {
    let mut ticker = tokio::time::interval(visibility / 3);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let _extending = inflight.extending.lock().await;
        let receipts = inflight.receipts();
        if receipts.is_empty() {
            continue;
        }
        if let Err(error) = queue.extend(&receipts, visibility).await {
            tracing::warn!(%error, messages = receipts.len(), "heartbeat could not extend visibility");
        }
    }
}

/// Aborts a spawned task when dropped (a dropped worker takes its helpers with it).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> AbortOnDrop<T> {
    async fn join(mut self) -> Result<T, tokio::task::JoinError> {
        (&mut self.0).await
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(size: usize) -> Delivery {
        Delivery {
            receipt: Receipt(format!("r{size}")),
            body: Err(shoal_infra::queue::PoisonMessage {
                raw: String::new(),
                error: String::new(),
            }),
            receive_count: 1,
            priority: 0,
            size,
        }
    }

    #[test]
    fn the_buffer_takes_as_many_as_fit_its_bytes_at_the_average_size() {
        let held = Inflight::new(Arc::new(WorkerMetrics::default()));
        assert_eq!(held.fit_in(0), usize::MAX, "nothing held: nothing to go by");
        let a = held.insert(&delivery(1000));
        held.insert(&delivery(3000));
        // 2,000 bytes on average, 6,000 left: three more.
        assert_eq!(held.fit_in(10_000), 3);
        // Room for part of one: one more (the bound is crossed by at most one message).
        assert_eq!(held.fit_in(4_001), 1);
        assert_eq!(held.fit_in(4_000), 0);
        assert_eq!(held.fit_in(100), 0);
        held.remove(a);
        assert_eq!(held.fit_in(9_000), 2);
        let gauges = held.metrics.snapshot();
        assert_eq!((gauges.in_flight, gauges.held_bytes), (1, 3000));
        assert_eq!(held.drain().len(), 1);
        assert_eq!(held.fit_in(1), usize::MAX);
        let gauges = held.metrics.snapshot();
        assert_eq!((gauges.in_flight, gauges.held_bytes), (0, 0));
    }
}
