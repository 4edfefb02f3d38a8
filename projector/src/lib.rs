//! Projections: folds the event log into the read tables (jobs, tasks, analytics), in batches,
//! each batch committed with its checkpoint, so a crash replays at most one batch and the result
//! equals a full replay. Rebuilds replay the whole log into fresh tables and swap them in.
//!
//! It never appends events and never makes decisions.
//!
//! Shape: each projection ([`ProjectionName`]) has its own checkpoint and tables, and a pure
//! fold ([`jobs::fold`], [`analytics::fold`]: events + the stored rows they touch -> the rows
//! and counter deltas to write, one upsert per touched row per batch). The [`Projector`] reads
//! the log, decodes, and hands each batch to `shoal_infra::readmodel`, which runs the fold
//! inside one transaction that also moves the checkpoint (fenced: a writer that finds the
//! checkpoint moved by someone else writes nothing and resumes from the new checkpoint). After
//! each commit it broadcasts a [`ProjectionChange`] for the query API's subscriptions.
//!
//! Undecodable events (unknown type, newer schema, malformed payload) are logged, counted in
//! [`ProjectionStatus::skipped_events`] and skipped: the read model must not stop for one bad
//! row. A newer schema means this build is too old; rebuild after upgrading.
//!
//! Events the database refuses to store the effect of (a number out of range, a character it
//! cannot hold: [`ReadModelError::is_refused_data`]) are parked (ADR 0012): a batch that fails
//! so is split in halves until the one event is found; the others are applied, that one is
//! recorded in `projection_parked_events` (`shoal projector status`, the metric
//! `shoal_projector_parked_events`) and the checkpoint moves past it. No single event can stop
//! a projection, and a rebuild parks the same events.

pub mod analytics;
pub mod jobs;
pub mod metrics;
mod running;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use shoal_domain::Event;
use shoal_infra::db::Database;
use shoal_infra::eventlog::{EventLog, LogError, LogPosition, RecordedEvent};
use shoal_infra::readmodel::{ChangeSource, ParkedEvent, ReadModelError, ReadModelStore, Target};
use tokio::sync::broadcast;

pub use shoal_infra::readmodel::{ProjectionChange, ProjectionName};

/// How the projector runs. `Default` gives production values.
#[derive(Debug, Clone)]
pub struct ProjectorConfig {
    /// Most events per batch (one transaction each). >= 1.
    pub batch_size: usize,
    /// How long to wait after a database error before trying again.
    pub error_backoff: Duration,
    /// Change notifications buffered per subscriber; a slower subscriber misses the oldest
    /// (`RecvError::Lagged`) and should re-read what it shows.
    pub change_capacity: usize,
    /// The projections `run` keeps up to date.
    pub projections: Vec<ProjectionName>,
    /// Shortest time between two reads of the log by a live projection. While events keep
    /// coming, a batch then holds what came in this long, so a task's start and end more often
    /// share a batch (one row write instead of two) and each batch's fixed statements serve
    /// more events; an event after a quiet spell is read at once.
    pub linger: Duration,
}

impl ProjectorConfig {
    /// Batch size on Postgres. Large batches make catching up cheaper: a task's events
    /// (enqueued, started, completed) often fall into one batch, so its row is written once
    /// instead of once per event (`docs/benchmarks.md`: 5,000 → 50,000 doubled catch-up
    /// throughput). Live batches stay small anyway: a batch holds what arrived since the last.
    pub const POSTGRES_BATCH_SIZE: usize = 50_000;
    /// Batch size on SQLite, where a batch's transaction holds the only write lock: small
    /// enough that commands and workers never wait long behind a catch-up.
    pub const SQLITE_BATCH_SIZE: usize = 5_000;
    /// Linger on SQLite (see [`ProjectorConfig::linger`]), where a batch's transaction holds
    /// the only write lock and every row write it saves is the one writer's time. On Postgres
    /// it is 0 by default: 100 ms there would cost the p99 from an append to a subscriber's
    /// message its 100 ms target (issue 4; ADR 21).
    pub const SQLITE_LINGER: Duration = Duration::from_millis(100);

    /// Production values for `database`.
    pub fn for_database(database: &Database) -> Self {
        ProjectorConfig {
            batch_size: match database {
                Database::Postgres(_) => Self::POSTGRES_BATCH_SIZE,
                Database::Sqlite(_) => Self::SQLITE_BATCH_SIZE,
            },
            linger: match database {
                Database::Postgres(_) => Duration::ZERO,
                Database::Sqlite(_) => Self::SQLITE_LINGER,
            },
            ..ProjectorConfig::default()
        }
    }
}

impl Default for ProjectorConfig {
    fn default() -> Self {
        ProjectorConfig {
            batch_size: Self::SQLITE_BATCH_SIZE,
            error_backoff: Duration::from_secs(1),
            change_capacity: 1024,
            projections: ProjectionName::ALL.to_vec(),
            linger: Duration::ZERO,
        }
    }
}

/// What went wrong. Transient database errors inside [`Projector::run`] are retried there;
/// the other methods return them.
#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    /// The read tables failed, or another writer moved a checkpoint (`Fenced`: retry).
    #[error(transparent)]
    Store(#[from] ReadModelError),
    /// The event log failed. Retry later.
    #[error(transparent)]
    Log(#[from] LogError),
}

/// Where a projection is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectionStatus {
    pub name: ProjectionName,
    /// The live tables' checkpoint.
    pub checkpoint: LogPosition,
    /// The newest event readers can see.
    pub head: LogPosition,
    /// Events stored after the checkpoint (on Postgres it includes uncommitted appends).
    pub lag_events: u64,
    /// A rebuild in progress (or abandoned), and where it is.
    pub rebuild: Option<LogPosition>,
    /// Events this process skipped because it could not decode them.
    pub skipped_events: u64,
    /// Events the projection left out because the database refused their effect (ever, by
    /// any process: ADR 0012), and the position of the latest.
    pub parked_events: u64,
    pub last_parked: Option<LogPosition>,
}

/// Where a rebuild is, as reported to its progress callback after each batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RebuildProgress {
    pub projection: ProjectionName,
    pub position: LogPosition,
    /// Events replayed so far.
    pub events: u64,
    /// Events in the log when the rebuild started (more may arrive while it runs).
    pub total_estimate: u64,
}

/// What a finished rebuild did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RebuildReport {
    pub projection: ProjectionName,
    /// The live checkpoint right after the swap.
    pub position: LogPosition,
    pub events: u64,
    pub elapsed: Duration,
}

/// Keeps the read tables up to date with the log. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Projector {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: ProjectorConfig,
    log: Arc<dyn EventLog>,
    store: ReadModelStore,
    changes: broadcast::Sender<Arc<ProjectionChange>>,
    skipped: [AtomicU64; 2],
    /// The live jobs projection's rows of running tasks (see `running`).
    running: tokio::sync::Mutex<running::RunningRows>,
}

/// A batch read ahead: how many events were read, the last one's position (`None`: caught up),
/// and the decodable ones, decoded.
struct DecodedBatch {
    read: usize,
    to: Option<LogPosition>,
    events: Vec<Event>,
}

/// Stops a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn slot(name: ProjectionName) -> usize {
    match name {
        ProjectionName::Jobs => 0,
        ProjectionName::Analytics => 1,
    }
}

/// The query API's subscriptions are fed from here (see [`Projector::subscribe`]).
impl ChangeSource for Projector {
    fn subscribe(&self) -> broadcast::Receiver<Arc<ProjectionChange>> {
        Projector::subscribe(self)
    }
}

impl Projector {
    /// A projector of `log` into the read tables of `database` (migrated).
    pub fn new(config: ProjectorConfig, log: Arc<dyn EventLog>, database: Database) -> Self {
        let config = ProjectorConfig {
            batch_size: config.batch_size.max(1),
            change_capacity: config.change_capacity.max(1),
            ..config
        };
        let (changes, _) = broadcast::channel(config.change_capacity);
        Projector {
            inner: Arc::new(Inner {
                config,
                log,
                store: ReadModelStore::new(database),
                changes,
                skipped: [AtomicU64::new(0), AtomicU64::new(0)],
                running: tokio::sync::Mutex::default(),
            }),
        }
    }

    /// The read tables (and their queries).
    pub fn store(&self) -> &ReadModelStore {
        &self.inner.store
    }

    /// Notifications of every commit from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<ProjectionChange>> {
        self.inner.changes.subscribe()
    }

    fn batch_size(&self) -> i64 {
        i64::try_from(self.inner.config.batch_size).unwrap_or(i64::MAX)
    }

    /// Keeps every configured projection up to date until `shutdown` completes: follows the
    /// log from each checkpoint, a batch per transaction. Database errors are logged and
    /// retried after `error_backoff`; a fenced batch resumes from the moved checkpoint. Returns
    /// when shut down (a batch in flight is committed or rolled back, never half-written).
    pub async fn run(
        &self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ProjectorError> {
        let shutdown = shutdown.boxed().shared();
        let loops = self
            .inner
            .config
            .projections
            .iter()
            .map(|&name| self.follow(name, shutdown.clone()));
        futures::future::join_all(loops).await;
        Ok(())
    }

    async fn follow(&self, name: ProjectionName, shutdown: impl Future<Output = ()> + Clone) {
        let backoff = self.inner.config.error_backoff;
        let pause = |shutdown: _| async move {
            tokio::select! {
                () = shutdown => true,
                () = tokio::time::sleep(backoff) => false,
            }
        };
        loop {
            let mut from = match self.inner.store.checkpoint(name, Target::Live).await {
                Ok(from) => from,
                Err(error) => {
                    tracing::warn!(projection = %name, %error, "cannot load the checkpoint");
                    if pause(shutdown.clone()).await {
                        return;
                    }
                    continue;
                }
            };
            // The next batch is read while the current one is applied: a reader task fills a
            // channel of one chunk (so at most two batches wait in memory).
            let mut stream = self
                .inner
                .log
                .subscribe(from, self.batch_size())
                .ready_chunks(self.inner.config.batch_size);
            let (ahead, mut chunks) = tokio::sync::mpsc::channel(1);
            let linger = self.inner.config.linger;
            let _reader = AbortOnDrop(tokio::spawn(async move {
                let mut read_at: Option<Instant> = None;
                loop {
                    if let Some(at) = read_at {
                        tokio::time::sleep_until((at + linger).into()).await;
                    }
                    let Some(chunk) = stream.next().await else {
                        break;
                    };
                    read_at = (!linger.is_zero()).then(Instant::now);
                    if ahead.send(chunk).await.is_err() {
                        break;
                    }
                }
            }));
            loop {
                let chunk = tokio::select! {
                    () = shutdown.clone() => return,
                    chunk = chunks.recv() => chunk,
                };
                let Some(chunk) = chunk else { break };
                let mut events = Vec::with_capacity(chunk.len());
                let mut read_error = None;
                for item in chunk {
                    match item {
                        Ok(event) => events.push(event),
                        Err(error) => {
                            read_error = Some(error);
                            break;
                        }
                    }
                }
                if !events.is_empty() {
                    match self
                        .apply_isolating(name, Target::Live, from, &events)
                        .await
                    {
                        Ok(change) => {
                            from = change.position;
                            let _ = self.inner.changes.send(Arc::new(change));
                        }
                        Err(ProjectorError::Store(ReadModelError::Fenced { .. })) => {
                            // A rebuild swapped its tables in (or another process projects
                            // too): what subscribers saw may be gone.
                            tracing::info!(
                                projection = %name,
                                "checkpoint moved by another writer: resuming from it"
                            );
                            let _ = self.inner.changes.send(Arc::new(ProjectionChange {
                                projection: name,
                                position: from,
                                jobs: Vec::new(),
                                tasks: Vec::new(),
                                analytics: name == ProjectionName::Analytics,
                                rebuilt: true,
                            }));
                            break;
                        }
                        Err(error) => {
                            tracing::error!(projection = %name, %error, "cannot apply a batch");
                            if pause(shutdown.clone()).await {
                                return;
                            }
                            break;
                        }
                    }
                }
                if let Some(error) = read_error {
                    // The subscription retries by itself; what followed the error is re-read.
                    tracing::warn!(projection = %name, %error, "cannot read the log");
                    break;
                }
            }
        }
    }

    /// Applies at most one batch (of the configured size) of `name` from its checkpoint; the
    /// number of events applied, 0 when it is caught up.
    pub async fn step(&self, name: ProjectionName) -> Result<usize, ProjectorError> {
        let from = self.inner.store.checkpoint(name, Target::Live).await?;
        let events = self.inner.log.read_all(from, self.batch_size()).await?;
        if events.is_empty() {
            return Ok(0);
        }
        let change = self
            .apply_isolating(name, Target::Live, from, &events)
            .await?;
        let _ = self.inner.changes.send(Arc::new(change));
        Ok(events.len())
    }

    /// Applies batches of every configured projection until each is caught up with what the
    /// log shows now; the number of events applied in all. The projections catch up
    /// concurrently, and each reads its next batch while the current one is being applied. A
    /// batch fenced by another writer is retried from the moved checkpoint.
    pub async fn catch_up(&self) -> Result<u64, ProjectorError> {
        let projections = self.inner.config.projections.iter();
        let counts =
            futures::future::try_join_all(projections.map(|&name| self.catch_up_one(name))).await?;
        Ok(counts.into_iter().sum())
    }

    async fn catch_up_one(&self, name: ProjectionName) -> Result<u64, ProjectorError> {
        let mut total = 0;
        let mut from = self.inner.store.checkpoint(name, Target::Live).await?;
        let mut next = self.read_ahead(name, from);
        loop {
            let batch = next
                .await
                .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
            let Some(to) = batch.to else { break };
            next = self.read_ahead(name, to);
            let mut applied = self
                .apply_events(name, Target::Live, from, to, &batch.events)
                .await;
            if let Err(ProjectorError::Store(error)) = &applied
                && error.is_refused_data()
            {
                // Rare: read the batch again, raw, to find the event the database refuses.
                let records = self.inner.log.read_all(from, batch.read as i64).await?;
                if records.last().map(|r| r.log_position) == Some(to) {
                    applied = self
                        .apply_isolating(name, Target::Live, from, &records)
                        .await;
                }
            }
            match applied {
                Ok(change) => {
                    total += batch.read as u64;
                    from = change.position;
                    let _ = self.inner.changes.send(Arc::new(change));
                }
                // Someone else moved the checkpoint meanwhile: go on from where it is.
                Err(ProjectorError::Store(ReadModelError::Fenced { .. })) => {
                    next.abort();
                    from = self.inner.store.checkpoint(name, Target::Live).await?;
                    next = self.read_ahead(name, from);
                }
                Err(error) => return Err(error),
            }
        }
        Ok(total)
    }

    /// Reads and decodes the batch after `after` in a task of its own, so that it runs on
    /// another core while the current batch is folded and written.
    fn read_ahead(
        &self,
        name: ProjectionName,
        after: LogPosition,
    ) -> tokio::task::JoinHandle<Result<DecodedBatch, ProjectorError>> {
        let this = self.clone();
        tokio::spawn(async move {
            let records = this.inner.log.read_all(after, this.batch_size()).await?;
            Ok(DecodedBatch {
                read: records.len(),
                to: records.last().map(|e| e.log_position),
                events: this.decode(name, &records),
            })
        })
    }

    /// Applies `events`, which must be the events right after `name`'s checkpoint, in log
    /// order, as one batch (tests use it to choose the batches). `Fenced` when the checkpoint
    /// is not where `events` start.
    pub async fn apply_batch(
        &self,
        name: ProjectionName,
        from: LogPosition,
        events: &[RecordedEvent],
    ) -> Result<ProjectionChange, ProjectorError> {
        let change = self.apply(name, Target::Live, from, events).await?;
        let _ = self.inner.changes.send(Arc::new(change.clone()));
        Ok(change)
    }

    fn decode(&self, name: ProjectionName, batch: &[RecordedEvent]) -> Vec<Event> {
        batch
            .iter()
            .filter_map(|recorded| {
                match Event::decode(
                    &recorded.event_type,
                    recorded.schema_version,
                    recorded.data.get(),
                ) {
                    Ok(event) => Some(event),
                    Err(error) => {
                        self.inner.skipped[slot(name)].fetch_add(1, Ordering::Relaxed);
                        tracing::error!(
                            projection = %name,
                            commit = recorded.log_position.commit,
                            position = recorded.log_position.position,
                            stream = %recorded.stream_id,
                            %error,
                            "skipping an event that cannot be decoded"
                        );
                        None
                    }
                }
            })
            .collect()
    }

    /// One batch into `target`, checkpoint moved `from` -> the batch's last event.
    async fn apply(
        &self,
        name: ProjectionName,
        target: Target,
        from: LogPosition,
        batch: &[RecordedEvent],
    ) -> Result<ProjectionChange, ProjectorError> {
        let to = batch.last().map_or(from, |e| e.log_position);
        let events = self.decode(name, batch);
        self.apply_events(name, target, from, to, &events).await
    }

    /// [`Projector::apply`], except that events whose effect the database refuses
    /// ([`ReadModelError::is_refused_data`]) are parked instead of failing the batch: the
    /// batch is halved until the refused event is alone, every other event is applied, and
    /// that one is recorded and passed over (ADR 0012). A batch of n events with one refused
    /// event costs about 2·log2(n) extra transactions, once.
    fn apply_isolating<'a>(
        &'a self,
        name: ProjectionName,
        target: Target,
        from: LogPosition,
        batch: &'a [RecordedEvent],
    ) -> BoxFuture<'a, Result<ProjectionChange, ProjectorError>> {
        async move {
            let error = match self.apply(name, target, from, batch).await {
                Err(ProjectorError::Store(error)) if error.is_refused_data() => error,
                other => return other,
            };
            match batch {
                [] => Err(ProjectorError::Store(error)),
                [record] => self.park(name, target, from, record, &error).await,
                _ => {
                    let (left, right) = batch.split_at(batch.len() / 2);
                    let mut first = self.apply_isolating(name, target, from, left).await?;
                    let second = self
                        .apply_isolating(name, target, first.position, right)
                        .await?;
                    first.position = second.position;
                    first.jobs.extend(second.jobs);
                    first.tasks.extend(second.tasks);
                    first.analytics |= second.analytics;
                    Ok(first)
                }
            }
        }
        .boxed()
    }

    /// Records `record` as parked by `name`, then moves the checkpoint past it (in that order:
    /// a crash in between parks it again, which keeps the first record).
    async fn park(
        &self,
        name: ProjectionName,
        target: Target,
        from: LogPosition,
        record: &RecordedEvent,
        error: &ReadModelError,
    ) -> Result<ProjectionChange, ProjectorError> {
        tracing::error!(
            projection = %name,
            commit = record.log_position.commit,
            position = record.log_position.position,
            stream = %record.stream_id,
            event_type = %record.event_type,
            %error,
            "the database refuses this event's effect: parking it, the projection goes on \
             without it (shoal projector status lists the count)"
        );
        self.inner
            .store
            .park_event(&ParkedEvent {
                projection: name,
                position: record.log_position,
                stream_id: record.stream_id.clone(),
                event_type: record.event_type.clone(),
                error: error.to_string(),
            })
            .await?;
        self.apply_events(name, target, from, record.log_position, &[])
            .await
    }

    /// [`Projector::apply`] of events already decoded; `to` is the batch's last position
    /// (undecodable events are skipped but still move the checkpoint).
    async fn apply_events(
        &self,
        name: ProjectionName,
        target: Target,
        from: LogPosition,
        to: LogPosition,
        events: &[Event],
    ) -> Result<ProjectionChange, ProjectorError> {
        let store = &self.inner.store;
        let mut change = ProjectionChange {
            projection: name,
            position: to,
            jobs: Vec::new(),
            tasks: Vec::new(),
            analytics: false,
            rebuilt: false,
        };
        match name {
            ProjectionName::Jobs => {
                let mut keys = jobs::keys(events);
                // The rebuild's batches are large enough to hold most tasks' events whole.
                let mut running = match target {
                    Target::Live => Some(self.inner.running.lock().await),
                    Target::Rebuild => None,
                };
                if let Some(running) = running.as_mut() {
                    running.lend(from, &mut keys);
                }
                let mut kept = Default::default();
                let written = store
                    .apply_jobs(
                        target,
                        from,
                        to,
                        keys,
                        jobs::implied_attempts,
                        |jobs, tasks, attempts| {
                            let (changes, running_attempts) =
                                jobs::fold_keeping_running(jobs, tasks, attempts, events);
                            kept = running_attempts;
                            changes
                        },
                    )
                    .await
                    .inspect_err(|_| {
                        // Committed or not, the kept rows may be stale now.
                        if let Some(running) = running.as_mut() {
                            running.clear();
                        }
                    })?;
                change.jobs = written.jobs.iter().map(|j| j.id).collect();
                change.tasks = written.tasks.iter().map(|t| (t.job_id, t.id)).collect();
                if let Some(running) = running.as_mut() {
                    running.keep(to, written.tasks, kept);
                }
            }
            ProjectionName::Analytics => {
                let keys = analytics::keys(events);
                let written = store
                    .apply_analytics(target, from, to, &keys, |states| {
                        analytics::fold(states, events)
                    })
                    .await?;
                change.analytics = written.counters_changed();
            }
        }
        Ok(change)
    }

    /// Where each projection is, and how far behind the log.
    pub async fn status(&self) -> Result<Vec<ProjectionStatus>, ProjectorError> {
        let head = self.inner.log.head().await?;
        let mut statuses = Vec::new();
        for name in ProjectionName::ALL {
            let store = &self.inner.store;
            let checkpoint = store.checkpoint(name, Target::Live).await?;
            let (parked_events, last_parked) = store.parked_events(name).await?;
            statuses.push(ProjectionStatus {
                name,
                checkpoint,
                head,
                lag_events: store.count_events_after(checkpoint).await?,
                rebuild: store.rebuild_checkpoint(name).await?,
                skipped_events: self.inner.skipped[slot(name)].load(Ordering::Relaxed),
                parked_events,
                last_parked,
            });
        }
        Ok(statuses)
    }

    /// Replays the whole log into fresh shadow tables of `name`, a batch per transaction
    /// (short transactions: see ADR 0002), while the live tables keep being served and
    /// updated; then swaps them in atomically and moves the live checkpoint to where the
    /// rebuild got. A running projector (in this process or another) finds its checkpoint
    /// moved at its next batch and continues from there. `progress` is called after each
    /// batch.
    ///
    /// Run one rebuild of a projection at a time: a second one throws the first's shadow
    /// tables away, and the first then fails.
    pub async fn rebuild(
        &self,
        name: ProjectionName,
        mut progress: impl FnMut(&RebuildProgress) + Send,
    ) -> Result<RebuildReport, ProjectorError> {
        let started = Instant::now();
        let store = &self.inner.store;
        let total_estimate = store.count_events_after(LogPosition::START).await?;
        store.prepare_rebuild(name).await?;
        let mut report = RebuildProgress {
            projection: name,
            position: LogPosition::START,
            events: 0,
            total_estimate,
        };
        tracing::info!(projection = %name, total_estimate, "rebuild started");
        self.replay_into_shadow(&mut report, &mut progress).await?;
        store.index_rebuild(name).await?;
        self.replay_into_shadow(&mut report, &mut progress).await?;
        {
            // The swapped-in tables are not where the kept rows came from.
            let mut running = self.inner.running.lock().await;
            running.clear();
            store.swap_rebuild(name, report.position).await?;
        }
        let _ = self.inner.changes.send(Arc::new(ProjectionChange {
            projection: name,
            position: report.position,
            jobs: Vec::new(),
            tasks: Vec::new(),
            analytics: name == ProjectionName::Analytics,
            rebuilt: true,
        }));
        let elapsed = started.elapsed();
        tracing::info!(projection = %name, events = report.events, ?elapsed, "rebuild swapped in");
        Ok(RebuildReport {
            projection: name,
            position: report.position,
            events: report.events,
            elapsed,
        })
    }

    /// Applies batches to the shadow tables until caught up with the log.
    async fn replay_into_shadow(
        &self,
        report: &mut RebuildProgress,
        progress: &mut (impl FnMut(&RebuildProgress) + Send),
    ) -> Result<(), ProjectorError> {
        loop {
            let events = self
                .inner
                .log
                .read_all(report.position, self.batch_size())
                .await?;
            let Some(last) = events.last() else {
                return Ok(());
            };
            let to = last.log_position;
            self.apply_isolating(report.projection, Target::Rebuild, report.position, &events)
                .await?;
            report.position = to;
            report.events += events.len() as u64;
            progress(report);
        }
    }
}
