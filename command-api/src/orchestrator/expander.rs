//! CREATE_TASKS: turns submitted jobs into tasks, one chunk per job per round.
//!
//! A chunk is `decide_job(CreateTasks)` on the job stream's state: `TasksCreated` at the job
//! stream's expected version and one `TaskEnqueued` per task (each a new stream), in one
//! append. A concurrent expansion of the same job, or a cancellation, conflicts on the job
//! stream; the expander then re-reads the stream and decides again (a cancelled job, or one
//! whose tasks all exist, is rejected and dropped). So after a crash at any point the next
//! leader continues from the stream's `created_upto`: no task is missing or created twice.

use shoal_infra::telemetry::trace;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use chrono::Utc;
use futures::StreamExt;
use shoal_domain::{Event, JobCommand, JobId, JobState, decide_job, evolve_job};
use shoal_infra::eventlog::{AppendBatch, ExpectedVersion, LogError, StreamAppend};
use tokio::sync::Notify;
use tracing::Instrument;

use super::{OrchestratorError, OrchestratorMetrics, Shared, load_job, new_event};

/// Conflicts on one chunk before the job is put back in line for the next round.
const MAX_CONFLICTS: usize = 5;

/// Jobs waiting for expansion, each at most once, in arrival order.
#[derive(Debug, Default)]
pub(super) struct ExpandQueue {
    jobs: Mutex<(VecDeque<JobId>, HashSet<JobId>)>,
    added: Notify,
}

impl ExpandQueue {
    /// Puts a job in line (no-op if it already is).
    pub(super) fn push(&self, job_id: JobId) {
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        if jobs.1.insert(job_id) {
            jobs.0.push_back(job_id);
            drop(jobs);
            self.added.notify_one();
        }
    }

    fn take_all(&self) -> Vec<JobId> {
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        jobs.1.clear();
        jobs.0.drain(..).collect()
    }

    async fn wait(&self) {
        self.added.notified().await;
    }
}

/// The expander's state: the job streams it has folded, so a job's next chunk needs no read.
#[derive(Debug)]
pub(super) struct Expander {
    shared: Shared,
    cache: HashMap<JobId, (JobState, i64)>,
}

/// What one chunk attempt did.
pub(super) enum Chunk {
    /// Appended; tasks remain. The job stream's state and version after the append.
    More(JobState, i64),
    /// Appended the last chunk.
    Last,
    /// Nothing to do (all created, cancelled, unknown job).
    Nothing,
    /// Too many conflicts: try again next round.
    Later,
}

impl Expander {
    pub(super) fn new(shared: Shared) -> Self {
        Expander {
            shared,
            cache: HashMap::new(),
        }
    }

    /// One chunk of every job in line, `expand_concurrency` jobs at a time. Jobs with tasks
    /// left go back in line. Returns the number of chunks appended.
    pub(super) async fn round(&mut self) -> Result<usize, OrchestratorError> {
        let jobs = self.shared.pending.take_all();
        if jobs.is_empty() {
            return Ok(0);
        }
        let work: Vec<_> = jobs
            .into_iter()
            .map(|job_id| {
                let cached = self.cache.remove(&job_id);
                let shared = self.shared.clone();
                async move { (job_id, expand_chunk(&shared, job_id, cached).await) }
            })
            .collect();
        let results: Vec<_> = futures::stream::iter(work)
            .buffer_unordered(self.shared.config.expand_concurrency)
            .collect()
            .await;
        let mut chunks = 0;
        let mut first_error = None;
        for (job_id, result) in results {
            match result {
                Ok(Chunk::More(state, version)) => {
                    chunks += 1;
                    self.cache.insert(job_id, (state, version));
                    self.shared.pending.push(job_id);
                }
                Ok(Chunk::Last) => chunks += 1,
                Ok(Chunk::Nothing) => {}
                Ok(Chunk::Later) => self.shared.pending.push(job_id),
                Err(error) => {
                    self.shared.pending.push(job_id);
                    first_error.get_or_insert(error);
                }
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(chunks),
        }
    }
}

/// The expander while leading: rounds while there is work, then waits for new jobs. Errors are
/// logged and retried after a backoff; it never returns.
pub(super) async fn run(shared: Shared) {
    let backoff = shared.config.error_backoff;
    let mut expander = Expander::new(shared);
    loop {
        match expander.round().await {
            Ok(0) => expander.shared.pending.wait().await,
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "task expansion failed; retrying");
                tokio::time::sleep(backoff).await;
            }
        }
    }
}

/// Appends the next chunk of one job.
pub(super) async fn expand_chunk(
    shared: &Shared,
    job_id: JobId,
    cached: Option<(JobState, i64)>,
) -> Result<Chunk, OrchestratorError> {
    let span =
        tracing::info_span!("orchestrator.expand", %job_id, from_index = tracing::field::Empty);
    if trace::enabled() {
        // The job's trace: the expansion (the enqueue of its tasks) is a child of the
        // submission, and each task's worker span a child of the expansion.
        match shared.log.read_stream(&job_id.stream_id(), 0).await {
            Ok(records) => trace::set_parent(
                &span,
                records
                    .first()
                    .and_then(|r| trace::from_metadata(r.metadata.get(), trace::TRACEPARENT))
                    .as_deref(),
            ),
            Err(error) => tracing::debug!(%error, "no submission context for the expansion"),
        }
    }
    async {
        let (mut state, mut version) = match cached {
            Some(cached) => cached,
            None => load_job(shared.log.as_ref(), job_id).await?,
        };
        for _ in 0..MAX_CONFLICTS {
            let command = JobCommand::CreateTasks {
                max_chunk: shared.config.chunk_size,
                now: Utc::now(),
            };
            let events = match decide_job(&state, command) {
                Ok(events) => events,
                Err(rejection) => {
                    tracing::debug!(%rejection, "nothing to expand");
                    return Ok(Chunk::Nothing);
                }
            };
            tracing::Span::current().record("from_index", state.created_upto);
            let mut batch = chunk_batch(job_id, version, &events);
            trace::stamp(
                &mut batch,
                trace::TRACEPARENT,
                trace::current_traceparent().as_deref(),
            );
            match shared.log.append(batch).await {
                Ok(_) => {
                    let tasks = events.len().saturating_sub(1);
                    OrchestratorMetrics::add(&shared.metrics.inner.chunks, 1);
                    OrchestratorMetrics::add(&shared.metrics.inner.tasks_created, tasks);
                    for event in events.iter().filter(|e| e.task().is_none()) {
                        state = evolve_job(state, event);
                        version += 1;
                    }
                    return Ok(if state.all_tasks_created() {
                        Chunk::Last
                    } else {
                        Chunk::More(state, version)
                    });
                }
                Err(LogError::Conflict { .. }) => {
                    tracing::debug!("job stream moved; re-reading it");
                    (state, version) = load_job(shared.log.as_ref(), job_id).await?;
                }
                Err(error) => return Err(error.into()),
            }
        }
        Ok(Chunk::Later)
    }
    .instrument(span)
    .await
}

/// The append of one chunk: its job events at the job stream's version, each task's events as
/// a new stream.
fn chunk_batch(job_id: JobId, job_version: i64, events: &[Event]) -> AppendBatch {
    let job_stream = job_id.stream_id();
    let mut job_events = Vec::new();
    let mut streams = Vec::with_capacity(events.len());
    for event in events {
        if event.task().is_none() {
            job_events.push(new_event(event));
        } else {
            streams.push(StreamAppend {
                stream_id: event.stream_id(),
                expected: ExpectedVersion::NoStream,
                events: vec![new_event(event)],
            });
        }
    }
    streams.insert(
        0,
        StreamAppend {
            stream_id: job_stream,
            expected: ExpectedVersion::Exact(job_version),
            events: job_events,
        },
    );
    AppendBatch {
        streams,
        ..AppendBatch::default()
    }
}
