//! The worker's local buffer (`prefetch`): messages received ahead of the slots, started a
//! little ahead of them, and finished tasks whose ends commit in the background. On the SQL
//! queue (SQLite; Postgres when `SHOAL_TEST_DATABASE_URL` is set) and on SQS (moto, when
//! `moto_server` is available).
//!
//! The log's commits are slowed down (each group commit waits before it writes), so that the
//! buffer fills; the queue is watched: every acknowledgement is checked against the log at the
//! moment it is made (the task's end must already be there), and the messages the worker holds
//! are counted. Then: a crash with a full buffer loses nothing, SIGTERM with a full buffer
//! releases it at once and lets the running handlers finish, and slow commits keep the slots
//! busy up to the buffer's bound, then hold the worker back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use shoal_domain::{Event, JobId, TaskId, TaskState, TaskStatus, evolve_task};
use shoal_infra::eventlog::{
    AppendBatch, AppendOutcome, EventLog, EventStream, LogPosition, LogResult, PostgresEventLog,
    RecordedEvent, SqliteEventLog,
};
use shoal_infra::queue::{
    DeadLetter, Delivery, OutgoingMessage, QueueDepth, QueueResult, Receipt, SqlQueue, TaskQueue,
};
use shoal_infra::testing;
use shoal_worker::{Handlers, Worker, WorkerConfig, WorkerError, WorkerStats, handler_fn};
use support::{JobSpec, submit, task_events};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// A log whose group commits are slow

/// Delays every `append_many` (the worker's group commit) by `delay_ms` before it writes, and
/// records the largest number of task appends one commit carried.
#[derive(Debug)]
struct SlowLog {
    inner: Arc<dyn EventLog>,
    delay_ms: AtomicU64,
    largest_commit: AtomicUsize,
}

impl SlowLog {
    fn new(inner: Arc<dyn EventLog>, delay: Duration) -> Arc<SlowLog> {
        Arc::new(SlowLog {
            inner,
            delay_ms: AtomicU64::new(u64::try_from(delay.as_millis()).unwrap()),
            largest_commit: AtomicUsize::new(0),
        })
    }
}

#[async_trait::async_trait]
impl EventLog for SlowLog {
    async fn append(&self, batch: AppendBatch) -> LogResult<AppendOutcome> {
        self.inner.append(batch).await
    }
    async fn append_many(&self, batches: Vec<AppendBatch>) -> Vec<LogResult<AppendOutcome>> {
        self.largest_commit
            .fetch_max(batches.len(), Ordering::SeqCst);
        let delay = self.delay_ms.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        self.inner.append_many(batches).await
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

// ---------------------------------------------------------------------------------------------
// A queue that checks every acknowledgement against the log

/// Counts the messages a worker holds (received, not yet acknowledged, released or
/// dead-lettered), and checks at each acknowledgement that the log already holds the task's
/// end.
#[derive(Debug)]
struct WatchedQueue {
    inner: Arc<dyn TaskQueue>,
    log: Arc<dyn EventLog>,
    /// Receipt -> task, of the messages held.
    held: Mutex<HashMap<Receipt, Uuid>>,
    most_held: AtomicUsize,
    /// Acknowledgements made before the task's end was in the log.
    early_acks: Mutex<Vec<String>>,
    /// How long each `extend` takes before it reaches the queue (a slow network).
    extend_delay: Mutex<Duration>,
    /// Receipts released so far.
    released: Arc<Mutex<std::collections::HashSet<Receipt>>>,
    /// Receipts an `extend` reached the queue with after their release (hidden again).
    hidden_again: Arc<Mutex<Vec<Receipt>>>,
}

impl WatchedQueue {
    fn new(inner: Arc<dyn TaskQueue>, log: Arc<dyn EventLog>) -> Arc<WatchedQueue> {
        Arc::new(WatchedQueue {
            inner,
            log,
            held: Mutex::default(),
            most_held: AtomicUsize::new(0),
            early_acks: Mutex::default(),
            extend_delay: Mutex::new(Duration::ZERO),
            released: Arc::default(),
            hidden_again: Arc::default(),
        })
    }

    fn held(&self) -> usize {
        self.held.lock().unwrap().len()
    }

    fn settle(&self, receipt: &Receipt) -> Option<Uuid> {
        self.held.lock().unwrap().remove(receipt)
    }

    fn assert_no_early_ack(&self) {
        let early = self.early_acks.lock().unwrap();
        assert!(early.is_empty(), "acknowledged before the log: {early:?}");
    }
}

#[async_trait::async_trait]
impl TaskQueue for WatchedQueue {
    async fn send(&self, messages: Vec<OutgoingMessage>) -> QueueResult<()> {
        self.inner.send(messages).await
    }
    async fn receive(
        &self,
        max: usize,
        visibility: Duration,
        wait: Duration,
    ) -> QueueResult<Vec<Delivery>> {
        let deliveries = self.inner.receive(max, visibility, wait).await?;
        let mut held = self.held.lock().unwrap();
        for delivery in &deliveries {
            let task = delivery
                .body
                .as_ref()
                .map(|m| m.task_id)
                .unwrap_or_default();
            held.insert(delivery.receipt.clone(), task);
        }
        self.most_held.fetch_max(held.len(), Ordering::SeqCst);
        Ok(deliveries)
    }
    async fn extend(&self, receipts: &[Receipt], visibility: Duration) -> QueueResult<()> {
        // Once sent, a request reaches the queue even if its sender gives up waiting: the
        // delayed call runs on its own.
        let delay = *self.extend_delay.lock().unwrap();
        let (inner, released, hidden_again) = (
            self.inner.clone(),
            self.released.clone(),
            self.hidden_again.clone(),
        );
        let receipts = receipts.to_vec();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            {
                let released = released.lock().unwrap();
                hidden_again.lock().unwrap().extend(
                    receipts
                        .iter()
                        .filter(|receipt| released.contains(*receipt))
                        .cloned(),
                );
            }
            inner.extend(&receipts, visibility).await
        })
        .await
        .unwrap()
    }
    async fn release(&self, receipt: &Receipt, delay: Duration) -> QueueResult<()> {
        self.settle(receipt);
        self.released.lock().unwrap().insert(receipt.clone());
        self.inner.release(receipt, delay).await
    }
    async fn ack(&self, receipts: &[Receipt]) -> QueueResult<()> {
        for receipt in receipts {
            let Some(task) = self.settle(receipt) else {
                continue;
            };
            let stream = TaskId::from_uuid(task).stream_id();
            let events = self.log.read_stream(&stream, 0).await.unwrap();
            let ended = events
                .iter()
                .any(|r| r.event_type == "TaskCompleted" || r.event_type == "TaskFailed");
            if !ended {
                let kinds: Vec<&str> = events.iter().map(|r| r.event_type.as_str()).collect();
                self.early_acks
                    .lock()
                    .unwrap()
                    .push(format!("{task}: {kinds:?}"));
            }
        }
        self.inner.ack(receipts).await
    }
    async fn dead_letter(&self, receipt: &Receipt, reason: &str) -> QueueResult<()> {
        self.settle(receipt);
        self.inner.dead_letter(receipt, reason).await
    }
    async fn purge_job(&self, job_id: Uuid) -> QueueResult<u64> {
        self.inner.purge_job(job_id).await
    }
    async fn depth(&self) -> QueueResult<QueueDepth> {
        self.inner.depth().await
    }
    async fn dead_letters(&self, job_id: Option<Uuid>, limit: i64) -> QueueResult<Vec<DeadLetter>> {
        self.inner.dead_letters(job_id, limit).await
    }
    async fn remove_dead_letters(&self, ids: &[String]) -> QueueResult<()> {
        self.inner.remove_dead_letters(ids).await
    }
}

// ---------------------------------------------------------------------------------------------
// Harness

/// A backend: the log (fast) and the queue.
struct Backend {
    log: Arc<dyn EventLog>,
    queue: Arc<dyn TaskQueue>,
    /// The queue's shortest usable visibility timeout (SQS counts whole seconds).
    visibility: Duration,
    /// Messages held that make a full buffer here: two thirds of it on the SQL queue; on SQS
    /// (moto answers a receive of at most 10 messages in up to a second) one receive's worth
    /// beyond the slots.
    full: usize,
    /// Tasks per test: moto runs a few dozen tasks a second, so SQS gets fewer.
    tasks: u32,
}

impl Backend {
    /// Submits a job of `tasks` tasks of type `work`; its key, and the queue to watch.
    async fn work_job(&self, tasks: u32) -> ((JobId, u32), Arc<WatchedQueue>) {
        self.work_job_with(JobSpec::new("work", tasks)).await
    }

    async fn work_job_with(&self, spec: JobSpec) -> ((JobId, u32), Arc<WatchedQueue>) {
        let job = submit(self.log.as_ref(), self.queue.as_ref(), spec)
            .await
            .key();
        (job, WatchedQueue::new(self.queue.clone(), self.log.clone()))
    }

    async fn sqlite() -> Backend {
        let pool = testing::fresh_sqlite().await;
        Backend {
            log: Arc::new(SqliteEventLog::new(pool.clone())),
            queue: Arc::new(SqlQueue::sqlite(pool).with_poll_interval(Duration::from_millis(25))),
            visibility: Duration::from_millis(800),
            full: SLOTS + PREFETCH * 2 / 3,
            tasks: 600,
        }
    }

    async fn postgres() -> Option<Backend> {
        let pool = testing::fresh_postgres().await?;
        Some(Backend {
            log: Arc::new(PostgresEventLog::new(pool.clone())),
            queue: Arc::new(SqlQueue::postgres(pool).with_poll_interval(Duration::from_millis(25))),
            visibility: Duration::from_millis(800),
            full: SLOTS + PREFETCH * 2 / 3,
            tasks: 600,
        })
    }

    async fn sqs(test: &str) -> Option<Backend> {
        let queue = testing::fresh_sqs_queue(test, 5).await?;
        Some(Backend {
            log: Arc::new(SqliteEventLog::new(testing::fresh_sqlite().await)),
            queue: Arc::new(queue),
            visibility: Duration::from_secs(1),
            full: SLOTS + 10,
            tasks: 150,
        })
    }
}

async fn task_states(log: &dyn EventLog, job: (JobId, u32)) -> Vec<TaskState> {
    task_events(log, job)
        .await
        .iter()
        .map(|events| events.iter().fold(TaskState::default(), evolve_task))
        .collect()
}

/// Waits until every task of the job is COMPLETED.
async fn wait_completed(log: &dyn EventLog, job: (JobId, u32), within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let states = task_states(log, job).await;
        let done = states
            .iter()
            .filter(|s| s.status == TaskStatus::Completed)
            .count();
        if done == states.len() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{done} of {} tasks COMPLETED in time",
            states.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every task has one `TaskStarted` and one `TaskCompleted`, and nothing else happened to it.
async fn assert_each_completed_once(log: &dyn EventLog, job: (JobId, u32)) {
    for events in task_events(log, job).await {
        let kinds: Vec<&str> = events.iter().map(Event::event_type).collect();
        assert_eq!(
            kinds,
            ["TaskEnqueued", "TaskStarted", "TaskCompleted"],
            "{events:?}"
        );
    }
}

/// Runs a worker with `config` over the job, every group commit slowed down by 150 ms, until
/// each task has completed exactly once (two minutes at most), sampling the worker's
/// `in_flight` gauge meanwhile (the messages it holds: buffered, running, or waiting for their
/// end to commit). The slowed log, and the most messages the worker held.
async fn drain_with_slow_commits(
    backend: &Backend,
    job: (JobId, u32),
    watched: &Arc<WatchedQueue>,
    config: WorkerConfig,
) -> (Arc<SlowLog>, u64) {
    let slow = SlowLog::new(backend.log.clone(), Duration::from_millis(150));
    let worker = Running::start(
        config,
        handlers(Arc::new(AtomicBool::new(false)), Duration::ZERO),
        slow.clone(),
        watched.clone(),
    );
    let most = Arc::new(AtomicU64::new(0));
    let sampler = {
        let metrics = worker.metrics.clone();
        let most = most.clone();
        tokio::spawn(async move {
            loop {
                most.fetch_max(metrics.snapshot().in_flight, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    wait_completed(backend.log.as_ref(), job, Duration::from_secs(120)).await;
    sampler.abort();
    let stats = worker.stop().await;
    assert_each_completed_once(backend.log.as_ref(), job).await;
    assert_eq!(stats.completed, u64::from(job.1));
    (slow, most.load(Ordering::SeqCst))
}

/// Waits until `cond` holds (up to `within`).
async fn eventually(what: &str, within: Duration, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Handlers for `work`: instant, or sleeping `blocked_for` while `blocked` is set.
fn handlers(blocked: Arc<AtomicBool>, blocked_for: Duration) -> Handlers {
    let mut handlers = Handlers::builtin(&WorkerConfig::default());
    handlers.register(
        "work",
        handler_fn(move |_task| {
            let blocked = blocked.load(Ordering::SeqCst);
            async move {
                if blocked {
                    tokio::time::sleep(blocked_for).await;
                }
                Ok(Some(json!({"ok": true})))
            }
        }),
    );
    handlers
}

fn config(
    worker_id: &str,
    concurrency: usize,
    prefetch: usize,
    visibility: Duration,
) -> WorkerConfig {
    WorkerConfig {
        worker_id: worker_id.into(),
        concurrency,
        prefetch,
        visibility_timeout: visibility,
        long_poll: Duration::from_millis(200),
        grace_period: Duration::from_secs(10),
        ..WorkerConfig::default()
    }
}

/// A worker running in the background.
struct Running {
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<Result<WorkerStats, WorkerError>>,
    metrics: Arc<shoal_worker::WorkerMetrics>,
}

impl Running {
    fn start(
        config: WorkerConfig,
        handlers: Handlers,
        log: Arc<dyn EventLog>,
        queue: Arc<dyn TaskQueue>,
    ) -> Running {
        let worker = Worker::new(config, handlers, log, queue);
        let metrics = worker.metrics();
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(worker.run(async move {
            let _ = stopped.await;
        }));
        Running {
            stop: Some(stop),
            handle,
            metrics,
        }
    }

    fn stats(&self) -> WorkerStats {
        self.metrics.snapshot()
    }

    /// SIGTERM; the worker's final counters.
    async fn stop(mut self) -> WorkerStats {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(60), &mut self.handle)
            .await
            .expect("the worker stops")
            .unwrap()
            .unwrap()
    }

    /// Drops the worker without any cleanup, as a crash would. Unlike a crashed process, it
    /// leaves the pool it shares with the test open: a database call it had under way is cut
    /// off, and its connection goes back to the pool (see
    /// `sqlite_workers_crashed_at_any_moment_leave_the_database_writable`).
    async fn crash(self) {
        self.handle.abort();
        let _ = self.handle.await;
    }
}

macro_rules! for_each_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::sqlite().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(backend) = super::Backend::postgres().await {
                        super::$name(backend).await;
                    }
                }
            )*
        }
        mod sqs {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(backend) = super::Backend::sqs("buffer").await {
                        super::$name(backend).await;
                    }
                }
            )*
        }
    };
}

for_each_backend!(
    a_crash_with_a_full_buffer_loses_nothing_and_completes_each_task_once,
    sigterm_with_a_full_buffer_releases_it_at_once_and_finishes_running_handlers,
    slow_commits_keep_the_slots_busy_up_to_the_buffer_then_hold_back,
    sigterm_during_a_slow_heartbeat_leaves_the_released_messages_visible,
    large_messages_fill_the_buffer_by_its_bytes,
    a_slot_does_not_wait_for_the_start_of_an_attempt_it_ran,
);

const SLOTS: usize = 2;
const PREFETCH: usize = 30;

// ---------------------------------------------------------------------------------------------
// Tests

async fn a_crash_with_a_full_buffer_loses_nothing_and_completes_each_task_once(backend: Backend) {
    let tasks = backend.tasks;
    let (job, watched) = backend.work_job(tasks).await;
    let slow = SlowLog::new(backend.log.clone(), Duration::from_millis(100));
    let first = Running::start(
        config("first", SLOTS, PREFETCH, backend.visibility),
        handlers(Arc::new(AtomicBool::new(false)), Duration::ZERO),
        slow.clone(),
        watched.clone(),
    );
    // Fast handlers behind slow commits: the buffer fills.
    eventually("a full buffer", Duration::from_secs(30), || {
        watched.held() >= backend.full
    })
    .await;
    let completed_before = first.stats().completed;
    first.crash().await;
    // A commit under way when the worker died may still land; let it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let states = task_states(backend.log.as_ref(), job).await;
    let running = states
        .iter()
        .filter(|s| s.status == TaskStatus::Running)
        .count();
    let completed = states
        .iter()
        .filter(|s| s.status == TaskStatus::Completed)
        .count();
    assert!(completed < tasks as usize, "the crash came before the end");
    assert!(completed as u64 >= completed_before);

    // Another worker: the crashed one's messages come back after their visibility timeout.
    let second = Running::start(
        config("second", 16, 512, Duration::from_secs(30)),
        handlers(Arc::new(AtomicBool::new(false)), Duration::ZERO),
        backend.log.clone(),
        watched.clone(),
    );
    wait_completed(backend.log.as_ref(), job, Duration::from_secs(120)).await;
    let stats = second.stop().await;
    assert_each_completed_once(backend.log.as_ref(), job).await;
    // Every attempt the crashed worker had started (and not ended) was taken over.
    assert_eq!(stats.taken_over, running as u64, "{stats:?}");
    assert_eq!(
        stats.completed as usize,
        tasks as usize - completed,
        "{stats:?}"
    );
    watched.assert_no_early_ack();
}

/// A worker cut off at any moment (its future dropped: a crash in-process, a task aborted at
/// shutdown, a timeout) may be in the middle of a database call. On SQLite, which has one
/// writer, a write cut off as its transaction began used to leave its connection inside that
/// transaction when it went back to the pool, holding the write lock: every later write waited
/// out the busy timeout and failed, and the next worker completed nothing. Workers on one shared
/// pool are crashed here at varying moments, and a write goes through after each crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_workers_crashed_at_any_moment_leave_the_database_writable() {
    let backend = Backend::sqlite().await;
    submit(
        backend.log.as_ref(),
        backend.queue.as_ref(),
        JobSpec::new("work", 2000),
    )
    .await;
    for i in 0..40u64 {
        let worker = Running::start(
            config(&format!("crashed-{i}"), SLOTS, PREFETCH, backend.visibility),
            handlers(Arc::new(AtomicBool::new(false)), Duration::ZERO),
            backend.log.clone(),
            backend.queue.clone(),
        );
        tokio::time::sleep(Duration::from_millis(20 + i * 37 % 130)).await;
        worker.crash().await;
        // A write: a checkpoint, in a write transaction of its own.
        let write = backend.log.save_checkpoint("probe", LogPosition::START);
        tokio::time::timeout(Duration::from_secs(10), write)
            .await
            .unwrap_or_else(|_| panic!("after crash {i}, a write still waits after 10 s"))
            .unwrap_or_else(|e| panic!("after crash {i}, a write fails: {e}"));
    }
}

async fn sigterm_with_a_full_buffer_releases_it_at_once_and_finishes_running_handlers(
    backend: Backend,
) {
    let tasks = backend.tasks;
    let (job, watched) = backend.work_job(tasks).await;
    let slow = SlowLog::new(backend.log.clone(), Duration::from_millis(100));
    let blocked = Arc::new(AtomicBool::new(false));
    let first = Running::start(
        config("first", SLOTS, PREFETCH, Duration::from_secs(30)),
        handlers(blocked.clone(), Duration::from_millis(800)),
        slow.clone(),
        watched.clone(),
    );
    eventually("a full buffer", Duration::from_secs(30), || {
        watched.held() >= backend.full
    })
    .await;
    // The next handlers take long: both slots are busy, and the buffer stays full.
    blocked.store(true, Ordering::SeqCst);
    eventually(
        "both slots running long handlers",
        Duration::from_secs(10),
        || first.stats().running == SLOTS as u64,
    )
    .await;
    // The ends of the tasks before them commit, and are acknowledged.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The buffer fills again behind the running handlers (the tasks ahead of them can have
    // emptied it, and a receive from moto takes up to a second on a loaded machine), and every
    // completed task's acknowledgement has reached the queue (on a loaded machine it can come
    // after the 300 ms).
    eventually(
        "the buffer filled again behind the running handlers, the completed acknowledged",
        Duration::from_secs(10),
        || {
            let stats = first.stats();
            let held = watched.held() as u64;
            held > SLOTS as u64 && held + stats.completed + stats.released == stats.received
        },
    )
    .await;
    let held = watched.held();
    let completed_before = first.stats().completed;
    assert!(held > SLOTS, "held {held}");

    let began = std::time::Instant::now();
    let stats = first.stop().await;
    let took = began.elapsed();
    // The two running handlers (800 ms) finish and their ends commit (100 ms); the buffer is
    // released meanwhile, not after.
    assert!(took < Duration::from_secs(5), "stopping took {took:?}");
    assert!(
        stats.completed >= completed_before + SLOTS as u64,
        "the running handlers finished and were recorded: {stats:?}"
    );
    assert_eq!(
        stats.received,
        stats.completed + stats.released,
        "every message held was either completed or released: {stats:?}"
    );
    // All that was held but the two running tasks went back to the queue.
    assert!(
        stats.released as usize + SLOTS >= held,
        "{stats:?}, held {held}"
    );
    assert_eq!(watched.held(), 0, "nothing is left hidden");
    assert_eq!((stats.in_flight, stats.running), (0, 0), "{stats:?}");

    // Nothing lost: another worker completes the rest, each task once.
    let second = Running::start(
        config("second", 16, 512, Duration::from_secs(30)),
        handlers(Arc::new(AtomicBool::new(false)), Duration::ZERO),
        backend.log.clone(),
        watched.clone(),
    );
    wait_completed(backend.log.as_ref(), job, Duration::from_secs(120)).await;
    let after = second.stop().await;
    assert_each_completed_once(backend.log.as_ref(), job).await;
    assert_eq!(
        stats.completed + after.completed,
        u64::from(tasks),
        "{after:?}"
    );
    watched.assert_no_early_ack();
}

/// A heartbeat's `extend` sent just before a release and reaching the queue after it would hide
/// the released message again for a whole visibility timeout (SQS calls can take seconds): the
/// next worker would wait for it. Every `extend` here takes about as long as the heartbeat's
/// period, so one is under way when the worker is told to stop.
async fn sigterm_during_a_slow_heartbeat_leaves_the_released_messages_visible(backend: Backend) {
    let tasks = 40;
    let (job, watched) = backend.work_job(tasks).await;
    let visibility = Duration::from_secs(3);
    *watched.extend_delay.lock().unwrap() = visibility / 3;
    let blocked = Arc::new(AtomicBool::new(true));
    let first = Running::start(
        WorkerConfig {
            grace_period: Duration::from_millis(200),
            ..config("first", SLOTS, 4, visibility)
        },
        handlers(blocked, Duration::from_secs(30)),
        backend.log.clone(),
        watched.clone(),
    );
    eventually("both slots busy", Duration::from_secs(30), || {
        first.stats().running == SLOTS as u64
    })
    .await;
    // Two heartbeats' worth: an extend of every held message is under way or about to be.
    tokio::time::sleep(visibility * 2 / 3 + Duration::from_millis(100)).await;
    let stats = first.stop().await;
    assert_eq!(stats.completed, 0, "{stats:?}");
    assert!(stats.released >= SLOTS as u64, "{stats:?}");
    // An extend sent before the stop reaches the queue by now.
    tokio::time::sleep(visibility / 3 + Duration::from_millis(200)).await;
    let hidden_again = watched.hidden_again.lock().unwrap().clone();
    assert!(
        hidden_again.is_empty(),
        "a heartbeat reached the queue after the release of {hidden_again:?}"
    );
    // So another worker gets every task at once, not after the visibility timeout.
    let second = Running::start(
        config("second", 16, 64, visibility),
        handlers(Arc::new(AtomicBool::new(false)), Duration::ZERO),
        backend.log.clone(),
        backend.queue.clone(),
    );
    wait_completed(backend.log.as_ref(), job, visibility * 2 / 3).await;
    second.stop().await;
    assert_each_completed_once(backend.log.as_ref(), job).await;
}

async fn slow_commits_keep_the_slots_busy_up_to_the_buffer_then_hold_back(backend: Backend) {
    let tasks = backend.tasks * 2 / 3;
    let (job, watched) = backend.work_job(tasks).await;
    let (slow, most_in_flight) = drain_with_slow_commits(
        &backend,
        job,
        &watched,
        config("w", SLOTS, PREFETCH, Duration::from_secs(30)),
    )
    .await;

    // Back-pressure: never more than the slots and the buffer held at once...
    let most_held = watched.most_held.load(Ordering::SeqCst);
    assert!(most_held <= SLOTS + PREFETCH, "held {most_held}");
    assert!(
        most_in_flight <= (SLOTS + PREFETCH) as u64,
        "{most_in_flight}"
    );
    // ...but the buffer was used: far more tasks than slots went through each slow commit
    // (with slots waiting for commits, a commit carries at most one append per slot).
    assert!(most_held >= SLOTS + PREFETCH / 2, "held {most_held}");
    let largest = slow.largest_commit.load(Ordering::SeqCst);
    assert!(largest > 4 * SLOTS, "largest commit: {largest} appends");
    // Nothing was acknowledged before its task's end was in the log.
    watched.assert_no_early_ack();
    assert_eq!(watched.held(), 0);
}

/// A handler longer than the start grace ends while its `TaskStarted` is still committing (a
/// commit takes 3 s here): its slot is free at once for the next task, not after that commit
/// (ADR 27).
async fn a_slot_does_not_wait_for_the_start_of_an_attempt_it_ran(backend: Backend) {
    let (job, watched) = backend.work_job(1).await;
    let slow = SlowLog::new(backend.log.clone(), Duration::from_secs(3));
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let mut handlers = Handlers::builtin(&WorkerConfig::default());
    handlers.register(
        "work",
        handler_fn(move |_task| {
            counted.fetch_add(1, Ordering::SeqCst);
            async {
                tokio::time::sleep(Duration::from_millis(30)).await;
                Ok(None)
            }
        }),
    );
    let worker = Running::start(
        config("w", 1, 8, Duration::from_secs(30)),
        handlers,
        slow.clone(),
        watched.clone(),
    );
    eventually("the handler to run", Duration::from_secs(10), || {
        calls.load(Ordering::SeqCst) == 1
    })
    .await;
    // The handler is done; its start is still in the slow commit.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let states = task_states(backend.log.as_ref(), job).await;
    assert_eq!(states[0].status, TaskStatus::Enqueued, "{states:?}");
    assert_eq!(
        worker.metrics.snapshot().running,
        0,
        "the slot waits for a commit"
    );
    slow.delay_ms.store(0, Ordering::SeqCst);
    wait_completed(backend.log.as_ref(), job, Duration::from_secs(60)).await;
    let stats = worker.stop().await;
    assert_each_completed_once(backend.log.as_ref(), job).await;
    assert_eq!((stats.completed, calls.load(Ordering::SeqCst)), (1, 1));
    watched.assert_no_early_ack();
}

async fn large_messages_fill_the_buffer_by_its_bytes(backend: Backend) {
    const PAD: usize = 8_000;
    const BYTES: usize = 5 * PAD;
    let tasks = backend.tasks / 3;
    let (job, watched) = backend
        .work_job_with(JobSpec {
            parameters: json!({ "pad": "x".repeat(PAD) }),
            ..JobSpec::new("work", tasks)
        })
        .await;
    let (_, most_in_flight) = drain_with_slow_commits(
        &backend,
        job,
        &watched,
        WorkerConfig {
            prefetch_bytes: BYTES,
            ..config("w", SLOTS, PREFETCH, Duration::from_secs(30))
        },
    )
    .await;

    // Each message is a little over PAD bytes. The worker held (bodies in memory: buffered,
    // running, or waiting for their end to commit) what fits in BYTES and at most one more
    // (the receive that crossed the bound), where the count alone lets it hold
    // SLOTS + PREFETCH...
    assert!(
        most_in_flight <= (BYTES / PAD + 1) as u64,
        "held {most_in_flight}"
    );
    // ...and it used that room: slow commits kept more than the slots' messages.
    assert!(most_in_flight > SLOTS as u64, "held {most_in_flight}");
    // The queue saw as few held, but for acknowledgements under way (their bodies dropped).
    let most_held = watched.most_held.load(Ordering::SeqCst);
    assert!(most_held <= SLOTS + PREFETCH / 2, "held {most_held}");
    watched.assert_no_early_ack();
    assert_eq!(watched.held(), 0);
}
