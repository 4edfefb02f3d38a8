//! Group commit of the in-flight tasks' appends, and batched acknowledgements.
//!
//! A durable commit costs milliseconds; a worker running hundreds of tasks must not pay one per
//! task event. Every task hands its append to one committer task through a channel and awaits
//! its own result. The committer takes whatever is queued (up to a limit) as soon as its
//! previous commit returns, and writes it with [`EventLog::append_many`]: under load one commit
//! carries many tasks' events, while a lone task waits for no timer. When a full commit is
//! waiting while one is under way, a second one starts beside it (up to
//! `WorkerConfig::max_concurrent_commits`, ADR 34): no task's events are in two commits under
//! way at once. Where the task queue is a
//! table of the log's database, a completed task's message is deleted in the commit of its
//! end (`EventLog::append_many_and_ack`, ADR 31) rather than by the [`AckBatcher`] after it.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
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
        max_concurrent: usize,
        acks_in_commit: bool,
        metrics: Arc<WorkerMetrics>,
        latency: Arc<CommitLatency>,
    ) -> (Self, impl Future<Output = ()> + Send + 'static) {
        let (requests, receiver) = mpsc::unbounded_channel();
        let limits = CommitLimits {
            batches: max_batches.max(1),
            concurrent: max_concurrent.max(1),
        };
        let task = run_committer(log, receiver, limits, metrics, latency);
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

    /// One commit took `took` (commits under way at once may race here: either's figure
    /// stands, which is all an average needs).
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
    limits: CommitLimits,
    metrics: Arc<WorkerMetrics>,
    latency: Arc<CommitLatency>,
) {
    // Requests that share a stream with one already in a commit under way wait for a later
    // commit (`append_many` takes batches on distinct streams; two appends to one task stream
    // are a duplicate delivery, and the second must see the first's result as a conflict).
    let mut queued: VecDeque<Request> = VecDeque::new();
    // The streams of the commits under way.
    let mut busy: HashSet<String> = HashSet::new();
    let mut commits = FuturesUnordered::new();
    let mut open = true;
    loop {
        while open && queued.len() < limits.batches {
            match receiver.try_recv() {
                Ok(request) => queued.push_back(request),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => open = false,
            }
        }
        // One commit at a time, unless a full one is waiting (ADR 34). The queue's length
        // bounds what a second commit could take, so it is scanned only when that may be full.
        let may_start = commits.is_empty()
            || (commits.len() < limits.concurrent && queued.len() >= limits.batches);
        if may_start {
            let (taken, streams) = take_distinct(&mut queued, &busy, limits.batches);
            let enough = commits.is_empty() || taken.len() >= limits.batches;
            if !taken.is_empty() && enough {
                busy.extend(streams.iter().cloned());
                commits.push(commit(
                    log.clone(),
                    taken,
                    streams,
                    metrics.clone(),
                    latency.clone(),
                ));
                continue;
            }
            // Back at the front, to be taken with what comes next.
            for request in taken.into_iter().rev() {
                queued.push_front(request);
            }
        }
        if commits.is_empty() && !open {
            // Nothing under way, nothing more can come, and what is queued is on streams of
            // no commit (`take_distinct` took them above): all written.
            debug_assert!(queued.is_empty());
            return;
        }
        tokio::select! {
            Some(streams) = commits.next(), if !commits.is_empty() => {
                for stream in streams {
                    busy.remove(&stream);
                }
            }
            request = receiver.recv(), if open => match request {
                Some(request) => queued.push_back(request),
                None => open = false,
            },
        }
    }
}

/// How much the committer writes at once.
#[derive(Debug, Clone, Copy)]
struct CommitLimits {
    /// Most requests in one commit.
    batches: usize,
    /// Most commits under way.
    concurrent: usize,
}

/// Up to `max` requests from `queued`, in order, none on a stream of `busy` or of another
/// taken request, and their streams; the rest stay queued, in order.
fn take_distinct(
    queued: &mut VecDeque<Request>,
    busy: &HashSet<String>,
    max: usize,
) -> (Vec<Request>, HashSet<String>) {
    let mut streams = HashSet::new();
    let mut taken = Vec::new();
    let mut later = VecDeque::new();
    for request in queued.drain(..) {
        let distinct = taken.len() < max
            && request
                .batch
                .streams
                .iter()
                .all(|s| !busy.contains(&s.stream_id) && !streams.contains(&s.stream_id));
        if distinct {
            streams.extend(request.batch.streams.iter().map(|s| s.stream_id.clone()));
            taken.push(request);
        } else {
            later.push_back(request);
        }
    }
    *queued = later;
    (taken, streams)
}

/// Writes `taken` in one commit and answers each request; returns `streams` (theirs), which
/// are then free for the next commit.
async fn commit(
    log: Arc<dyn EventLog>,
    taken: Vec<Request>,
    streams: HashSet<String>,
    metrics: Arc<WorkerMetrics>,
    latency: Arc<CommitLatency>,
) -> HashSet<String> {
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
    streams
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::atomic::AtomicUsize;
    use std::sync::{Arc, Mutex};

    use serde_json::json;
    use shoal_infra::eventlog::{
        EventStream, ExpectedVersion, LogPosition, NewEvent, RecordedEvent, SqliteEventLog,
        StreamAppend, raw_json,
    };
    use shoal_infra::testing;
    use tokio::sync::Semaphore;
    use tokio::task::JoinHandle;

    use super::*;

    /// A log whose group commits wait at a gate (one permit per commit) before they write, and
    /// that records how many were under way at once and what each carried.
    #[derive(Debug)]
    struct GatedLog {
        inner: Arc<dyn EventLog>,
        gate: Semaphore,
        under_way: AtomicUsize,
        most_under_way: AtomicUsize,
        sizes: Mutex<Vec<usize>>,
    }

    impl GatedLog {
        async fn new() -> Arc<GatedLog> {
            Arc::new(GatedLog {
                inner: Arc::new(SqliteEventLog::new(testing::fresh_sqlite().await)),
                gate: Semaphore::new(0),
                under_way: AtomicUsize::new(0),
                most_under_way: AtomicUsize::new(0),
                sizes: Mutex::new(Vec::new()),
            })
        }

        /// Waits until `n` commits are at the gate (or under way past it).
        async fn wait_under_way(&self, n: usize) {
            for _ in 0..500 {
                if self.under_way.load(Ordering::SeqCst) == n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!(
                "{} commits under way, expected {n}",
                self.under_way.load(Ordering::SeqCst)
            );
        }

        fn sizes(&self) -> Vec<usize> {
            self.sizes.lock().unwrap().clone()
        }
    }

    #[async_trait::async_trait]
    impl EventLog for GatedLog {
        async fn append(&self, batch: AppendBatch) -> LogResult<AppendOutcome> {
            self.inner.append(batch).await
        }
        async fn append_many(&self, batches: Vec<AppendBatch>) -> Vec<LogResult<AppendOutcome>> {
            let now = self.under_way.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_under_way.fetch_max(now, Ordering::SeqCst);
            self.gate.acquire().await.unwrap().forget();
            self.sizes.lock().unwrap().push(batches.len());
            let results = self.inner.append_many(batches).await;
            self.under_way.fetch_sub(1, Ordering::SeqCst);
            results
        }
        async fn read_all(&self, after: LogPosition, limit: i64) -> LogResult<Vec<RecordedEvent>> {
            self.inner.read_all(after, limit).await
        }
        async fn read_stream(&self, stream_id: &str, after: i64) -> LogResult<Vec<RecordedEvent>> {
            self.inner.read_stream(stream_id, after).await
        }
        async fn read_streams(&self, stream_ids: &[String]) -> LogResult<Vec<RecordedEvent>> {
            self.inner.read_streams(stream_ids).await
        }
        async fn read_positions(&self, positions: &[i64]) -> LogResult<Vec<RecordedEvent>> {
            self.inner.read_positions(positions).await
        }
        async fn head(&self) -> LogResult<LogPosition> {
            self.inner.head().await
        }
        async fn forget_idempotency_keys(
            &self,
            used_before: chrono::DateTime<chrono::Utc>,
            limit: i64,
        ) -> LogResult<u64> {
            self.inner.forget_idempotency_keys(used_before, limit).await
        }
        async fn load_checkpoint(&self, name: &str) -> LogResult<LogPosition> {
            self.inner.load_checkpoint(name).await
        }
        async fn save_checkpoint(&self, name: &str, position: LogPosition) -> LogResult<()> {
            self.inner.save_checkpoint(name, position).await
        }
        fn subscribe(&self, after: LogPosition, batch_size: i64) -> EventStream {
            self.inner.subscribe(after, batch_size)
        }
    }

    /// A committer of at most `batches` appends per commit and `concurrent` commits at once,
    /// on `log`.
    fn committer(
        log: &Arc<GatedLog>,
        batches: usize,
        concurrent: usize,
    ) -> (GroupCommitter, JoinHandle<()>) {
        let (committer, task) = GroupCommitter::new(
            log.clone(),
            batches,
            concurrent,
            false,
            Arc::new(WorkerMetrics::default()),
            Arc::new(CommitLatency::default()),
        );
        (committer, tokio::spawn(task))
    }

    /// A stream's first event, appended by its own task (as a delivery does).
    fn append(committer: &GroupCommitter, stream: &str) -> JoinHandle<LogResult<AppendOutcome>> {
        let committer = committer.clone();
        let batch = AppendBatch {
            streams: vec![StreamAppend {
                stream_id: stream.to_owned(),
                expected: ExpectedVersion::Exact(0),
                events: vec![NewEvent {
                    event_type: "Noted".into(),
                    schema_version: 1,
                    data: raw_json(&json!({ "stream": stream })),
                    metadata: json!({}),
                }],
            }],
            ..AppendBatch::default()
        };
        tokio::spawn(async move { committer.append(batch).await })
    }

    fn appends(
        committer: &GroupCommitter,
        streams: &[&str],
    ) -> Vec<JoinHandle<LogResult<AppendOutcome>>> {
        streams.iter().map(|s| append(committer, s)).collect()
    }

    /// The result of `append`, within 10 s.
    async fn result(append: JoinHandle<LogResult<AppendOutcome>>) -> LogResult<AppendOutcome> {
        tokio::time::timeout(Duration::from_secs(10), append)
            .await
            .expect("an answer within 10 s")
            .unwrap()
    }

    async fn all_written(appends: Vec<JoinHandle<LogResult<AppendOutcome>>>) {
        for append in appends {
            result(append).await.expect("the append is written");
        }
    }

    #[tokio::test]
    async fn a_full_commit_waiting_starts_beside_the_one_under_way() {
        let log = GatedLog::new().await;
        let (committer, _task) = committer(&log, 4, 2);
        let first = append(&committer, "s0");
        log.wait_under_way(1).await;
        let full = appends(&committer, &["s1", "s2", "s3", "s4"]);
        log.wait_under_way(2).await;
        log.gate.add_permits(2);
        all_written(full).await;
        all_written(vec![first]).await;
        let mut sizes = log.sizes();
        sizes.sort_unstable();
        assert_eq!(sizes, [1, 4]);
        assert_eq!(log.most_under_way.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_commit_that_is_not_full_waits_for_the_one_under_way() {
        let log = GatedLog::new().await;
        let (committer, _task) = committer(&log, 4, 2);
        let first = append(&committer, "s0");
        log.wait_under_way(1).await;
        let some = appends(&committer, &["s1", "s2", "s3"]);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(log.under_way.load(Ordering::SeqCst), 1);
        log.gate.add_permits(1);
        all_written(vec![first]).await;
        // The three go together once the first commit is done.
        log.wait_under_way(1).await;
        log.gate.add_permits(1);
        all_written(some).await;
        assert_eq!(log.sizes(), [1, 3]);
        assert_eq!(log.most_under_way.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn with_one_commit_at_a_time_a_full_commit_waits_too() {
        let log = GatedLog::new().await;
        let (committer, _task) = committer(&log, 4, 1);
        let first = append(&committer, "s0");
        log.wait_under_way(1).await;
        let full = appends(&committer, &["s1", "s2", "s3", "s4", "s5"]);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(log.under_way.load(Ordering::SeqCst), 1);
        log.gate.add_permits(3);
        all_written(vec![first]).await;
        all_written(full).await;
        assert_eq!(log.sizes(), [1, 4, 1]);
        assert_eq!(log.most_under_way.load(Ordering::SeqCst), 1);
    }

    /// A second append to a stream whose first is in a commit under way (a duplicate
    /// delivery) is not written beside it, nor counted toward a full commit: it waits for that
    /// commit and then sees its result, a conflict. A full commit without it starts at once.
    #[tokio::test]
    async fn a_stream_in_a_commit_under_way_waits_for_it_and_sees_its_result() {
        let log = GatedLog::new().await;
        let (committer, _task) = committer(&log, 4, 2);
        let first = append(&committer, "s0");
        log.wait_under_way(1).await;
        let again = append(&committer, "s0");
        let mut full = appends(&committer, &["s1", "s2", "s3"]);
        // Four queued, but one of them cannot go beside the commit under way: not full.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(log.under_way.load(Ordering::SeqCst), 1);
        full.push(append(&committer, "s4"));
        log.wait_under_way(2).await;
        log.gate.add_permits(2);
        all_written(vec![first]).await;
        all_written(full).await;
        log.wait_under_way(1).await;
        log.gate.add_permits(1);
        let again = result(again).await;
        assert!(
            matches!(&again, Err(LogError::Conflict { stream_id, expected: 0 }) if stream_id == "s0"),
            "{again:?}"
        );
        let mut sizes = log.sizes();
        sizes.sort_unstable();
        assert_eq!(sizes, [1, 1, 4]);
        let events = log.read_stream("s0", 0).await.unwrap();
        assert_eq!(events.len(), 1);
    }

    /// Once every handle is dropped, the committer writes what is queued and under way, then
    /// ends.
    #[tokio::test]
    async fn the_committer_ends_once_everything_queued_is_written() {
        let log = GatedLog::new().await;
        let (committer, task) = committer(&log, 4, 2);
        let first = append(&committer, "s0");
        log.wait_under_way(1).await;
        let rest = appends(&committer, &["s1", "s2", "s3", "s4", "s5", "s6", "s7"]);
        drop(committer);
        log.gate.add_permits(10);
        all_written(vec![first]).await;
        all_written(rest).await;
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the committer ends")
            .unwrap();
        assert_eq!(log.sizes().iter().sum::<usize>(), 8);
    }
}
