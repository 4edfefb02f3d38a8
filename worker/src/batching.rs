//! Group commit of the in-flight tasks' appends, and batched acknowledgements.
//!
//! A durable commit costs milliseconds; a worker running hundreds of tasks must not pay one per
//! task event. Every task hands its append to one committer task through a channel and awaits
//! its own result. The committer takes whatever is queued (up to a limit) as soon as its
//! previous commit returns, and writes it with [`EventLog::append_many`]: under load one commit
//! carries many tasks' events, while a lone task waits for no timer. Where the task queue is a
//! table of the log's database, a completed task's message is deleted in the commit of its
//! end (`EventLog::append_many_and_ack`, ADR 31) rather than by the [`AckBatcher`] after it.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shoal_infra::eventlog::{AppendBatch, AppendOutcome, EventLog, LogError, LogResult};
use shoal_infra::queue::{Receipt, TaskQueue};
use tokio::sync::{mpsc, oneshot};

use crate::metrics::WorkerMetrics;

/// Most acknowledgements sent in one `ack` call.
const MAX_ACK_BATCH: usize = 1000;

struct Request {
    batch: AppendBatch,
    /// The message to acknowledge in the same commit, if the batch is written.
    ack: Option<Receipt>,
    reply: oneshot::Sender<LogResult<AppendOutcome>>,
}

/// A handle to the committer task. Cheap to clone; the task ends when every handle is dropped
/// and what was queued is written.
#[derive(Clone)]
pub(crate) struct GroupCommitter {
    requests: mpsc::UnboundedSender<Request>,
    acks_in_commit: bool,
}

impl GroupCommitter {
    /// Starts the committer on the current runtime; the returned future is the task's body
    /// (spawn it).
    /// `acks_in_commit`: the queue is a table of the log's database, so that
    /// [`GroupCommitter::append_and_ack`] can delete a message in its batch's commit.
    pub(crate) fn new(
        log: Arc<dyn EventLog>,
        max_batches: usize,
        acks_in_commit: bool,
        metrics: Arc<WorkerMetrics>,
        latency: Arc<CommitLatency>,
    ) -> (Self, impl Future<Output = ()> + Send + 'static) {
        let (requests, receiver) = mpsc::unbounded_channel();
        let task = run_committer(log, receiver, max_batches.max(1), metrics, latency);
        (
            GroupCommitter {
                requests,
                acks_in_commit,
            },
            task,
        )
    }

    /// Appends `batch` in the next group commit and returns its own result.
    pub(crate) async fn append(&self, batch: AppendBatch) -> LogResult<AppendOutcome> {
        self.request(batch, None).await
    }

    /// [`GroupCommitter::append`], and if the batch is written, its message `receipt` is
    /// acknowledged in the same commit: `Ok(true)`. `Ok(false)` when this committer cannot
    /// (the queue is not in the log's database): the message is still to be acknowledged.
    pub(crate) async fn append_and_ack(
        &self,
        batch: AppendBatch,
        receipt: &Receipt,
    ) -> LogResult<bool> {
        if !self.acks_in_commit {
            return self.request(batch, None).await.map(|_| false);
        }
        self.request(batch, Some(receipt.clone()))
            .await
            .map(|_| true)
    }

    async fn request(&self, batch: AppendBatch, ack: Option<Receipt>) -> LogResult<AppendOutcome> {
        let (reply, result) = oneshot::channel();
        self.requests
            .send(Request { batch, ack, reply })
            .map_err(|_| LogError::Invalid("the worker's committer has stopped".into()))?;
        result.await.unwrap_or_else(|_| {
            Err(LogError::Invalid(
                "the worker's committer has stopped".into(),
            ))
        })
    }
}

/// How long a group commit takes lately (an average that follows the last few commits); what
/// the worker sizes its lookahead by.
#[derive(Debug, Default)]
pub(crate) struct CommitLatency {
    micros: AtomicU64,
}

impl CommitLatency {
    pub(crate) fn get(&self) -> Duration {
        Duration::from_micros(self.micros.load(Ordering::Relaxed))
    }

    /// One commit took `took` (the committer is the only writer).
    fn record(&self, took: Duration) {
        let took = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let old = self.micros.load(Ordering::Relaxed);
        let new = if old == 0 {
            took
        } else {
            old.saturating_mul(4).saturating_add(took) / 5
        };
        self.micros.store(new, Ordering::Relaxed);
    }
}

async fn run_committer(
    log: Arc<dyn EventLog>,
    mut receiver: mpsc::UnboundedReceiver<Request>,
    max_batches: usize,
    metrics: Arc<WorkerMetrics>,
    latency: Arc<CommitLatency>,
) {
    // Requests that share a stream with one already in the current commit wait for the next
    // (`append_many` takes batches on distinct streams; two appends to one task stream are a
    // duplicate delivery, and the second must see the first's result as a conflict).
    let mut queued: VecDeque<Request> = VecDeque::new();
    loop {
        if queued.is_empty() {
            match receiver.recv().await {
                Some(request) => queued.push_back(request),
                None => return,
            }
        }
        while queued.len() < max_batches {
            match receiver.try_recv() {
                Ok(request) => queued.push_back(request),
                Err(_) => break,
            }
        }
        let mut streams = HashSet::new();
        let mut taken = Vec::new();
        let mut later = VecDeque::new();
        for request in queued.drain(..) {
            let distinct = taken.len() < max_batches
                && request
                    .batch
                    .streams
                    .iter()
                    .all(|s| !streams.contains(&s.stream_id));
            if distinct {
                streams.extend(request.batch.streams.iter().map(|s| s.stream_id.clone()));
                taken.push(request);
            } else {
                later.push_back(request);
            }
        }
        queued = later;
        let acking = taken.iter().any(|r| r.ack.is_some());
        let (requests, replies): (Vec<_>, Vec<_>) = taken
            .into_iter()
            .map(|r| ((r.batch, r.ack), r.reply))
            .unzip();
        let (batches, acks): (Vec<_>, Vec<_>) = requests.into_iter().unzip();
        metrics.commits.fetch_add(1, Ordering::Relaxed);
        metrics
            .committed_batches
            .fetch_add(batches.len() as u64, Ordering::Relaxed);
        let began = Instant::now();
        let results = if acking {
            log.append_many_and_ack(batches, acks).await
        } else {
            log.append_many(batches).await
        };
        latency.record(began.elapsed());
        for (reply, result) in replies.into_iter().zip(results) {
            // A task that gave up waiting (aborted at shutdown) no longer listens.
            let _ = reply.send(result);
        }
    }
}

/// Told how many acknowledgements were made (or given up) after each `ack` call.
pub(crate) type OnAcked = Arc<dyn Fn(usize) + Send + Sync>;

/// A handle to the acknowledging task: receipts sent here are deleted from the queue in
/// batches, as soon as the previous batch returns. The task ends when every handle is
/// dropped and what was queued is acknowledged.
#[derive(Clone)]
pub(crate) struct AckBatcher {
    receipts: mpsc::UnboundedSender<Receipt>,
    acked: OnAcked,
}

impl AckBatcher {
    /// `acked` is called with the size of each batch once its `ack` call returned.
    pub(crate) fn new(
        queue: Arc<dyn TaskQueue>,
        acked: OnAcked,
    ) -> (Self, impl Future<Output = ()> + Send + 'static) {
        let (receipts, receiver) = mpsc::unbounded_channel();
        let task = run_acks(queue, receiver, acked.clone());
        (AckBatcher { receipts, acked }, task)
    }

    /// Acknowledges the message soon. If that fails, the message comes back after its
    /// visibility timeout and the log shows it was handled.
    pub(crate) fn ack(&self, receipt: Receipt) {
        if self.receipts.send(receipt).is_err() {
            tracing::warn!("acknowledgement dropped: the worker is stopping");
            (self.acked)(1);
        }
    }
}

async fn run_acks(
    queue: Arc<dyn TaskQueue>,
    mut receiver: mpsc::UnboundedReceiver<Receipt>,
    acked: OnAcked,
) {
    let mut batch = Vec::new();
    loop {
        if receiver.recv_many(&mut batch, MAX_ACK_BATCH).await == 0 {
            return;
        }
        if let Err(error) = queue.ack(&batch).await {
            tracing::warn!(
                %error,
                receipts = batch.len(),
                "could not acknowledge handled messages; they will be delivered again and skipped"
            );
        }
        acked(batch.len());
        batch.clear();
    }
}
