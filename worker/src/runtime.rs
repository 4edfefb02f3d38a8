//! The worker loop: receive, start, run, record, acknowledge; heartbeats; graceful shutdown.
//!
//! The event log decides every step. A delivery becomes work only once its `TaskStarted`
//! is appended at the version the message names; an append that conflicts means the log
//! knows something the message does not (a duplicate delivery, a later attempt, a worker that
//! died mid-task), and the worker reads the task's stream to find out what.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::FutureExt;
use serde_json::{Value, json};
use shoal_domain::limits::DEFAULT_TIMEOUT_SECONDS;
use shoal_domain::{
    Event, FIRST_ATTEMPT, JobId, JobStatus, TaskCommand, TaskId, TaskState, TaskStatus,
    decide_task, events::TaskEnqueued, evolve_job, evolve_task, retry_backoff,
};
use shoal_infra::eventlog::{
    AppendBatch, EventLog, ExpectedVersion, LogError, NewEvent, RecordedEvent, StreamAppend,
};
use shoal_infra::queue::{Delivery, QueueError, Receipt, TaskMessage, TaskQueue};
use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::batching::{AckBatcher, GroupCommitter};
use crate::config::WorkerConfig;
use crate::handler::{Handler, Handlers, TaskContext, TaskError};
use crate::metrics::{WorkerMetrics, WorkerStats};

/// How long a message waits before it comes back after an infrastructure error (the log or
/// the queue failed), so that the failure is not hammered.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// The longest pause between receives after queue errors.
const MAX_RECEIVE_BACKOFF: Duration = Duration::from_secs(5);

/// Why a worker could not run.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The configuration is unusable (see [`WorkerConfig::validate`]); fix it and restart.
    #[error("invalid worker configuration: {0}")]
    Config(String),
}

/// A worker: runs tasks from a queue until told to stop. See the crate docs.
#[derive(Debug)]
pub struct Worker {
    config: WorkerConfig,
    handlers: Handlers,
    log: Arc<dyn EventLog>,
    queue: Arc<dyn TaskQueue>,
    metrics: Arc<WorkerMetrics>,
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
        }
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
    /// Queue and log errors never end the loop: they are logged and retried with backoff (the
    /// messages involved come back through the queue). Dropping the returned future stops
    /// everything at once, like a crash: messages then come back after their visibility
    /// timeout.
    pub async fn run<F>(self, shutdown: F) -> Result<WorkerStats, WorkerError>
    where
        F: Future + Send,
    {
        self.config.validate().map_err(WorkerError::Config)?;
        let Worker {
            config,
            handlers,
            log,
            queue,
            metrics,
        } = self;
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
        });
        let config = &shared.config;
        let slots = Arc::new(Semaphore::new(config.concurrency));
        let mut tasks = JoinSet::new();
        let mut receive_backoff = Duration::ZERO;
        let shutdown = shutdown;
        tokio::pin!(shutdown);

        loop {
            while let Some(done) = tasks.try_join_next() {
                report_task_end(done);
            }
            let first = tokio::select! {
                biased;
                _ = &mut shutdown => break,
                permit = slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            };
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
                    receive_backoff = (receive_backoff * 2)
                        .clamp(Duration::from_millis(100), MAX_RECEIVE_BACKOFF);
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
                let span = delivery_span(&delivery);
                tasks.spawn(process(shared.clone(), delivery, key, permit).instrument(span));
            }
        }

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
        drop(shared);
        let _ = ack_task.join().await;
        let _ = commit_task.join().await;
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

fn delivery_span(delivery: &Delivery) -> tracing::Span {
    match &delivery.body {
        Ok(message) => tracing::info_span!(
            "task",
            job_id = %message.job_id,
            task_id = %message.task_id,
            attempt = message.attempt,
            receive_count = delivery.receive_count,
        ),
        Err(_) => tracing::info_span!("poison_message", receive_count = delivery.receive_count),
    }
}

/// What a worker's tasks share.
struct Shared {
    config: WorkerConfig,
    handlers: Handlers,
    log: Arc<dyn EventLog>,
    queue: Arc<dyn TaskQueue>,
    metrics: Arc<WorkerMetrics>,
    committer: GroupCommitter,
    acks: AckBatcher,
    inflight: Arc<Inflight>,
    jobs: JobCache,
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

/// Whether jobs are cancelled, as read from their streams, trusted for a short while. One
/// read per job at a time: concurrent deliveries of one job wait for the same read.
struct JobCache {
    ttl: Duration,
    entries: std::sync::Mutex<HashMap<JobId, CachedStatus>>,
}

/// When a job's status was (or is being) read, and whether it is cancelled.
type CachedStatus = (Instant, Arc<OnceCell<bool>>);

impl JobCache {
    const MAX_ENTRIES: usize = 10_000;

    fn new(ttl: Duration) -> Self {
        JobCache {
            ttl,
            entries: std::sync::Mutex::new(HashMap::new()),
        }
    }

    async fn is_cancelled(&self, log: &dyn EventLog, job_id: JobId) -> bool {
        let cell = {
            let mut entries = self
                .entries
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match entries.get(&job_id) {
                Some((read_at, cell)) if read_at.elapsed() < self.ttl => cell.clone(),
                _ => {
                    if entries.len() >= JobCache::MAX_ENTRIES {
                        let ttl = self.ttl;
                        entries.retain(|_, (read_at, _)| read_at.elapsed() < ttl);
                    }
                    let cell = Arc::new(OnceCell::new());
                    entries.insert(job_id, (Instant::now(), cell.clone()));
                    cell
                }
            }
        };
        let read = cell
            .get_or_try_init(|| async {
                let records = log.read_stream(&job_id.stream_id(), 0).await?;
                let state = decode_all(&records)
                    .iter()
                    .fold(Default::default(), evolve_job);
                Ok::<_, LogError>(state.status == JobStatus::Cancelled)
            })
            .await;
        match read {
            Ok(cancelled) => *cancelled,
            Err(error) => {
                // Not knowing is no reason to hold work up: run it (a cancelled job's task that
                // runs anyway is harmless; the job stays CANCELLED).
                tracing::warn!(%error, %job_id, "could not read the job's status; running its task");
                false
            }
        }
    }
}

fn decode_all(records: &[RecordedEvent]) -> Vec<Event> {
    records
        .iter()
        .filter_map(|r| match Event::decode(&r.event_type, r.schema_version, r.data.get()) {
            Ok(event) => Some(event),
            Err(error) => {
                tracing::warn!(%error, stream_id = %r.stream_id, version = r.stream_version, "undecodable event skipped");
                None
            }
        })
        .collect()
}

/// What becomes of a delivery's message once its processing ends.
#[derive(Debug)]
enum Disposition {
    /// Handled (or known handled): delete it.
    Ack,
    /// Not handled now: visible again after the delay.
    Release(Duration),
    /// Dead-lettered, or in someone else's hands: nothing more to do.
    Done,
}

/// A task this worker holds a started attempt of.
struct Started {
    state: TaskState,
    /// The stream's version, with the `TaskStarted` of `state.attempt` as its last event.
    version: i64,
    /// `state` is the stream's state, not an approximation implied by the message (which
    /// cannot know the retry budget after a manual retry).
    exact: bool,
}

async fn process(shared: Arc<Shared>, delivery: Delivery, key: u64, permit: OwnedSemaphorePermit) {
    shared.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
    let _gauge = Decrement(&shared.metrics.in_flight);
    let receipt = delivery.receipt.clone();
    // A bug that panics here must not leave the message hidden by the heartbeat for good.
    let disposition = AssertUnwindSafe(shared.handle(delivery))
        .catch_unwind()
        .await
        .unwrap_or_else(|_| {
            tracing::error!("handling a delivery panicked; releasing its message");
            Disposition::Release(RETRY_DELAY)
        });
    // Out of the in-flight set first: shutdown releases only what is in it.
    shared.inflight.remove(key);
    match disposition {
        Disposition::Ack => shared.acks.ack(receipt),
        Disposition::Release(delay) => match shared.queue.release(&receipt, delay).await {
            Ok(()) => WorkerMetrics::inc(&shared.metrics.released),
            Err(error) => tracing::warn!(%error, "could not release the message"),
        },
        Disposition::Done => {}
    }
    drop(permit);
}

struct Decrement<'a>(&'a AtomicU64);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Shared {
    async fn handle(&self, delivery: Delivery) -> Disposition {
        let message = match delivery.body {
            Ok(message) => message,
            Err(poison) => {
                WorkerMetrics::inc(&self.metrics.poison);
                tracing::warn!(error = %poison.error, "unparseable message: dead-lettering it");
                let reason = format!("unparseable task message: {}", poison.error);
                return match self.queue.dead_letter(&delivery.receipt, &reason).await {
                    Ok(()) => {
                        WorkerMetrics::inc(&self.metrics.dead_lettered);
                        Disposition::Done
                    }
                    Err(QueueError::StaleReceipt(_)) => Disposition::Done,
                    Err(error) => {
                        tracing::warn!(%error, "could not dead-letter a poison message");
                        Disposition::Release(RETRY_DELAY)
                    }
                };
            }
        };
        if let Some(not_before) = message.not_before {
            let early = (not_before - Utc::now()).to_std().unwrap_or_default();
            if !early.is_zero() {
                tracing::debug!(
                    ?early,
                    "message arrived before its retry time: postponing it"
                );
                return Disposition::Release(early);
            }
        }
        let job_id = JobId::from_uuid(message.job_id);
        if self.jobs.is_cancelled(self.log.as_ref(), job_id).await {
            tracing::debug!("job is cancelled: skipping its task");
            WorkerMetrics::inc(&self.metrics.skipped_cancelled);
            return Disposition::Ack;
        }
        let started = match self
            .start(&message, &delivery.receipt, delivery.receive_count)
            .await
        {
            Ok(started) => started,
            Err(disposition) => return disposition,
        };
        self.run_attempt(&message, &delivery.receipt, started).await
    }

    /// Appends `TaskStarted` for the message's attempt, or finds out from the log why not.
    async fn start(
        &self,
        message: &TaskMessage,
        receipt: &Receipt,
        receive_count: u32,
    ) -> Result<Started, Disposition> {
        let implied = implied_state(message);
        let start = TaskCommand::StartTask {
            attempt: message.attempt,
            worker: self.config.worker_id.clone(),
            now: Utc::now(),
        };
        if let Ok(events) = decide_task(&implied, start) {
            match self.append(message, message.stream_version, &events).await {
                Ok(()) => {
                    return Ok(Started {
                        state: events.iter().fold(implied, evolve_task),
                        version: message.stream_version + events.len() as i64,
                        exact: message.attempt == FIRST_ATTEMPT,
                    });
                }
                Err(LogError::Conflict { .. }) => {}
                Err(error) => {
                    tracing::warn!(%error, "could not append TaskStarted");
                    return Err(Disposition::Release(RETRY_DELAY));
                }
            }
        }
        // The log is not where the message says: read it and decide. A second round is only
        // needed when the stream moves while we look.
        for _ in 0..3 {
            let (state, version) = self.load(message.task_id).await?;
            if state.enqueued.is_none() {
                tracing::warn!("message for a task the log does not know: dead-lettering it");
                return Err(self
                    .dead_letter_message(receipt, "no such task in the event log")
                    .await);
            }
            let skip = || {
                WorkerMetrics::inc(&self.metrics.skipped_duplicates);
                Err(Disposition::Ack)
            };
            if state.status == TaskStatus::Completed || state.attempt > message.attempt {
                tracing::debug!(status = %state.status, current = state.attempt, "already handled: skipping");
                return skip();
            }
            if state.attempt < message.attempt {
                // The log is behind the message: cannot happen with a sane relay; wait.
                tracing::warn!(
                    current = state.attempt,
                    "message is ahead of the log: postponing it"
                );
                return Err(Disposition::Release(RETRY_DELAY));
            }
            match state.status {
                TaskStatus::Running if receive_count > 1 => {
                    // The previous holder's visibility timeout ran out: presumed dead. Its
                    // `TaskStarted` stands; this worker runs the attempt and records its end.
                    tracing::info!(previous = ?state.worker, "taking over an attempt whose worker stopped responding");
                    WorkerMetrics::inc(&self.metrics.taken_over);
                    return Ok(Started {
                        state,
                        version,
                        exact: true,
                    });
                }
                TaskStatus::Running => {
                    tracing::debug!(holder = ?state.worker, "attempt already running elsewhere: skipping this copy");
                    return skip();
                }
                TaskStatus::Failed if !state.dead_lettered => {
                    // A worker failed it for good and stopped before dead-lettering it.
                    let reason = state.last_error.clone().unwrap_or_else(|| "failed".into());
                    return Err(self.dead_letter_task(state, version, receipt, reason).await);
                }
                TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Pending => return skip(),
                TaskStatus::Enqueued | TaskStatus::Retrying => {
                    let start = TaskCommand::StartTask {
                        attempt: message.attempt,
                        worker: self.config.worker_id.clone(),
                        now: Utc::now(),
                    };
                    let Ok(events) = decide_task(&state, start) else {
                        return skip();
                    };
                    match self.append(message, version, &events).await {
                        Ok(()) => {
                            return Ok(Started {
                                version: version + events.len() as i64,
                                state: events.iter().fold(state, evolve_task),
                                exact: true,
                            });
                        }
                        Err(LogError::Conflict { .. }) => continue,
                        Err(error) => {
                            tracing::warn!(%error, "could not append TaskStarted");
                            return Err(Disposition::Release(RETRY_DELAY));
                        }
                    }
                }
            }
        }
        Err(Disposition::Release(RETRY_DELAY))
    }

    /// Runs the handler and records the outcome.
    async fn run_attempt(
        &self,
        message: &TaskMessage,
        receipt: &Receipt,
        started: Started,
    ) -> Disposition {
        let timeout_seconds = match message.timeout_seconds {
            0 => DEFAULT_TIMEOUT_SECONDS,
            s => s,
        };
        let timeout = Duration::from_secs(u64::from(timeout_seconds));
        let context = TaskContext {
            job_id: JobId::from_uuid(message.job_id),
            task_id: TaskId::from_uuid(message.task_id),
            index: message.task_index,
            job_type: message.job_type.clone(),
            attempt: message.attempt,
            max_attempts: message.max_attempts,
            parameters: message.parameters.clone(),
            timeout,
            deadline: tokio::time::Instant::now() + timeout,
            worker_id: self.config.worker_id.clone(),
        };
        let began = Instant::now();
        let outcome = match self.handlers.select(&context.job_type, &context.parameters) {
            Ok((name, handler)) => {
                tracing::debug!(handler = %name, "running");
                self.run_handler(handler, context, timeout_seconds).await
            }
            Err(error) => Err(error),
        };
        let duration_ms = u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX);
        match outcome {
            Ok(result) => self.complete(message, started, result, duration_ms).await,
            Err(error) => self.fail(message, receipt, started, error).await,
        }
    }

    /// The handler on a task of its own (a panic stays there), cut off at the timeout.
    async fn run_handler(
        &self,
        handler: Arc<dyn Handler>,
        context: TaskContext,
        timeout_seconds: u32,
    ) -> Result<Option<Value>, TaskError> {
        let deadline = context.deadline;
        let mut running = AbortOnDrop(tokio::spawn(
            async move { handler.handle(&context).await }.instrument(tracing::Span::current()),
        ));
        match tokio::time::timeout_at(deadline, &mut running.0).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(join_error)) => {
                let panic = join_error.try_into_panic().map_or_else(
                    |_| "cancelled".to_owned(),
                    |payload| {
                        payload
                            .downcast_ref::<&str>()
                            .map(|s| (*s).to_owned())
                            .or_else(|| payload.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "unknown panic".to_owned())
                    },
                );
                Err(TaskError::retryable(format!("handler panicked: {panic}")))
            }
            Err(_elapsed) => {
                WorkerMetrics::inc(&self.metrics.timed_out);
                Err(TaskError::retryable(format!(
                    "timed out after {timeout_seconds} s"
                )))
            }
        }
    }

    async fn complete(
        &self,
        message: &TaskMessage,
        started: Started,
        result: Option<Value>,
        duration_ms: u64,
    ) -> Disposition {
        let command = TaskCommand::CompleteTask {
            attempt: started.state.attempt,
            result,
            duration_ms,
            now: Utc::now(),
        };
        let events = match decide_task(&started.state, command) {
            Ok(events) => events,
            Err(rejection) => {
                tracing::warn!(%rejection, "cannot complete the task");
                return Disposition::Ack;
            }
        };
        match self.append(message, started.version, &events).await {
            Ok(()) => {
                WorkerMetrics::inc(&self.metrics.completed);
                Disposition::Ack
            }
            Err(LogError::Conflict { .. }) => {
                tracing::info!("another worker recorded this attempt's end first");
                WorkerMetrics::inc(&self.metrics.skipped_duplicates);
                Disposition::Ack
            }
            Err(error) => {
                tracing::warn!(%error, "could not append TaskCompleted");
                Disposition::Release(RETRY_DELAY)
            }
        }
    }

    async fn fail(
        &self,
        message: &TaskMessage,
        receipt: &Receipt,
        started: Started,
        error: TaskError,
    ) -> Disposition {
        tracing::info!(error = %error.message, retryable = error.retryable, "attempt failed");
        let Started {
            mut state,
            mut version,
            exact,
        } = started;
        if !exact {
            // The retry budget after a manual retry is in the stream, not in the message.
            match self.load(message.task_id).await {
                Ok(loaded) => (state, version) = loaded,
                Err(disposition) => return disposition,
            }
        }
        let attempt = message.attempt;
        let backoff_ms = retry_backoff(
            attempt,
            millis(self.config.retry_base),
            millis(self.config.retry_max),
            rand::random::<f64>(),
        );
        let command = TaskCommand::FailTask {
            attempt,
            error: error.message.clone(),
            retryable: error.retryable,
            backoff_ms,
            now: Utc::now(),
        };
        let events = match decide_task(&state, command) {
            Ok(events) => events,
            Err(rejection) => {
                tracing::info!(%rejection, "the attempt's end is recorded already");
                WorkerMetrics::inc(&self.metrics.skipped_duplicates);
                return Disposition::Ack;
            }
        };
        match self.append(message, version, &events).await {
            Ok(()) => {}
            Err(LogError::Conflict { .. }) => {
                tracing::info!("another worker recorded this attempt's end first");
                WorkerMetrics::inc(&self.metrics.skipped_duplicates);
                return Disposition::Ack;
            }
            Err(error) => {
                tracing::warn!(%error, "could not append TaskFailed");
                return Disposition::Release(RETRY_DELAY);
            }
        }
        version += events.len() as i64;
        let state = events.iter().fold(state, evolve_task);
        if state.status == TaskStatus::Failed {
            WorkerMetrics::inc(&self.metrics.failed);
            self.dead_letter_task(state, version, receipt, error.message)
                .await
        } else {
            WorkerMetrics::inc(&self.metrics.retried);
            Disposition::Ack
        }
    }

    /// The task FAILED for good: its message goes to the dead-letter queue, then the log
    /// records that it did (`TaskDeadLettered`).
    async fn dead_letter_task(
        &self,
        state: TaskState,
        version: i64,
        receipt: &Receipt,
        reason: String,
    ) -> Disposition {
        match self.queue.dead_letter(receipt, &reason).await {
            Ok(()) => WorkerMetrics::inc(&self.metrics.dead_lettered),
            // Another worker holds the message now; it will find the task FAILED and finish
            // this.
            Err(QueueError::StaleReceipt(_)) => return Disposition::Done,
            Err(error) => {
                tracing::warn!(%error, "could not dead-letter the message of a failed task");
                return Disposition::Release(RETRY_DELAY);
            }
        }
        let command = TaskCommand::DeadLetterTask {
            reason,
            now: Utc::now(),
        };
        let Some(enqueued) = state.enqueued.as_ref() else {
            return Disposition::Done;
        };
        let message_ids = (enqueued.job_id, enqueued.task_id);
        match decide_task(&state, command) {
            Ok(events) => {
                let batch = self.batch(message_ids.1, version, &events, None);
                if let Err(error) = self.committer.append(batch).await {
                    // The message is in the dead-letter queue; only the log's note of it is
                    // missing, which no one depends on for correctness.
                    tracing::warn!(%error, "could not append TaskDeadLettered");
                }
            }
            Err(rejection) => tracing::debug!(%rejection, "dead-lettering needs no event"),
        }
        Disposition::Done
    }

    /// Dead-letters a message that can never be handled.
    async fn dead_letter_message(&self, receipt: &Receipt, reason: &str) -> Disposition {
        match self.queue.dead_letter(receipt, reason).await {
            Ok(()) => {
                WorkerMetrics::inc(&self.metrics.dead_lettered);
                Disposition::Done
            }
            Err(QueueError::StaleReceipt(_)) => Disposition::Done,
            Err(error) => {
                tracing::warn!(%error, "could not dead-letter a message");
                Disposition::Release(RETRY_DELAY)
            }
        }
    }

    /// Appends a task's events through the group committer.
    async fn append(
        &self,
        message: &TaskMessage,
        expected_version: i64,
        events: &[Event],
    ) -> Result<(), LogError> {
        let batch = self.batch(
            TaskId::from_uuid(message.task_id),
            expected_version,
            events,
            message.traceparent.as_deref(),
        );
        self.committer.append(batch).await.map(|_| ())
    }

    fn batch(
        &self,
        task_id: TaskId,
        expected_version: i64,
        events: &[Event],
        traceparent: Option<&str>,
    ) -> AppendBatch {
        let mut metadata = json!({ "actor": format!("worker:{}", self.config.worker_id) });
        if let Some(traceparent) = traceparent {
            metadata["traceparent"] = Value::String(traceparent.to_owned());
        }
        AppendBatch {
            streams: vec![StreamAppend {
                stream_id: task_id.stream_id(),
                expected: ExpectedVersion::Exact(expected_version),
                events: events
                    .iter()
                    .map(|event| NewEvent {
                        event_type: event.event_type().to_owned(),
                        schema_version: event.schema_version(),
                        data: event.to_json(),
                        metadata: metadata.clone(),
                    })
                    .collect(),
            }],
            ..AppendBatch::default()
        }
    }

    /// The task's stream, folded, and its version.
    async fn load(&self, task_id: uuid::Uuid) -> Result<(TaskState, i64), Disposition> {
        let stream_id = TaskId::from_uuid(task_id).stream_id();
        let records = self.log.read_stream(&stream_id, 0).await.map_err(|error| {
            tracing::warn!(%error, "could not read the task's stream");
            Disposition::Release(RETRY_DELAY)
        })?;
        let version = records.last().map_or(0, |r| r.stream_version);
        let state = decode_all(&records)
            .iter()
            .fold(TaskState::default(), evolve_task);
        Ok((state, version))
    }
}

/// The task's state as the message implies it: the stream right after the event that
/// enqueued this attempt. Exact for a first attempt; for later ones the retry budget is a
/// guess (a manual retry gives a fresh one), which only a failure needs, and reads.
fn implied_state(message: &TaskMessage) -> TaskState {
    let enqueued = TaskEnqueued {
        job_id: JobId::from_uuid(message.job_id),
        task_id: TaskId::from_uuid(message.task_id),
        index: message.task_index,
        job_type: message.job_type.clone(),
        input: message.parameters.clone(),
        attempt: FIRST_ATTEMPT,
        max_attempts: message.max_attempts,
        timeout_seconds: message.timeout_seconds,
        at: Utc::now(),
    };
    let first = evolve_task(TaskState::default(), &Event::TaskEnqueued(enqueued));
    if message.attempt <= FIRST_ATTEMPT {
        return first;
    }
    TaskState {
        status: TaskStatus::Retrying,
        attempt: message.attempt,
        not_before: message.not_before,
        ..first
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
