//! The built-in orchestrator driver: each job's lifecycle, `CREATE_TASKS -> ENQUEUE_TASKS ->
//! MONITOR -> COMPLETE | FAIL`, driven from the event log.
//!
//! Two loops run while this process leads (see [`LeaderLock`] and
//! `docs/adr/0005-orchestrator-leadership.md`):
//! - the **consumer** reads the log in batches from its checkpoint (`orchestrator`). It relays
//!   `TaskEnqueued` and `TaskRetryScheduled` events to the task queue (a transactional outbox:
//!   one `send` per batch, skipped for cancelled jobs), purges a cancelled job's messages,
//!   folds task events into each job's [`JobProgress`], appends exactly one `JobCompleted` or
//!   `JobFailed` when a job's tasks have all ended (MONITOR), and saves the changed jobs'
//!   counts with the checkpoint atomically, so a restart resumes with exact counts;
//! - the **expander** turns submitted jobs into tasks, one chunk (`TasksCreated` + its
//!   `TaskEnqueued` events, one append) per job per round, so a huge job does not starve a
//!   small one. Chunks grow with the job, from `first_chunk_size` to `chunk_size`. On the SQL
//!   queue of the log's own database (`send_with_chunks`) a chunk's messages are queued in the
//!   chunk's own transaction, and the relay leaves those tasks alone (ADR 14).
//!
//! Every write to the log is an append at an expected stream version, and a queue send of the
//! same (task, attempt) twice is harmless, so a crash anywhere, or two leaders for a moment,
//! never duplicates or loses a task: the orchestrator is at-least-once towards the queue and
//! exactly-once in the log. It never panics on an event it cannot decode: it logs and skips it.

mod admission;
mod consumer;
mod expander;
pub mod prometheus;
mod reconciler;
mod stepfunctions;

pub use self::reconciler::ReconcileOutcome;
pub use self::stepfunctions::StepFunctionsConfig;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use shoal_domain::{Event, JobId, JobState, evolve_job};
use shoal_infra::db::Database;
use shoal_infra::eventlog::{EventLog, LogError, NewEvent};
use shoal_infra::orchestrator_store::{LeaderLock, OrchestratorStore, StoreError};
use shoal_infra::queue::{QueueDepth, QueueError, TaskQueue};
use shoal_infra::stepfunctions::{SfnError, StepFunctions};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use self::consumer::Consumer;
use self::expander::{ExpandQueue, Expander};

/// How the orchestrator runs. `Default` gives production values.
#[derive(Debug, Clone)]
pub struct OrchestratorConfig {
    /// Most tasks created per expansion chunk (one append, one transaction). >= 1.
    pub chunk_size: u32,
    /// Most tasks of a job's first chunk (>= 1): chunks then grow with the job (each as big as
    /// the tasks created before it) up to `chunk_size`, so a job's first tasks are queued
    /// quickly and a big job's later chunks amortize their commits.
    pub first_chunk_size: u32,
    /// Queue each chunk's tasks in the chunk's own transaction (`EventLog::append_and_send`)
    /// instead of relaying them once the consumer reads them back. Only for the SQL queue of
    /// the log's own database (`shoal_infra::queue::SqlQueue` on the same pool): the rows go
    /// into that database's queue table whatever `queue` is. The built-in driver only (the
    /// Step Functions driver's EnqueueTasks step sends them).
    pub send_with_chunks: bool,
    /// Most events the consumer folds per batch (one queue send, one save). >= 1.
    pub batch_size: i64,
    /// How many jobs are expanded at the same time.
    pub expand_concurrency: usize,
    /// How often a standby tries to become the leader.
    pub standby_retry: Duration,
    /// How often the leader checks that it still holds the lock.
    pub leader_check_interval: Duration,
    /// How long to wait after a database or queue error before trying again.
    pub error_backoff: Duration,
    /// The consumer's checkpoint name.
    pub checkpoint_name: String,
    /// How long an idempotency key is remembered: a `submitJob` repeated with the same key
    /// within it returns the first job, after it submits a new one. The leader forgets older
    /// keys every `retention_interval`.
    pub idempotency_key_retention: Duration,
    /// How often the leader forgets expired idempotency keys.
    pub retention_interval: Duration,
    /// How often the leader's reconciler sweeps the waiting and running tasks (see
    /// `reconciler`): requeues those whose message is lost, times out those past their
    /// deadline.
    pub reconcile_interval: Duration,
    /// Most task streams one reconciler pass reads. >= 1.
    pub reconcile_batch: usize,
    /// A waiting task is requeued only when its last event (or its retry's due time) is at
    /// least this old: younger ones may still be on their way to the queue.
    pub reconcile_min_age: Duration,
    /// A running attempt is timed out this long after its own timeout has passed (the worker
    /// cuts the handler off at the timeout and needs a moment to record it).
    pub reconcile_grace: Duration,
    /// Fair share on a queue that cannot reorder its messages (SQS): at most this many of a
    /// job's tasks are in the queue and not started, and the rest are admitted in order of
    /// priority, round-robin across jobs (see `docs/limits-and-rates.md`). `None`: every task
    /// goes to the queue at once (the SQL queue takes its tasks fairly by itself). >= 1.
    pub fair_share_window: Option<u32>,
}

/// Default of [`OrchestratorConfig::idempotency_key_retention`]: 7 days.
pub const DEFAULT_IDEMPOTENCY_KEY_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

impl Default for OrchestratorConfig {
    fn default() -> Self {
        OrchestratorConfig {
            chunk_size: 10_000,
            first_chunk_size: 1000,
            send_with_chunks: false,
            batch_size: 2000,
            expand_concurrency: 2,
            standby_retry: Duration::from_secs(1),
            leader_check_interval: Duration::from_secs(1),
            error_backoff: Duration::from_secs(1),
            checkpoint_name: "orchestrator".into(),
            idempotency_key_retention: DEFAULT_IDEMPOTENCY_KEY_RETENTION,
            retention_interval: Duration::from_secs(3600),
            reconcile_interval: Duration::from_secs(10),
            reconcile_batch: 1000,
            reconcile_min_age: Duration::from_secs(60),
            reconcile_grace: Duration::from_secs(60),
            fair_share_window: None,
        }
    }
}

impl OrchestratorConfig {
    /// Most tasks per chunk on SQLite, where a chunk's transaction holds the only write lock:
    /// small enough that workers and commands never wait long behind an expansion (a
    /// 1,000-task chunk held it ~60 ms in `shoal dev`), large enough that the random index
    /// pages a chunk changes are written once for many of its tasks (1,000 -> 2,000: 1.06x
    /// tasks/s, 0.91x bytes written per task; docs/benchmarks.md, the fifteenth session).
    pub const SQLITE_CHUNK_SIZE: u32 = 2000;

    /// Production values for `database`, whose SQL queue is the task queue when `sql_queue`.
    /// On SQLite a chunk's tasks are then queued in the chunk's own transaction (one writer:
    /// one transaction instead of two, and nothing read back). On Postgres the relay keeps
    /// queueing them: its inserts run on a second connection while the next chunk is written,
    /// which measured faster on two cores than one transaction doing both (ADR 14).
    pub fn for_database(database: &Database, sql_queue: bool) -> Self {
        let defaults = OrchestratorConfig::default();
        match database {
            Database::Postgres(_) => defaults,
            Database::Sqlite(_) => OrchestratorConfig {
                chunk_size: Self::SQLITE_CHUNK_SIZE,
                send_with_chunks: sql_queue,
                ..defaults
            },
        }
    }

    fn validate(&self) -> Result<(), OrchestratorError> {
        if self.chunk_size == 0 {
            return Err(OrchestratorError::Config(
                "chunk_size must be at least 1".into(),
            ));
        }
        if self.first_chunk_size == 0 {
            return Err(OrchestratorError::Config(
                "first_chunk_size must be at least 1".into(),
            ));
        }
        if self.batch_size < 1 {
            return Err(OrchestratorError::Config(
                "batch_size must be at least 1".into(),
            ));
        }
        if self.expand_concurrency == 0 {
            return Err(OrchestratorError::Config(
                "expand_concurrency must be at least 1".into(),
            ));
        }
        if self.reconcile_batch == 0 {
            return Err(OrchestratorError::Config(
                "reconcile_batch must be at least 1".into(),
            ));
        }
        if self.fair_share_window == Some(0) {
            return Err(OrchestratorError::Config(
                "fair_share_window must be at least 1".into(),
            ));
        }
        if self.checkpoint_name.is_empty() {
            return Err(OrchestratorError::Config(
                "checkpoint_name must not be empty".into(),
            ));
        }
        Ok(())
    }
}

/// What stopped a step of the orchestrator. Every variant is transient except `Config`: the
/// running orchestrator logs it, backs off and carries on from its last saved state.
#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    /// The configuration is unusable. Fix it; do not retry.
    #[error("invalid orchestrator configuration: {0}")]
    Config(String),
    /// The event log failed. Retry after a backoff.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The task queue failed. Retry after a backoff (sends are idempotent).
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The orchestrator's own tables failed, or another orchestrator moved the checkpoint
    /// (`StoreError::Fenced`): reload the state and carry on.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Step Functions or its control queue failed (Step Functions driver). Retry after a
    /// backoff (starting and stopping executions is idempotent).
    #[error("Step Functions: {0}")]
    StepFunctions(#[from] SfnError),
}

impl OrchestratorError {
    /// Another orchestrator saved progress meanwhile (two leaders for a moment).
    pub fn is_fenced(&self) -> bool {
        matches!(self, OrchestratorError::Store(StoreError::Fenced { .. }))
    }
}

/// Counters and gauges of an orchestrator, cheap to clone and read from anywhere (metrics
/// endpoint, tests).
#[derive(Debug, Clone)]
pub struct OrchestratorMetrics {
    inner: Arc<MetricsInner>,
    queue: Arc<dyn TaskQueue>,
}

#[derive(Debug, Default)]
struct MetricsInner {
    leader: AtomicBool,
    terms: AtomicU64,
    events: AtomicU64,
    undecodable: AtomicU64,
    relayed: AtomicU64,
    sent_with_chunks: AtomicU64,
    chunks: AtomicU64,
    tasks_created: AtomicU64,
    jobs_completed: AtomicU64,
    jobs_failed: AtomicU64,
    reconcile_passes: AtomicU64,
    tasks_requeued: AtomicU64,
    tasks_timed_out: AtomicU64,
}

impl OrchestratorMetrics {
    /// Whether this orchestrator leads now (holds the lock and runs its loops).
    pub fn is_leader(&self) -> bool {
        self.inner.leader.load(Ordering::Relaxed)
    }
    /// How many times this orchestrator became the leader.
    pub fn leadership_terms(&self) -> u64 {
        self.inner.terms.load(Ordering::Relaxed)
    }
    /// Log events folded.
    pub fn events_processed(&self) -> u64 {
        self.inner.events.load(Ordering::Relaxed)
    }
    /// Log events skipped because they could not be decoded.
    pub fn events_undecodable(&self) -> u64 {
        self.inner.undecodable.load(Ordering::Relaxed)
    }
    /// Messages handed to the queue (resends included).
    pub fn messages_relayed(&self) -> u64 {
        self.inner.relayed.load(Ordering::Relaxed)
    }
    /// Messages queued in their chunk's own transaction (`send_with_chunks`), which the relay
    /// then leaves alone.
    pub fn messages_sent_with_chunks(&self) -> u64 {
        self.inner.sent_with_chunks.load(Ordering::Relaxed)
    }
    /// Expansion chunks appended.
    pub fn chunks_created(&self) -> u64 {
        self.inner.chunks.load(Ordering::Relaxed)
    }
    /// Tasks created by expansion.
    pub fn tasks_created(&self) -> u64 {
        self.inner.tasks_created.load(Ordering::Relaxed)
    }
    /// `JobCompleted` events appended by this orchestrator.
    pub fn jobs_completed(&self) -> u64 {
        self.inner.jobs_completed.load(Ordering::Relaxed)
    }
    /// `JobFailed` events appended by this orchestrator.
    pub fn jobs_failed(&self) -> u64 {
        self.inner.jobs_failed.load(Ordering::Relaxed)
    }
    /// Reconciler passes made.
    pub fn reconcile_passes(&self) -> u64 {
        self.inner.reconcile_passes.load(Ordering::Relaxed)
    }
    /// Tasks the reconciler gave a new message (`TaskRequeued`).
    pub fn tasks_requeued(&self) -> u64 {
        self.inner.tasks_requeued.load(Ordering::Relaxed)
    }
    /// Running attempts the reconciler timed out (`TaskFailed`).
    pub fn tasks_timed_out(&self) -> u64 {
        self.inner.tasks_timed_out.load(Ordering::Relaxed)
    }
    /// The task queue's depth (the workers' autoscaling metric).
    pub async fn queue_depth(&self) -> Result<QueueDepth, QueueError> {
        self.queue.depth().await
    }

    fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

/// What both loops share.
#[derive(Debug, Clone)]
struct Shared {
    config: Arc<OrchestratorConfig>,
    log: Arc<dyn EventLog>,
    queue: Arc<dyn TaskQueue>,
    store: OrchestratorStore,
    metrics: OrchestratorMetrics,
    /// Jobs that may have tasks left to create: the consumer adds, the expander takes.
    pending: Arc<ExpandQueue>,
    /// The Step Functions driver, when it drives the jobs instead of the built-in one.
    sfn: Option<Arc<stepfunctions::Driver>>,
    /// Woken each time the consumer saves progress (steps waiting on the log listen).
    saved: Arc<Notify>,
    /// The tasks admission holds back on purpose (the reconciler leaves them alone).
    held: admission::HeldTasks,
    /// The limits admission knows (the expander does not queue a limited job's tasks itself).
    limits: admission::SharedLimits,
}

/// The built-in orchestrator. Run it with [`Orchestrator::run`]; tests drive it step by step
/// with [`Orchestrator::step`], [`Orchestrator::expand_step`] and
/// [`Orchestrator::run_until_idle`] (which do not take the leader lock).
#[derive(Debug)]
pub struct Orchestrator {
    shared: Shared,
    database: Database,
    consumer: Option<Consumer>,
    expander: Expander,
    reconciler: reconciler::Reconciler,
}

impl Orchestrator {
    /// An orchestrator on `log` and `queue`; `database` (the log's own database, migrated)
    /// holds its state and its leader lock.
    pub fn new(
        config: OrchestratorConfig,
        log: Arc<dyn EventLog>,
        queue: Arc<dyn TaskQueue>,
        database: Database,
    ) -> Result<Self, OrchestratorError> {
        config.validate()?;
        let shared = Shared {
            config: Arc::new(config),
            log,
            metrics: OrchestratorMetrics {
                inner: Arc::default(),
                queue: queue.clone(),
            },
            queue,
            store: OrchestratorStore::new(database.clone()),
            pending: Arc::default(),
            sfn: None,
            saved: Arc::default(),
            held: admission::HeldTasks::default(),
            limits: admission::SharedLimits::default(),
        };
        Ok(Orchestrator {
            expander: Expander::new(shared.clone()),
            shared,
            database,
            consumer: None,
            reconciler: reconciler::Reconciler::default(),
        })
    }

    /// The same orchestrator with the Step Functions driver: each job's lifecycle is an
    /// execution of the state machine `sfn` names, and this orchestrator does its steps (see
    /// `docs/stepfunctions.md`). The effects on the log are those of the built-in driver, plus
    /// the driver's bookkeeping events.
    pub fn with_step_functions(
        mut self,
        sfn: StepFunctions,
        config: StepFunctionsConfig,
    ) -> Result<Self, OrchestratorError> {
        config.validate()?;
        self.shared.sfn = Some(Arc::new(stepfunctions::Driver { sfn, config }));
        self.expander = Expander::new(self.shared.clone());
        self.consumer = None;
        Ok(self)
    }

    /// A handle on this orchestrator's counters and the queue depth.
    pub fn metrics(&self) -> OrchestratorMetrics {
        self.shared.metrics.clone()
    }

    /// Consumes one batch of the log (loading the saved state first, if needed): relay,
    /// progress, monitor, save. Returns how many events it read (0: caught up).
    ///
    /// On `Err`, the in-memory state is dropped and reloaded from the store at the next step,
    /// so nothing is counted twice.
    pub async fn step(&mut self) -> Result<usize, OrchestratorError> {
        let consumer = match &mut self.consumer {
            Some(consumer) => consumer,
            None => self
                .consumer
                .insert(Consumer::load(self.shared.clone()).await?),
        };
        let result = consumer.step().await;
        if result.is_err() {
            self.consumer = None;
        }
        result
    }

    /// One expansion round: one chunk of each job with tasks left to create. Returns how many
    /// chunks were appended (0: nothing to expand).
    pub async fn expand_step(&mut self) -> Result<usize, OrchestratorError> {
        self.expander.round().await
    }

    /// One reconciler pass (see `reconciler`): the next slice of waiting and running tasks,
    /// requeued or timed out where needed.
    pub async fn reconcile_step(&mut self) -> Result<ReconcileOutcome, OrchestratorError> {
        self.reconciler.pass(&self.shared).await
    }

    /// Steps the consumer and the expander until neither has anything to do. A fenced save
    /// (another orchestrator saved meanwhile) reloads and continues.
    pub async fn run_until_idle(&mut self) -> Result<(), OrchestratorError> {
        loop {
            let consumed = match self.step().await {
                Ok(n) => n,
                Err(error) if error.is_fenced() => 1,
                Err(error) => return Err(error),
            };
            let chunks = self.expand_step().await?;
            if consumed == 0 && chunks == 0 {
                return Ok(());
            }
        }
    }

    /// Runs until `shutdown` completes: waits to become the leader (retrying every
    /// `standby_retry`), then leads, checking the lock every `leader_check_interval` and going
    /// back to standby when it is lost. Errors inside the loops are logged and retried after
    /// `error_backoff`; `Err` only for a lock that cannot be used at all.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), OrchestratorError> {
        let Orchestrator {
            shared, database, ..
        } = self;
        let config = shared.config.clone();
        let mut lock = LeaderLock::new(&database);
        tokio::pin!(shutdown);
        loop {
            // Standby.
            loop {
                match lock.try_acquire().await {
                    Ok(true) => break,
                    Ok(false) => tracing::debug!("another orchestrator leads; standing by"),
                    Err(error) => tracing::warn!(%error, "cannot reach the leader lock"),
                }
                tokio::select! {
                    () = &mut shutdown => {
                        lock.release().await;
                        return Ok(());
                    }
                    () = tokio::time::sleep(config.standby_retry) => {}
                }
            }

            tracing::info!("orchestrator leads");
            shared.metrics.inner.leader.store(true, Ordering::Relaxed);
            OrchestratorMetrics::add(&shared.metrics.inner.terms, 1);
            let mut loops = JoinSet::new();
            loops.spawn(consumer::run(shared.clone()));
            match &shared.sfn {
                None => loops.spawn(expander::run(shared.clone())),
                Some(driver) => loops.spawn(stepfunctions::run(shared.clone(), driver.clone())),
            };
            loops.spawn(forget_expired_keys(shared.clone()));
            loops.spawn(reconciler::run(shared.clone()));
            let shut_down = loop {
                tokio::select! {
                    () = &mut shutdown => break true,
                    () = tokio::time::sleep(config.leader_check_interval) => {
                        if !lock.check().await.unwrap_or(false) {
                            tracing::warn!("orchestrator lost the leader lock; standing by");
                            break false;
                        }
                    }
                    Some(ended) = loops.join_next() => {
                        // The loops never return; a panic is a bug: lead again after a pause.
                        tracing::error!(?ended, "an orchestrator loop ended");
                        tokio::time::sleep(config.error_backoff).await;
                        break false;
                    }
                }
            };
            loops.shutdown().await;
            shared.metrics.inner.leader.store(false, Ordering::Relaxed);
            if shut_down {
                lock.release().await;
                tracing::info!("orchestrator stopped");
                return Ok(());
            }
        }
    }
}

/// Keys forgotten per statement (one short transaction each).
const FORGET_BATCH: i64 = 10_000;

/// The leader's retention loop: every `retention_interval`, forgets the idempotency keys older
/// than `idempotency_key_retention`, in batches, logging how many.
async fn forget_expired_keys(shared: Shared) {
    let config = shared.config.clone();
    loop {
        match forget_idempotency_keys(&*shared.log, config.idempotency_key_retention).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(keys = n, "forgot expired idempotency keys"),
            Err(error) => tracing::warn!(%error, "cannot forget expired idempotency keys"),
        }
        tokio::time::sleep(config.retention_interval).await;
    }
}

/// Forgets every idempotency key used more than `retention` ago; how many were forgotten.
pub async fn forget_idempotency_keys(
    log: &dyn EventLog,
    retention: Duration,
) -> Result<u64, LogError> {
    let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    let Some(used_before) = chrono::Utc::now().checked_sub_signed(retention) else {
        return Ok(0);
    };
    let mut total = 0;
    loop {
        let forgotten = log
            .forget_idempotency_keys(used_before, FORGET_BATCH)
            .await?;
        total += forgotten;
        if forgotten < FORGET_BATCH as u64 {
            return Ok(total);
        }
    }
}

/// The metadata of every event the orchestrator appends.
fn metadata() -> Value {
    json!({ "actor": "orchestrator" })
}

/// An event as the log stores it.
fn new_event(event: &Event) -> NewEvent {
    let encoded = event.encode();
    NewEvent {
        event_type: encoded.event_type.to_owned(),
        schema_version: encoded.schema_version,
        data: encoded.data,
        metadata: metadata(),
    }
}

/// Reads a job's stream and folds it: the state and the stream's version. Undecodable events
/// are logged and skipped.
async fn load_job(log: &dyn EventLog, job_id: JobId) -> Result<(JobState, i64), LogError> {
    let recorded = log.read_stream(&job_id.stream_id(), 0).await?;
    let version = recorded.last().map_or(0, |e| e.stream_version);
    let state = recorded
        .iter()
        .filter_map(
            |e| match Event::decode(&e.event_type, e.schema_version, e.data.get()) {
                Ok(event) => Some(event),
                Err(error) => {
                    tracing::warn!(
                        stream_id = %e.stream_id,
                        stream_version = e.stream_version,
                        %error,
                        "skipping an undecodable job event"
                    );
                    None
                }
            },
        )
        .fold(JobState::default(), |state, event| {
            evolve_job(state, &event)
        });
    Ok((state, version))
}
