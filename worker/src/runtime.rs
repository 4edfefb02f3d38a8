//! The worker loop: receives as many messages as there are free concurrency slots, hands each
//! delivery to [`delivery`] on a task of its own, keeps the messages being handled hidden
//! (heartbeat), and on shutdown drains: running tasks get the grace period, then what is left
//! is released and the pending appends and acknowledgements are written.
//!
//! What happens to one delivery, and when its message is acknowledged, is all in
//! [`delivery`]; this file only decides how many deliveries run at once and when the loop ends.

mod delivery;
mod health;
mod job_cache;
mod presence;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use shoal_infra::eventlog::EventLog;
use shoal_infra::queue::{Delivery, Receipt, TaskQueue};
use shoal_infra::workers::{WorkerRegistry, WorkerState};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::batching::{AckBatcher, GroupCommitter};
use crate::config::{ConfigError, WorkerConfig};
use crate::handler::Handlers;
use crate::metrics::{WorkerMetrics, WorkerStats};

use self::delivery::{Shared, process};
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

    /// Runs until `shutdown` completes, then drains: stops receiving, gives running tasks
    /// `grace_period` to finish, releases the messages of those still running (they are
    /// visible to other workers at once), flushes pending writes, and returns the counters.
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
            handlers = %handlers.names().collect::<Vec<_>>().join(","),
            "worker starting"
        );

        let (committer, commit_task) =
            GroupCommitter::new(log.clone(), config.max_commit_batches, metrics.clone());
        let commit_task = AbortOnDrop(tokio::spawn(commit_task));
        let (acks, ack_task) = AckBatcher::new(queue.clone());
        let ack_task = AbortOnDrop(tokio::spawn(ack_task));
        let inflight = Arc::new(Inflight::default());
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
        });
        let config = &shared.config;
        let slots = Arc::new(Semaphore::new(config.concurrency));
        let mut tasks = JoinSet::new();
        let mut receive_backoff = Duration::ZERO;
        let mut probe_backoff = Duration::ZERO;
        let shutdown = shutdown;
        tokio::pin!(shutdown);

        loop {
            while let Some(done) = tasks.try_join_next() {
                report_task_end(done);
            }
            // `slots` is never closed, so acquiring a permit cannot fail.
            #[allow(clippy::expect_used)]
            let first = tokio::select! {
                biased;
                _ = &mut shutdown => break,
                permit = slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            };
            if !shared.health.is_healthy() {
                // Messages received now could not be started: leave them to the queue.
                drop(first);
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
            let mut permits = vec![first];
            while permits.len() < config.receive_batch {
                match slots.clone().try_acquire_owned() {
                    Ok(permit) => permits.push(permit),
                    Err(_) => break,
                }
            }
            // Dropping a receive that waits (long polling) is safe; one dropped in the middle
            // of its claim may leave messages hidden until their visibility timeout.
            let received = tokio::select! {
                biased;
                _ = &mut shutdown => break,
                received = queue.receive(permits.len(), config.visibility_timeout, config.long_poll) => received,
            };
            let deliveries = match received {
                Ok(deliveries) => {
                    receive_backoff = Duration::ZERO;
                    deliveries
                }
                Err(error) => {
                    receive_backoff = next_backoff(receive_backoff);
                    tracing::warn!(%error, retry_in = ?receive_backoff, "receiving from the queue failed");
                    drop(permits);
                    tokio::select! {
                        biased;
                        _ = &mut shutdown => break,
                        () = tokio::time::sleep(receive_backoff) => continue,
                    }
                }
            };
            for (delivery, permit) in deliveries.into_iter().zip(permits.drain(..)) {
                WorkerMetrics::inc(&metrics.received);
                let key = inflight.insert(delivery.receipt.clone());
                let span = delivery_span(&delivery, &shared.config.worker_id);
                tasks.spawn(process(shared.clone(), delivery, key, permit).instrument(span));
            }
        }

        state.send_replace(WorkerState::Draining);
        tracing::info!(
            running = tasks.len(),
            grace_period = ?shared.config.grace_period,
            "worker stopping: no new messages; waiting for running tasks"
        );
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
        for receipt in unfinished {
            match queue.release(&receipt, Duration::ZERO).await {
                Ok(()) => WorkerMetrics::inc(&metrics.released),
                Err(error) => tracing::warn!(%error, "could not release a message at shutdown"),
            }
        }
        drop(heartbeat);
        // The tasks are gone: the last handles to the committer and the acknowledger go with
        // `shared`, and both end once what they hold is written.
        let config = shared.config.clone();
        drop(shared);
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

/// The receipts of the messages being handled: what the heartbeat extends and what shutdown
/// releases.
#[derive(Default)]
struct Inflight {
    next: AtomicU64,
    receipts: std::sync::Mutex<HashMap<u64, Receipt>>,
}

impl Inflight {
    fn insert(&self, receipt: Receipt) -> u64 {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(key, receipt);
        key
    }

    fn remove(&self, key: u64) {
        self.lock().remove(&key);
    }

    fn receipts(&self) -> Vec<Receipt> {
        self.lock().values().cloned().collect()
    }

    fn drain(&self) -> Vec<Receipt> {
        self.lock().drain().map(|(_, receipt)| receipt).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Receipt>> {
        // A panic while holding this lock cannot leave the map half-changed.
        self.receipts
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
