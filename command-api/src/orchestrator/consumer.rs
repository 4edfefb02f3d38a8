//! ENQUEUE_TASKS and MONITOR: the consumer of the log.
//!
//! Per batch of events, with no per-event round trip: decode; load the rows of jobs not in
//! memory (one query); fold task events into each job's [`JobProgress`]; hand newly submitted
//! jobs to the expander; relay the batch's
//! `TaskEnqueued` and `TaskRetryScheduled` to the queue (one `read_streams` for the retries'
//! inputs, one `send`); purge cancelled jobs' messages; end every touched job whose tasks have
//! all ended; save the touched jobs' rows and the checkpoint atomically. The queue send comes
//! before the save: a crash in between resends, which the queue ignores per (task, attempt).
//! A `TaskEnqueued` marked as queued with its chunk (ADR 14) is not relayed.

use shoal_infra::telemetry::trace;
use std::collections::{BTreeSet, HashMap};

use chrono::Utc;
use futures::StreamExt;
use shoal_domain::events::{TaskEnqueued, TaskRequeued, TaskRetryScheduled};
use shoal_domain::{Event, JobCommand, JobId, JobStatus, Outcome, StreamRef, TaskId, decide_job};
use shoal_infra::eventlog::{
    AppendBatch, ExpectedVersion, LogError, LogPosition, RecordedEvent, StreamAppend,
};
use shoal_infra::orchestrator_store::{TrackedJob, TrackedStatus};
use shoal_infra::queue::{OutgoingMessage, TaskMessage};
use tracing::Instrument;

use super::admission::{Admission, Held};
use super::stepfunctions::{self, ExecutionChanges};
use super::{OrchestratorError, OrchestratorMetrics, Shared, load_job, new_event};

/// Conflicts on a job stream before the monitor leaves the job to a later batch.
const MAX_CONFLICTS: usize = 5;

/// The consumer's state: its checkpoint and the jobs it follows, equal to what the store holds
/// plus nothing unsaved (a failed batch drops the whole consumer).
#[derive(Debug)]
pub(super) struct Consumer {
    shared: Shared,
    /// The last saved checkpoint.
    position: LogPosition,
    /// Active jobs, and closed ones touched by the current batch.
    jobs: HashMap<JobId, TrackedJob>,
    /// Which waiting tasks may go to the queue now (limits, fair share).
    admission: Admission,
    /// When admission wants another round while tasks wait on time (rate limits, retries).
    admit_again: Option<std::time::Duration>,
}

/// The consumer while leading: loads the saved state, follows the log, and on any error drops
/// its state and starts again from the store after a backoff. Never returns.
pub(super) async fn run(shared: Shared) {
    let backoff = shared.config.error_backoff;
    loop {
        let error = match Consumer::load(shared.clone()).await {
            Ok(consumer) => consumer.follow().await,
            Err(error) => error,
        };
        if error.is_fenced() {
            tracing::warn!(%error, "another orchestrator saved progress; reloading");
        } else {
            tracing::warn!(%error, "orchestrator consumer failed; reloading");
            tokio::time::sleep(backoff).await;
        }
    }
}

impl Consumer {
    /// The saved checkpoint and every active job; jobs with tasks left to create are put in
    /// line for the expander.
    pub(super) async fn load(shared: Shared) -> Result<Self, OrchestratorError> {
        let position = shared
            .store
            .load_checkpoint(&shared.config.checkpoint_name)
            .await?;
        let active = shared.store.load_active().await?;
        let mut admission = Admission::new(
            shared.sfn.is_none(),
            shared.config.fair_share_window,
            shared.held.clone(),
            shared.limits.clone(),
        );
        let created: Vec<(JobId, u32, u32)> = active
            .iter()
            .map(|job| {
                let waiting = job.progress.queued + job.progress.retrying;
                (JobId::from_uuid(job.job_id), job.created_upto, waiting)
            })
            .collect();
        admission.rebuild(shared.log.as_ref(), &created).await?;
        let mut jobs = HashMap::with_capacity(active.len());
        for job in active {
            let job_id = JobId::from_uuid(job.job_id);
            if job.created_upto < job.progress.total_tasks {
                shared.pending.push(job_id);
            }
            jobs.insert(job_id, job);
        }
        tracing::info!(
            commit = position.commit,
            position = position.position,
            active_jobs = jobs.len(),
            held_tasks = admission.held_count(),
            "orchestrator consumer loaded"
        );
        Ok(Consumer {
            shared,
            position,
            jobs,
            admission,
            admit_again: None,
        })
    }

    /// Reads and processes one batch; returns the number of events read. Caught up, it runs an
    /// admission round instead and returns how many tasks it admitted (their `TaskReleased`
    /// events are the next batch).
    pub(super) async fn step(&mut self) -> Result<usize, OrchestratorError> {
        let events = self
            .shared
            .log
            .read_all(self.position, self.shared.config.batch_size)
            .await?;
        if events.is_empty() && self.shared.sfn.is_none() {
            return self.admit(self.position).await;
        }
        self.process(events).await
    }

    /// Follows the log from the checkpoint until an error, which it returns.
    async fn follow(mut self) -> OrchestratorError {
        // A round first: a previous leader may have saved the last batch of the log and
        // stopped before admitting what it freed, and no event need follow to start a round.
        if self.shared.sfn.is_none()
            && let Err(error) = self.admit(self.position).await
        {
            return error;
        }
        let batch_size = self.shared.config.batch_size;
        let chunk = usize::try_from(batch_size).unwrap_or(usize::MAX);
        let mut events = self
            .shared
            .log
            .subscribe(self.position, batch_size)
            .ready_chunks(chunk);
        loop {
            let next = match self.admit_again {
                Some(wait) => tokio::select! {
                    items = events.next() => items,
                    () = tokio::time::sleep(wait) => {
                        if let Err(error) = self.admit(self.position).await.map(|_| ()) {
                            return error;
                        }
                        continue;
                    }
                },
                None => events.next().await,
            };
            let Some(items) = next else {
                break;
            };
            let mut batch = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Ok(event) => batch.push(event),
                    // The subscription retries by itself from where it was.
                    Err(error) => tracing::warn!(%error, "reading the log failed; retrying"),
                }
            }
            if let Err(error) = self.process(batch).await {
                return error;
            }
        }
        OrchestratorError::Log(LogError::Invalid("the log subscription ended".into()))
    }

    /// One batch, start to end (see the module docs).
    async fn process(&mut self, events: Vec<RecordedEvent>) -> Result<usize, OrchestratorError> {
        let Some(last) = events.last().map(|e| e.log_position) else {
            return Ok(0);
        };
        let span = tracing::info_span!(
            "orchestrator.batch",
            events = events.len(),
            commit = last.commit,
            position = last.position,
            jobs = tracing::field::Empty,
            relayed = tracing::field::Empty,
        );
        self.process_in_span(&events, last)
            .instrument(span)
            .await
            .map(|()| events.len())
    }

    async fn process_in_span(
        &mut self,
        recorded: &[RecordedEvent],
        last: LogPosition,
    ) -> Result<(), OrchestratorError> {
        let shared = self.shared.clone();
        let metrics = &shared.metrics.inner;
        OrchestratorMetrics::add(&metrics.events, recorded.len());

        // Decode. An undecodable job event still counts for the job stream's version.
        let mut events = Vec::with_capacity(recorded.len());
        let mut undecodable_job_versions = Vec::new();
        for record in recorded {
            match Event::decode(&record.event_type, record.schema_version, record.data.get()) {
                Ok(event @ Event::LimitSet(_)) => self.admission.apply_job_event(&event),
                // Events about no job (API tokens) are not the orchestrator's.
                Ok(event) if event.job_id().is_none() => {}
                Ok(event) => events.push((record, event)),
                Err(error) => {
                    OrchestratorMetrics::add(&metrics.undecodable, 1);
                    tracing::warn!(
                        stream_id = %record.stream_id,
                        stream_version = record.stream_version,
                        position = record.log_position.position,
                        %error,
                        "skipping an undecodable event"
                    );
                    if let Ok(StreamRef::Job(job_id)) = StreamRef::parse(&record.stream_id) {
                        undecodable_job_versions.push((job_id, record.stream_version));
                    }
                }
            }
        }

        // Jobs not in memory (closed ones, or first seen): their saved rows, in one query. A job
        // submitted in this batch has none (rows are saved with the checkpoint, which is before
        // its submission), so a submission costs no query on its way to the expander.
        let submitted_here: BTreeSet<JobId> = events
            .iter()
            .filter(|(_, e)| matches!(e, Event::JobSubmitted(_)))
            .filter_map(|(_, e)| e.job_id())
            .collect();
        let unknown: BTreeSet<JobId> = events
            .iter()
            .filter_map(|(_, e)| e.job_id())
            .chain(undecodable_job_versions.iter().map(|(id, _)| *id))
            .filter(|id| !self.jobs.contains_key(id) && !submitted_here.contains(id))
            .collect();
        if !unknown.is_empty() {
            let ids: Vec<_> = unknown.iter().map(JobId::as_uuid).collect();
            for job in shared.store.load_jobs(&ids).await? {
                self.jobs.insert(JobId::from_uuid(job.job_id), job);
            }
        }

        // Fold. With the Step Functions driver, the executions do CREATE_TASKS, the first
        // relay (EnqueueTasks) and the ending; this consumer starts and stops them.
        let step_functions = shared.sfn.clone();
        let mut executions = ExecutionChanges::default();
        let mut touched = BTreeSet::new();
        let mut submitted = Vec::new();
        let mut cancelled = BTreeSet::new();
        let mut messages = Vec::new();
        let mut retries = Vec::new();
        let resumed: Vec<JobId> = events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::JobRetryRequested(e) => Some(e.job_id),
                _ => None,
            })
            .collect();
        self.learn_resumed_jobs(&resumed).await?;
        for (job_id, version) in undecodable_job_versions {
            let job = self
                .jobs
                .entry(job_id)
                .or_insert_with(|| TrackedJob::new(job_id));
            job.job_version = job.job_version.max(version);
            touched.insert(job_id);
        }
        for (record, event) in &events {
            let Some(job_id) = event.job_id() else {
                continue;
            };
            let job = self
                .jobs
                .entry(job_id)
                .or_insert_with(|| TrackedJob::new(job_id));
            touched.insert(job_id);
            match event.task() {
                None => {
                    job.job_version = job.job_version.max(record.stream_version);
                    self.admission.apply_job_event(event);
                }
                Some((task_id, _)) => {
                    self.admission
                        .observe_task(job_id, task_id, record.stream_version, event);
                }
            }
            job.progress.apply(event);
            match event {
                Event::JobSubmitted(_) => submitted.push(job_id),
                Event::TasksCreated(e) => job.created_upto = job.created_upto.max(e.to_index),
                Event::JobCompleted(_) if job.status != TrackedStatus::Cancelled => {
                    job.status = TrackedStatus::Completed;
                }
                Event::JobFailed(_) if job.status != TrackedStatus::Cancelled => {
                    job.status = TrackedStatus::Failed;
                }
                Event::JobCancelled(_) => {
                    job.status = TrackedStatus::Cancelled;
                    cancelled.insert(job_id);
                }
                Event::JobRetryRequested(_) if job.status == TrackedStatus::Failed => {
                    job.status = TrackedStatus::Active;
                    executions.resumed.push((job_id, record.stream_version));
                }
                // RELAY: a task's first message, unless its chunk queued it already (admission
                // holds it when its job is gated).
                Event::TaskEnqueued(e) if step_functions.is_none() && !sent_with_chunk(record) => {
                    if self.admission.gates(job_id) {
                        self.admission.hold(
                            job_id,
                            Held {
                                task_id: e.task_id,
                                index: e.index,
                                attempt: e.attempt,
                                version: record.stream_version,
                                not_before: None,
                            },
                        );
                    } else {
                        messages.push(enqueued_message(e, record));
                    }
                }
                Event::TaskRetryScheduled(e) => {
                    if self.admission.gates(job_id) {
                        self.admission.hold(
                            job_id,
                            Held {
                                task_id: e.task_id,
                                index: e.index,
                                attempt: e.attempt,
                                version: record.stream_version,
                                not_before: Some(e.not_before),
                            },
                        );
                    } else {
                        retries.push((Resend::retry(e), *record));
                    }
                }
                // A held task has no message on purpose: admission sends it.
                Event::TaskRequeued(e) if self.admission.is_held(job_id, e.task_id) => {}
                Event::TaskRequeued(e) => retries.push((Resend::requeue(e), *record)),
                Event::TaskReleased(e) => retries.push((
                    Resend {
                        task_id: e.task_id,
                        attempt: e.attempt,
                        not_before: None,
                    },
                    *record,
                )),
                _ => {}
            }
        }
        tracing::Span::current().record("jobs", touched.len());

        // CREATE_TASKS: hand new jobs to the expander now, not after this batch's relay,
        // endings and save: the expander decides on the job's stream, not on this batch's
        // state, so nothing of the batch needs to be done first (and a submission's first tasks
        // wait for no commit of the consumer). If the batch fails, the reload puts the job in
        // line again, and expanding it twice is a no-op (the second chunk conflicts).
        for job_id in submitted.iter().filter(|_| step_functions.is_none()) {
            if let Some(job) = self.jobs.get(job_id)
                && job.status == TrackedStatus::Active
                && job.created_upto < job.progress.total_tasks
            {
                shared.pending.push(*job_id);
            }
        }

        // ENQUEUE_TASKS: relay, then purge the cancelled jobs' earlier messages.
        self.retry_messages(&retries, &mut messages).await?;
        messages.retain(|m| {
            self.jobs
                .get(&JobId::from_uuid(m.body.job_id))
                .is_none_or(|job| job.status != TrackedStatus::Cancelled)
        });
        tracing::Span::current().record("relayed", messages.len());
        if !messages.is_empty() {
            let sent = messages.len();
            shared.queue.send(messages).await?;
            OrchestratorMetrics::add(&metrics.relayed, sent);
        }
        for job_id in &cancelled {
            let purged = shared.queue.purge_job(job_id.as_uuid()).await?;
            tracing::info!(%job_id, purged, "job cancelled; its queued messages are purged");
        }

        if let Some(driver) = &step_functions {
            // A job that ended in the same batch (read again after a long pause) needs none.
            executions.submitted = submitted
                .iter()
                .copied()
                .filter(|id| {
                    self.jobs
                        .get(id)
                        .is_some_and(|job| job.status == TrackedStatus::Active)
                })
                .collect();
            executions.cancelled = cancelled.iter().copied().collect();
            if !executions.is_empty() {
                // Boxed: it keeps the batch's future (and its layout) small.
                Box::pin(stepfunctions::apply_changes(&shared, driver, executions)).await?;
            }
        }

        // MONITOR (the built-in driver's; the Step Functions driver's is a step).
        for job_id in touched.iter().filter(|_| step_functions.is_none()) {
            let Some(job) = self.jobs.get(job_id) else {
                continue;
            };
            if job.status != TrackedStatus::Active {
                continue;
            }
            if let Some(outcome) = job.progress.is_finished() {
                let job = *job;
                if let Some(status) = finish(&shared, *job_id, &job, outcome).await?
                    && let Some(job) = self.jobs.get_mut(job_id)
                {
                    job.status = status;
                }
            }
        }

        // Save, then forget closed ones.
        let rows: Vec<TrackedJob> = touched
            .iter()
            .filter_map(|id| self.jobs.get(id).copied())
            .collect();
        shared
            .store
            .save_batch(&shared.config.checkpoint_name, self.position, last, &rows)
            .await?;
        self.position = last;
        shared.saved.notify_waiters();
        for (job_id, job) in &self.jobs {
            if job.status != TrackedStatus::Active {
                self.admission.forget_job(*job_id);
            }
        }
        self.jobs
            .retain(|_, job| job.status == TrackedStatus::Active);

        // Admission: the held tasks that may go now.
        if step_functions.is_none() {
            self.admit(last).await?;
        }
        Ok(())
    }

    /// One admission round (see `admission`): appends `TaskReleased` for the tasks admitted
    /// (one group commit; a task whose stream moved meanwhile stays held), which the relay
    /// sends when it reads them. `folded` is how far the consumer has folded the log.
    async fn admit(&mut self, folded: LogPosition) -> Result<usize, OrchestratorError> {
        if !self.admission.has_held() {
            self.admit_again = None;
            return Ok(0);
        }
        let progress: HashMap<JobId, shoal_domain::JobProgress> = self
            .jobs
            .iter()
            .map(|(id, job)| (*id, job.progress))
            .collect();
        let now = Utc::now();
        let (releases, again) = self.admission.round(now, folded, &progress);
        self.admit_again = again;
        if releases.is_empty() {
            return Ok(0);
        }
        let admitted = releases.len();
        let batches: Vec<AppendBatch> = releases
            .iter()
            .map(|release| AppendBatch {
                streams: vec![StreamAppend {
                    stream_id: release.held.task_id.stream_id(),
                    expected: ExpectedVersion::Exact(release.held.version),
                    events: vec![new_event(&release.event(now))],
                }],
                ..AppendBatch::default()
            })
            .collect();
        let results = self.shared.log.append_many(batches).await;
        let mut moved = Vec::new();
        let mut failure = None;
        for (release, result) in releases.into_iter().zip(results) {
            match result {
                Ok(_) => {}
                Err(LogError::Conflict { .. }) => moved.push(release),
                Err(error) => {
                    moved.push(release);
                    failure = Some(error);
                }
            }
        }
        if !moved.is_empty() {
            // Their streams moved: the news comes through the log; try again soon anyway.
            self.admit_again = Some(std::time::Duration::from_millis(100));
        }
        let admitted = admitted - moved.len();
        self.admission.restore(moved);
        if let Some(error) = failure {
            return Err(error.into());
        }
        Ok(admitted)
    }

    /// Jobs whose failed tasks a user retries may have been forgotten by admission when they
    /// failed: their submissions are read again (one read), so their limits hold.
    async fn learn_resumed_jobs(&mut self, jobs: &[JobId]) -> Result<(), OrchestratorError> {
        let streams: Vec<String> = jobs
            .iter()
            .filter(|id| !self.admission.knows(**id))
            .map(JobId::stream_id)
            .collect();
        if streams.is_empty() {
            return Ok(());
        }
        for record in self.shared.log.read_streams(&streams).await? {
            if let Ok(event) =
                Event::decode(&record.event_type, record.schema_version, record.data.get())
            {
                self.admission.apply_job_event(&event);
            }
        }
        Ok(())
    }

    /// Adds the messages of the batch's retries and requeues. A `TaskRetryScheduled` or a
    /// `TaskRequeued` does not carry the task's input: it comes from the task's
    /// `TaskEnqueued`, read for all of them at once.
    async fn retry_messages(
        &self,
        retries: &[(Resend, &RecordedEvent)],
        messages: &mut Vec<OutgoingMessage>,
    ) -> Result<(), OrchestratorError> {
        if retries.is_empty() {
            return Ok(());
        }
        let streams: Vec<String> = retries
            .iter()
            .map(|(e, _)| e.task_id)
            .collect::<BTreeSet<TaskId>>()
            .iter()
            .map(TaskId::stream_id)
            .collect();
        // Each task's TaskEnqueued, with the trace context it was enqueued in.
        let mut enqueued: HashMap<TaskId, (TaskEnqueued, Option<String>)> = HashMap::new();
        // Each task's last retry, with the trace context of the attempt before it (what an
        // admitted retry links to).
        let mut last_attempt: HashMap<TaskId, Option<String>> = HashMap::new();
        for record in self.shared.log.read_streams(&streams).await? {
            if record.event_type != "TaskEnqueued" && record.event_type != "TaskRetryScheduled" {
                continue;
            }
            match Event::decode(&record.event_type, record.schema_version, record.data.get()) {
                Ok(Event::TaskEnqueued(e)) => {
                    enqueued.insert(e.task_id, (e, traceparent(&record)));
                }
                Ok(Event::TaskRetryScheduled(e)) => {
                    last_attempt.insert(
                        e.task_id,
                        trace::from_metadata(record.metadata.get(), trace::ATTEMPT_TRACEPARENT),
                    );
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(
                    stream_id = %record.stream_id,
                    %error,
                    "undecodable TaskEnqueued: its retries cannot be relayed"
                ),
            }
        }
        let now = Utc::now();
        for (retry, record) in retries {
            let Some((task, enqueued_in)) = enqueued.get(&retry.task_id) else {
                tracing::warn!(task_id = %retry.task_id, "a retry of a task without TaskEnqueued");
                continue;
            };
            // An admission (`TaskReleased`) is the orchestrator's doing: the attempt stays in
            // the trace the task was enqueued in, linked to the attempt before it.
            let released = record.event_type == "TaskReleased";
            let delay = retry
                .not_before
                .and_then(|not_before| (not_before - now).to_std().ok())
                .unwrap_or_default();
            messages.push(OutgoingMessage {
                body: TaskMessage {
                    attempt: retry.attempt,
                    stream_version: record.stream_version,
                    not_before: retry.not_before,
                    traceparent: if released {
                        enqueued_in.clone()
                    } else {
                        traceparent(record)
                    },
                    previous_attempt_traceparent: if released {
                        last_attempt.get(&retry.task_id).cloned().flatten()
                    } else {
                        trace::from_metadata(record.metadata.get(), trace::ATTEMPT_TRACEPARENT)
                    },
                    ..task_message(task, record)
                },
                delay,
            });
        }
        Ok(())
    }
}

/// A message to send again for a task's attempt: a retry's, or a requeue's.
#[derive(Debug, Clone, Copy)]
struct Resend {
    task_id: TaskId,
    attempt: u32,
    not_before: Option<chrono::DateTime<Utc>>,
}

impl Resend {
    fn retry(e: &TaskRetryScheduled) -> Self {
        Resend {
            task_id: e.task_id,
            attempt: e.attempt,
            not_before: Some(e.not_before),
        }
    }

    fn requeue(e: &TaskRequeued) -> Self {
        Resend {
            task_id: e.task_id,
            attempt: e.attempt,
            not_before: e.not_before,
        }
    }
}

/// The metadata key that marks a `TaskEnqueued` whose message was queued in the same
/// transaction as the event (`OrchestratorConfig::send_with_chunks`): the event is in the log
/// only if its message was queued, so the relay leaves it alone.
pub(super) const SENT_WITH_CHUNK: &str = "queued";

/// The message of a `TaskEnqueued` (first attempt, no delay).
pub(super) fn enqueued_message(event: &TaskEnqueued, record: &RecordedEvent) -> OutgoingMessage {
    OutgoingMessage {
        body: task_message(event, record),
        delay: std::time::Duration::ZERO,
    }
}

/// The first message of a task about to be created (its stream's first version), with the
/// trace context its `TaskEnqueued` carries.
pub(super) fn first_message(event: &TaskEnqueued, traceparent: Option<String>) -> OutgoingMessage {
    OutgoingMessage {
        body: message_body(event, 1, traceparent),
        delay: std::time::Duration::ZERO,
    }
}

fn task_message(task: &TaskEnqueued, record: &RecordedEvent) -> TaskMessage {
    message_body(task, record.stream_version, traceparent(record))
}

fn message_body(
    task: &TaskEnqueued,
    stream_version: i64,
    traceparent: Option<String>,
) -> TaskMessage {
    TaskMessage {
        task_id: task.task_id.as_uuid(),
        job_id: task.job_id.as_uuid(),
        task_index: task.index,
        parameters: task.input.clone(),
        job_type: task.job_type.clone(),
        attempt: task.attempt,
        stream_version,
        max_attempts: task.max_attempts,
        timeout_seconds: task.timeout_seconds,
        not_before: None,
        traceparent,
        previous_attempt_traceparent: None,
        fallback_handler: task.fallback_handler.clone(),
    }
}

/// What the consumer reads in an event's metadata.
#[derive(serde::Deserialize)]
struct Metadata {
    traceparent: Option<String>,
    #[serde(default)]
    queued: bool,
}

/// The W3C trace context an event's metadata carries, if any.
fn traceparent(record: &RecordedEvent) -> Option<String> {
    serde_json::from_str::<Metadata>(record.metadata.get())
        .ok()
        .and_then(|m| m.traceparent)
}

/// Whether an event's message was queued in the event's own transaction ([`SENT_WITH_CHUNK`]).
fn sent_with_chunk(record: &RecordedEvent) -> bool {
    serde_json::from_str::<Metadata>(record.metadata.get()).is_ok_and(|m| m.queued)
}

/// Appends `JobCompleted` or `JobFailed` for a job whose tasks have all ended, deciding on the
/// job stream's state. Returns the job's new status, or `None` to leave it to a later batch:
/// when the job stream has events this consumer has not folded yet (a cancellation, a retry
/// request, another orchestrator's ending), deciding now could contradict them, and they will
/// come through the log and touch the job again.
pub(super) async fn finish(
    shared: &Shared,
    job_id: JobId,
    job: &TrackedJob,
    outcome: Outcome,
) -> Result<Option<TrackedStatus>, OrchestratorError> {
    let span = tracing::info_span!("orchestrator.finish", %job_id, ?outcome);
    async {
        for _ in 0..MAX_CONFLICTS {
            let (state, version) = load_job(shared.log.as_ref(), job_id).await?;
            match state.status {
                JobStatus::Completed => return Ok(Some(TrackedStatus::Completed)),
                JobStatus::Failed => return Ok(Some(TrackedStatus::Failed)),
                JobStatus::Cancelled => return Ok(Some(TrackedStatus::Cancelled)),
                _ => {}
            }
            if version > job.job_version {
                tracing::debug!(
                    version,
                    folded = job.job_version,
                    "the job stream has news; deciding later"
                );
                return Ok(None);
            }
            let now = Utc::now();
            let (command, status) = match outcome {
                Outcome::Completed => (JobCommand::CompleteJob { now }, TrackedStatus::Completed),
                Outcome::Failed => (
                    JobCommand::FailJob {
                        failed_tasks: job.progress.failed,
                        now,
                    },
                    TrackedStatus::Failed,
                ),
            };
            let events = match decide_job(&state, command) {
                Ok(events) => events,
                Err(rejection) => {
                    if !rejection.is_duplicate() {
                        tracing::warn!(%rejection, "the job cannot end yet");
                    }
                    return Ok(None);
                }
            };
            let batch = AppendBatch {
                streams: vec![StreamAppend {
                    stream_id: job_id.stream_id(),
                    expected: ExpectedVersion::Exact(version),
                    events: events.iter().map(new_event).collect(),
                }],
                ..AppendBatch::default()
            };
            match shared.log.append(batch).await {
                Ok(_) => {
                    let counter = match status {
                        TrackedStatus::Completed => &shared.metrics.inner.jobs_completed,
                        _ => &shared.metrics.inner.jobs_failed,
                    };
                    OrchestratorMetrics::add(counter, 1);
                    tracing::info!(?status, "job ended");
                    return Ok(Some(status));
                }
                Err(LogError::Conflict { .. }) => {
                    tracing::debug!("job stream moved; re-reading it");
                }
                Err(error) => return Err(error.into()),
            }
        }
        Ok(None)
    }
    .instrument(span)
    .await
}
