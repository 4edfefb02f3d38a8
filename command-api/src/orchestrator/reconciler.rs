//! The reconciler: nothing stays ENQUEUED, RETRYING or RUNNING for good.
//!
//! The queue is a delivery mechanism and can lose a task's message: deleted by hand, expired,
//! dead-lettered after too many receives before any worker started it, acknowledged by a
//! worker that skipped it as a duplicate while an external worker (the original REST API's
//! `POST /tasks/{id}/running`) held the attempt and then went away. And a worker can die in a
//! way that leaves its attempt RUNNING with no message left to bring it back. The log says
//! which tasks are still waiting or running, so the leader sweeps them, a bounded slice per
//! pass, and acts through the domain, always with an event:
//!
//! - a task RUNNING past its attempt's deadline (its `TaskStarted`, plus the task's timeout,
//!   plus `reconcile_grace`) is **timed out**: `TaskFailed` (retryable), so the domain
//!   schedules the next attempt per the task's policy (`TaskRetryScheduled`, which the
//!   consumer relays) or fails it for good when its budget is spent;
//! - a task ENQUEUED or RETRYING (due) whose last event is older than `reconcile_min_age`
//!   and whose attempt has no live message is **requeued**: `TaskRequeued`, which the
//!   consumer relays as a fresh message. On the SQL queue "no live message" is exact (the
//!   queue is looked up). SQS cannot look messages up: there a task is requeued only when the
//!   queue has no visible or delayed message at all, so a deep queue is never flooded with
//!   copies, and a lost message is replaced once the queue has drained.
//!
//! A task held by admission (`admission`: a limit or the fair-share window keeps it out of
//! the queue for now) has no message on purpose and is left alone.
//!
//! Every append expects the stream version just read: a worker that records the attempt's end
//! meanwhile wins, and the reconciler's append conflicts and is dropped. A requeued message of
//! an attempt that is in fact still queued is a duplicate, which workers already make harmless.
//!
//! The sweep walks the active jobs (`orchestrator_jobs`) with tasks still waiting or running,
//! in job order, from where the previous pass stopped: at most `reconcile_batch` task streams
//! are read per pass (one `read_streams`), with one queue lookup per job and one group commit.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use shoal_domain::limits::DEFAULT_TIMEOUT_SECONDS;
use shoal_domain::{Event, JobId, TaskCommand, TaskId, TaskState, TaskStatus, decide_task};
use shoal_domain::{evolve_task, retry_backoff};
use shoal_infra::eventlog::{AppendBatch, ExpectedVersion, LogError, RecordedEvent, StreamAppend};
use shoal_infra::queue::QueueDepth;
use uuid::Uuid;

use super::{OrchestratorError, OrchestratorMetrics, Shared, new_event};

/// Backoff before the attempt that follows a timed-out one (the domain adds it to now).
const TIMEOUT_RETRY_BASE_MS: u64 = 1_000;
const TIMEOUT_RETRY_MAX_MS: u64 = 60_000;

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReconcileOutcome {
    /// Task streams read and checked.
    pub checked: usize,
    /// Tasks given a new message (`TaskRequeued`).
    pub requeued: usize,
    /// Running attempts timed out (`TaskFailed`).
    pub timed_out: usize,
    /// The sweep reached the end of the active jobs (the next pass starts over).
    pub wrapped: bool,
}

/// The sweep's place: the next task to look at.
#[derive(Debug, Default)]
pub(super) struct Reconciler {
    next: Option<(Uuid, u32)>,
}

/// The reconciler while leading: a pass every `reconcile_interval`; errors are logged and
/// the next pass tries again. Never returns. A sweep of `n` waiting or running tasks takes
/// `n / reconcile_batch` passes.
pub(super) async fn run(shared: Shared) {
    let mut reconciler = Reconciler::default();
    loop {
        tokio::time::sleep(shared.config.reconcile_interval).await;
        match reconciler.pass(&shared).await {
            Ok(outcome) if outcome.requeued + outcome.timed_out > 0 => {
                tracing::info!(?outcome, "reconciled tasks");
            }
            Ok(outcome) => tracing::debug!(?outcome, "reconciler pass"),
            Err(error) => tracing::warn!(%error, "reconciling tasks failed"),
        }
    }
}

/// A task stream folded, with what the reconciler needs beyond its state.
struct Folded {
    state: TaskState,
    version: i64,
    /// When the last event was recorded.
    last_at: DateTime<Utc>,
    /// When the current attempt started (its `TaskStarted`), while RUNNING.
    started_at: Option<DateTime<Utc>>,
}

fn fold(records: &[&RecordedEvent]) -> Option<Folded> {
    let mut state = TaskState::default();
    let mut started_at = None;
    let mut last = None;
    for record in records {
        match Event::decode(&record.event_type, record.schema_version, record.data.get()) {
            Ok(event) => {
                if let Event::TaskStarted(e) = &event {
                    started_at = Some(e.at);
                }
                state = evolve_task(state, &event);
            }
            Err(error) => {
                tracing::warn!(stream_id = %record.stream_id, %error, "undecodable task event skipped");
            }
        }
        last = Some((record.stream_version, record.recorded_at));
    }
    let (version, last_at) = last?;
    state.enqueued.as_ref()?;
    Some(Folded {
        started_at: (state.status == TaskStatus::Running)
            .then_some(started_at)
            .flatten(),
        state,
        version,
        last_at,
    })
}

impl Reconciler {
    /// One pass: the next slice of waiting or running tasks, checked and reconciled.
    pub(super) async fn pass(
        &mut self,
        shared: &Shared,
    ) -> Result<ReconcileOutcome, OrchestratorError> {
        let config = &shared.config;
        let mut jobs: Vec<(Uuid, u32)> = shared
            .store
            .load_active()
            .await?
            .into_iter()
            .filter(|job| {
                let p = &job.progress;
                p.queued + p.running + p.retrying > 0
            })
            .map(|job| (job.job_id, job.created_upto))
            .collect();
        jobs.sort_unstable();

        // The slice: from the cursor on, `reconcile_batch` tasks at most.
        let mut slice: Vec<(Uuid, u32)> = Vec::new();
        let mut wrapped = true;
        let start = self.next.unwrap_or_default();
        for &(job_id, created_upto) in jobs.iter().filter(|(id, _)| *id >= start.0) {
            let from = if job_id == start.0 { start.1 } else { 0 };
            let room = config.reconcile_batch - slice.len();
            let to = created_upto.min(from.saturating_add(u32::try_from(room).unwrap_or(u32::MAX)));
            slice.extend((from..to).map(|index| (job_id, index)));
            if slice.len() >= config.reconcile_batch {
                self.next = Some((job_id, to));
                wrapped =
                    to >= created_upto && jobs.last().is_some_and(|(last, _)| *last == job_id);
                break;
            }
        }
        if wrapped {
            self.next = None;
        }
        let mut outcome = ReconcileOutcome {
            wrapped,
            ..ReconcileOutcome::default()
        };
        if slice.is_empty() {
            return Ok(outcome);
        }

        let stream_ids: Vec<String> = slice
            .iter()
            .map(|(job_id, index)| TaskId::for_task(JobId::from_uuid(*job_id), *index).stream_id())
            .collect();
        let records = shared.log.read_streams(&stream_ids).await?;
        let mut by_stream: HashMap<&str, Vec<&RecordedEvent>> = HashMap::new();
        for record in &records {
            by_stream.entry(&record.stream_id).or_default().push(record);
        }
        let now = Utc::now();
        let min_age = chrono::Duration::from_std(config.reconcile_min_age).unwrap_or_default();
        let grace = chrono::Duration::from_std(config.reconcile_grace).unwrap_or_default();

        let mut appends = Vec::new();
        // Waiting tasks old enough to have lost their message, by job.
        let mut waiting: HashMap<Uuid, Vec<Folded>> = HashMap::new();
        for stream_id in &stream_ids {
            let Some(folded) = by_stream.get(stream_id.as_str()).and_then(|r| fold(r)) else {
                continue;
            };
            outcome.checked += 1;
            match folded.state.status {
                TaskStatus::Running => {
                    let Some(started_at) = folded.started_at else {
                        continue;
                    };
                    let timeout = folded
                        .state
                        .enqueued
                        .as_ref()
                        .map_or(DEFAULT_TIMEOUT_SECONDS, |t| t.timeout_seconds);
                    let timeout = match timeout {
                        0 => DEFAULT_TIMEOUT_SECONDS,
                        s => s,
                    };
                    let deadline =
                        started_at + chrono::Duration::seconds(i64::from(timeout)) + grace;
                    if now < deadline {
                        continue;
                    }
                    let attempt = folded.state.attempt;
                    let command = TaskCommand::FailTask {
                        attempt,
                        error: format!(
                            "timed out: no end of attempt {attempt} was recorded within its \
                             {timeout} s timeout (and {} s of grace) after it started; its \
                             worker stopped or lost the task",
                            grace.num_seconds()
                        ),
                        retryable: true,
                        backoff_ms: retry_backoff(
                            attempt,
                            TIMEOUT_RETRY_BASE_MS,
                            TIMEOUT_RETRY_MAX_MS,
                            rand::random::<f64>(),
                        ),
                        now,
                    };
                    if let Ok(events) = decide_task(&folded.state, command) {
                        appends.push((Action::TimedOut, stream_id.clone(), folded.version, events));
                    }
                }
                TaskStatus::Enqueued | TaskStatus::Retrying => {
                    // Held by admission: no message on purpose.
                    if folded
                        .state
                        .task_id()
                        .is_some_and(|id| shared.held.lock().is_ok_and(|held| held.contains(&id)))
                    {
                        continue;
                    }
                    let due = folded.state.not_before.unwrap_or(folded.last_at);
                    if now - folded.last_at < min_age || now - due < min_age {
                        continue;
                    }
                    if let Some(job_id) = folded.state.job_id() {
                        waiting.entry(job_id.as_uuid()).or_default().push(folded);
                    }
                }
                TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Pending => {}
            }
        }

        // Which waiting tasks have no live message.
        let mut depth: Option<QueueDepth> = None;
        for (job_id, tasks) in waiting {
            let task_ids: Vec<Uuid> = tasks
                .iter()
                .filter_map(|t| t.state.task_id().map(|id| id.as_uuid()))
                .collect();
            let live: Option<HashSet<(Uuid, u32)>> = shared
                .queue
                .live_messages(job_id, &task_ids)
                .await?
                .map(|live| live.into_iter().collect());
            let reason = match &live {
                Some(_) => "the attempt had no message in the queue",
                None => {
                    let depth = match depth {
                        Some(depth) => depth,
                        None => *depth.insert(shared.queue.depth().await?),
                    };
                    if depth.visible > 0 || depth.delayed > 0 {
                        // Its message may be among those: wait until the queue drains.
                        continue;
                    }
                    "the attempt waited while the queue had no message to deliver"
                }
            };
            for task in tasks {
                let Some(task_id) = task.state.task_id() else {
                    continue;
                };
                let attempt = task.state.attempt;
                if live
                    .as_ref()
                    .is_some_and(|live| live.contains(&(task_id.as_uuid(), attempt)))
                {
                    continue;
                }
                let command = TaskCommand::RequeueTask {
                    attempt,
                    reason: reason.to_owned(),
                    now,
                };
                if let Ok(events) = decide_task(&task.state, command) {
                    appends.push((Action::Requeued, task_id.stream_id(), task.version, events));
                }
            }
        }

        // One group commit; a stream that moved meanwhile conflicts alone and is left to the
        // next sweep.
        let (actions, batches): (Vec<Action>, Vec<AppendBatch>) = appends
            .into_iter()
            .map(|(action, stream_id, version, events)| {
                let batch = AppendBatch {
                    streams: vec![StreamAppend {
                        stream_id,
                        expected: ExpectedVersion::Exact(version),
                        events: events.iter().map(new_event).collect(),
                    }],
                    ..AppendBatch::default()
                };
                (action, batch)
            })
            .unzip();
        if batches.is_empty() {
            OrchestratorMetrics::add(&shared.metrics.inner.reconcile_passes, 1);
            return Ok(outcome);
        }
        let results = shared.log.append_many(batches).await;
        for (action, result) in actions.into_iter().zip(results) {
            match result {
                Ok(_) => match action {
                    Action::Requeued => outcome.requeued += 1,
                    Action::TimedOut => outcome.timed_out += 1,
                },
                Err(LogError::Conflict { .. }) => {}
                Err(error) => return Err(error.into()),
            }
        }
        let metrics = &shared.metrics.inner;
        OrchestratorMetrics::add(&metrics.reconcile_passes, 1);
        OrchestratorMetrics::add(&metrics.tasks_requeued, outcome.requeued);
        OrchestratorMetrics::add(&metrics.tasks_timed_out, outcome.timed_out);
        Ok(outcome)
    }
}

#[derive(Debug, Clone, Copy)]
enum Action {
    Requeued,
    TimedOut,
}
