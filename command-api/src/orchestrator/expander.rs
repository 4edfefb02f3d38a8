//! CREATE_TASKS: turns submitted jobs into tasks, one chunk per job per round.
//!
//! A chunk is `decide_job(CreateTasks)` on the job stream's state: `TasksCreated` at the job
//! stream's expected version and one `TaskEnqueued` per task (each a new stream), in one
//! append. A concurrent expansion of the same job, or a cancellation, conflicts on the job
//! stream; the expander then re-reads the stream and decides again (a cancelled job, or one
//! whose tasks all exist, is rejected and dropped). So after a crash at any point the next
//! leader continues from the stream's `created_upto`: no task is missing or created twice.
//!
//! With `send_with_chunks`, the chunk's queue messages are inserted in the same transaction
//! (`EventLog::append_and_send`) and its `TaskEnqueued` events marked as queued, so the relay
//! does not send them again: a chunk and its messages exist together, or not at all.

use shoal_infra::telemetry::trace;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use chrono::Utc;
use futures::StreamExt;
use shoal_domain::{Event, JobCommand, JobId, JobState, decide_job, evolve_job};
use shoal_infra::eventlog::{AppendBatch, ExpectedVersion, LogError, StreamAppend};
use shoal_infra::queue::OutgoingMessage;
use tokio::sync::Notify;
use tracing::Instrument;

use super::consumer::{SENT_WITH_CHUNK, first_message};
use super::{
    OrchestratorConfig, OrchestratorError, OrchestratorMetrics, Shared, load_job, new_event,
};

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

/// The expander's state: the job streams it has folded, so a job's next chunk needs no read,
/// and, for the jobs of a small round, their next chunk, prepared while the previous one was
/// being written.
#[derive(Debug)]
pub(super) struct Expander {
    shared: Shared,
    cache: HashMap<JobId, (JobState, i64, Option<Prepared>)>,
}

/// A chunk decided and encoded, ready to append: the domain's events, the append, and its
/// queue messages (with `send_with_chunks`).
#[derive(Debug)]
pub(super) struct Prepared {
    events: Vec<Event>,
    batch: AppendBatch,
    messages: Vec<OutgoingMessage>,
}

/// What one chunk attempt did.
pub(super) enum Chunk {
    /// Appended; tasks remain. The job stream's state and version after the append.
    More(Box<JobState>, i64),
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
        // Preparing each job's next chunk while its current one is written keeps both cores
        // busy (encoding here, inserting in the database), but holds a prepared chunk per job
        // until its next turn: only when every job of the round is expanded at once.
        let look_ahead = jobs.len() <= self.shared.config.expand_concurrency;
        let work: Vec<_> = jobs
            .into_iter()
            .map(|job_id| {
                let (cached, prepared) = match self.cache.remove(&job_id) {
                    Some((state, version, prepared)) => (Some((state, version)), prepared),
                    None => (None, None),
                };
                let shared = self.shared.clone();
                async move {
                    let result = expand(&shared, job_id, cached, prepared, look_ahead).await;
                    (job_id, result)
                }
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
                Ok((Chunk::More(state, version), prepared)) => {
                    chunks += 1;
                    self.cache.insert(job_id, (*state, version, prepared));
                    self.shared.pending.push(job_id);
                }
                Ok((Chunk::Last, _)) => chunks += 1,
                Ok((Chunk::Nothing, _)) => {}
                Ok((Chunk::Later, _)) => self.shared.pending.push(job_id),
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
    Ok(expand(shared, job_id, cached, None, false).await?.0)
}

/// Appends the next chunk of one job (`prepared`, when it was prepared ahead). With
/// `look_ahead`, prepares the chunk after it while this one is written, and returns it with
/// [`Chunk::More`].
async fn expand(
    shared: &Shared,
    job_id: JobId,
    cached: Option<(JobState, i64)>,
    mut prepared: Option<Prepared>,
    look_ahead: bool,
) -> Result<(Chunk, Option<Prepared>), OrchestratorError> {
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
    // A chunk prepared ahead carries no trace context: each chunk's own span stamps its events.
    let look_ahead = look_ahead && !trace::enabled();
    async {
        let (mut state, mut version) = match cached {
            Some(cached) => cached,
            None => load_job(shared.log.as_ref(), job_id).await?,
        };
        for _ in 0..MAX_CONFLICTS {
            // With the built-in driver and the SQL queue of the log's database, the chunk's
            // tasks are queued in the chunk's own transaction (and marked so the relay skips
            // them), unless a limit gates the job: admission sends those.
            let send_with_chunk = shared.config.send_with_chunks
                && shared.sfn.is_none()
                && !shared
                    .limits
                    .read()
                    .is_ok_and(|limits| limits.limits_job(&state));
            tracing::Span::current().record("from_index", state.created_upto);
            let traceparent = trace::current_traceparent();
            let Some(chunk) = prepared.take().or_else(|| {
                prepare(
                    shared,
                    job_id,
                    &state,
                    version,
                    send_with_chunk,
                    traceparent.as_deref(),
                )
            }) else {
                return Ok((Chunk::Nothing, None));
            };
            // The job stream after this chunk (its own events, not the tasks').
            let mut after = state;
            let mut after_version = version;
            for event in chunk.events.iter().filter(|e| e.task().is_none()) {
                after = evolve_job(after, event);
                after_version += 1;
            }
            let tasks = chunk.events.len().saturating_sub(1);
            // The next chunk is prepared on a blocking thread while this one is written.
            let after = if look_ahead && !after.all_tasks_created() {
                let shared = shared.clone();
                Ok(tokio::task::spawn_blocking(move || {
                    let next = prepare(
                        &shared,
                        job_id,
                        &after,
                        after_version,
                        send_with_chunk,
                        None,
                    );
                    (after, next)
                }))
            } else {
                Err(after)
            };
            let appended = write(shared, chunk, send_with_chunk).await;
            let after = match after {
                Ok(ahead) => ahead.await,
                Err(after) => Ok((after, None)),
            };
            match appended {
                Ok(()) => {
                    OrchestratorMetrics::add(&shared.metrics.inner.chunks, 1);
                    OrchestratorMetrics::add(&shared.metrics.inner.tasks_created, tasks);
                    let (after, next) = match after {
                        Ok(after) => after,
                        Err(error) if error.is_panic() => {
                            std::panic::resume_unwind(error.into_panic())
                        }
                        // The runtime is shutting down: the next round reloads the job.
                        Err(error) => {
                            return Err(LogError::Invalid(format!(
                                "preparing the next chunk: {error}"
                            ))
                            .into());
                        }
                    };
                    return Ok(if after.all_tasks_created() {
                        (Chunk::Last, None)
                    } else {
                        (Chunk::More(Box::new(after), after_version), next)
                    });
                }
                Err(LogError::Conflict { .. }) => {
                    tracing::debug!("job stream moved; re-reading it");
                    (state, version) = load_job(shared.log.as_ref(), job_id).await?;
                }
                Err(error) => return Err(error.into()),
            }
        }
        Ok((Chunk::Later, None))
    }
    .instrument(span)
    .await
}

/// Decides and encodes the next chunk of a job whose stream is at `version` with `state`;
/// `None` when there is nothing to expand (all tasks created, cancelled, unknown job).
fn prepare(
    shared: &Shared,
    job_id: JobId,
    state: &JobState,
    version: i64,
    send_with_chunk: bool,
    traceparent: Option<&str>,
) -> Option<Prepared> {
    let command = JobCommand::CreateTasks {
        max_chunk: chunk_size(&shared.config, state.created_upto),
        now: Utc::now(),
    };
    let events = match decide_job(state, command) {
        Ok(events) => events,
        Err(rejection) => {
            tracing::debug!(%rejection, "nothing to expand");
            return None;
        }
    };
    let mut batch = chunk_batch(job_id, version, &events, send_with_chunk);
    trace::stamp(&mut batch, trace::TRACEPARENT, traceparent);
    let messages = if send_with_chunk {
        chunk_messages(&events, traceparent)
    } else {
        Vec::new()
    };
    Some(Prepared {
        events,
        batch,
        messages,
    })
}

/// Appends a chunk, with its messages when `send_with_chunk` (then wakes the queue's
/// receivers).
async fn write(shared: &Shared, chunk: Prepared, send_with_chunk: bool) -> Result<(), LogError> {
    if !send_with_chunk {
        return shared.log.append(chunk.batch).await.map(drop);
    }
    let sent = chunk.messages.len();
    shared
        .log
        .append_and_send(chunk.batch, chunk.messages)
        .await?;
    shared.queue.announce_sent();
    OrchestratorMetrics::add(&shared.metrics.inner.sent_with_chunks, sent);
    Ok(())
}

/// How many tasks the next chunk of a job with `created` tasks may create: as many as exist
/// already, from `first_chunk_size` up to `chunk_size`. The first tasks of a job reach the
/// queue after a small transaction; a big job's chunks then double until they amortize their
/// commits (and the transaction each holds open, which readers of the log wait behind).
pub(super) fn chunk_size(config: &OrchestratorConfig, created: u32) -> u32 {
    config
        .first_chunk_size
        .max(created)
        .min(config.chunk_size)
        .max(1)
}

/// The append of one chunk: its job events at the job stream's version, each task's events as
/// a new stream. `sent_with_chunk`: each `TaskEnqueued` is marked as queued in this very
/// transaction ([`SENT_WITH_CHUNK`]), which the relay reads.
fn chunk_batch(
    job_id: JobId,
    job_version: i64,
    events: &[Event],
    sent_with_chunk: bool,
) -> AppendBatch {
    let job_stream = job_id.stream_id();
    let mut job_events = Vec::new();
    let mut streams = Vec::with_capacity(events.len());
    for event in events {
        if event.task().is_none() {
            job_events.push(new_event(event));
        } else {
            let mut task_event = new_event(event);
            if sent_with_chunk
                && matches!(event, Event::TaskEnqueued(_))
                && let Some(metadata) = task_event.metadata.as_object_mut()
            {
                metadata.insert(SENT_WITH_CHUNK.into(), serde_json::Value::Bool(true));
            }
            streams.push(StreamAppend {
                stream_id: event.stream_id(),
                expected: ExpectedVersion::NoStream,
                events: vec![task_event],
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

/// The queue messages of a chunk's `TaskEnqueued` events, as the relay would build them from
/// the stored events: a new task stream's first version, and the trace context the chunk's
/// events carry (`trace::stamp` gives every event of the chunk the same).
fn chunk_messages(events: &[Event], traceparent: Option<&str>) -> Vec<OutgoingMessage> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::TaskEnqueued(task) => Some(first_message(task, traceparent.map(str::to_owned))),
            _ => None,
        })
        .collect()
}
