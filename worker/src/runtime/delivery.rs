//! The protocol of one delivery: what the worker appends to the log for a received message,
//! and what then becomes of the message. The loop (`runtime.rs`) only decides how many
//! messages are held and started ahead (see `flow`); everything that touches a task's stream or settles a message is
//! here, so that this file can be checked on its own.
//!
//! # The steps
//!
//! 1. **Unparseable body** (a poison message): moved to the dead-letter queue. Nothing is
//!    appended (no task can be named with confidence).
//! 2. **Early** (`not_before` in the future, a retry's backoff): released until then.
//! 3. **Cancelled job** (read from the job's stream, cached for `cancel_check_ttl`; a failed
//!    read counts as not cancelled): acknowledged, nothing appended.
//! 4. **Start.** A first attempt's first delivery (receive count 1, not held after an error)
//!    skips this step: it goes to step 5 at once, and its `TaskStarted` is appended there
//!    (ADR 27). If another copy of its message is being handled by this worker, it waits for
//!    that one to be done and then takes this step. For every other delivery, `TaskStarted` is
//!    appended at the stream version the message carries (the happy path costs no read). If
//!    that conflicts, the task's stream is read and decides:
//!    - the log does not know the task: the message is dead-lettered;
//!    - the task is COMPLETED, or the log is at a later attempt: acknowledged (a duplicate);
//!    - the log is at an earlier attempt than the message: released (the log is behind);
//!    - the attempt is RUNNING and this is a redelivery (receive count > 1): **takeover**: the
//!      previous holder's visibility timeout ran out, so it is presumed dead; its
//!      `TaskStarted` stands and this worker runs the attempt and records its end;
//!    - the attempt is RUNNING and this is a first receive: another copy of the message is
//!      being handled; this one is acknowledged;
//!    - FAILED but not dead-lettered (a worker stopped between the two): the message is
//!      dead-lettered and `TaskDeadLettered` appended, finishing that worker's job;
//!    - ENQUEUED or RETRYING: `TaskStarted` is appended at the version just read; a conflict
//!      reads again (three rounds at most, then the message is released);
//!    - any other state (FAILED and dead-lettered already): acknowledged.
//! 5. **Run** the handler on a task of its own, in a concurrency slot, cut off at the task's
//!    timeout. A panic or a timeout is a retryable failure. The slot is taken once the start
//!    is durable, or at once for a first attempt's first delivery, whose `TaskStarted` (decided
//!    as the handler begins) is appended with the end if the handler returns within
//!    `start_grace` (10 ms), or else on its own when the grace runs out. If that append
//!    conflicts, the log decides as in step 4, and a copy that lost is stopped and
//!    acknowledged. The slot is freed as soon as the handler returns: step 6 runs outside it,
//!    so a slot never waits for a commit. A worker that stops before a slot took the delivery
//!    releases its message (its next holder takes the attempt over, or starts it).
//! 6. **End.** `TaskCompleted`, or `TaskFailed` (with the backoff of the next attempt, which
//!    the domain turns into a retry or a final failure), is appended at the version right
//!    after this attempt's `TaskStarted` (with that `TaskStarted` before it, if it is still
//!    unrecorded: a conflict then is a lost start, decided as in step 4, and the handler is
//!    not run again), then the message is acknowledged (a `TaskCompleted` on the SQL queue:
//!    in the same commit, ADR 31). A conflict there means another
//!    holder recorded the end first: acknowledged too. A retry comes back as a
//!    new message (the orchestrator relays `TaskRetryScheduled`). A final failure is
//!    dead-lettered instead of acknowledged: the message goes to the dead-letter queue first,
//!    `TaskDeadLettered` is appended after.
//!
//! # Invariants
//!
//! - **Acknowledged only once the log says so.** A message is acknowledged only after an
//!   append of this delivery has committed (the group committer answers after the commit), or
//!   after a read of the log showed that this message needs no more work (a duplicate, a
//!   later attempt, another live holder, a cancelled job). Never on an error. Where the queue
//!   is a table of the log's database (`WorkerConfig::acks_in_commit`), a completed task's
//!   message is deleted in the very commit of its `TaskCompleted` (ADR 31): both or neither.
//! - **Infrastructure errors hold, never release nor acknowledge.** When the log or the
//!   queue fails, the worker keeps the message (the heartbeat keeps it hidden, so no other
//!   worker receives it and no receive is used up) and handles the delivery again from the
//!   log after a backoff, once the log answers (see `health`); an attempt's end is appended
//!   again until it is durable, so the handler does not run twice for an outage. Only what
//!   a handler does, a crash, or a message's own state (too early, ahead of the log) uses a
//!   receive. If the worker dies meanwhile, the message comes back after its visibility
//!   timeout and the next delivery starts over from the log.
//! - **One start and one end per attempt.** Every append expects an exact stream version:
//!   two deliveries of one attempt cannot both start it (a takeover appends no second start),
//!   and two holders cannot both record its end. No end is appended without its start before
//!   it or in the same append.
//! - **Dead-lettering moves the message before the log notes it**: if the append of
//!   `TaskDeadLettered` fails, only the note is missing; the task is FAILED either way.
//! - **A delivery's message stays hidden while it is held** (buffered, started, running, or
//!   being recorded: its receipt is in the in-flight set the heartbeat extends from the
//!   moment it is received) and leaves that set before its disposition is
//!   applied, so shutdown never releases a message that is being acknowledged. A panic while
//!   handling a delivery releases its message.
//! - **Nothing is decided here that the domain did not decide**: every event comes from
//!   `shoal_domain::decide_task` on the stream's state (or, for the first try at a start, on
//!   the state the message implies). When the stream's state makes the domain reject the
//!   command, nothing is appended and the message is acknowledged: the log already holds
//!   what the command would have recorded.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::FutureExt;
use serde_json::{Value, json};
use shoal_domain::limits::DEFAULT_TIMEOUT_SECONDS;
use shoal_domain::{
    Event, FIRST_ATTEMPT, JobId, TaskCommand, TaskId, TaskState, TaskStatus, decide_task,
    events::TaskEnqueued, evolve_task, retry_backoff,
};
use shoal_infra::eventlog::{
    AppendBatch, EventLog, ExpectedVersion, LogError, NewEvent, RecordedEvent, StreamAppend,
};
use shoal_infra::queue::{Delivery, QueueError, Receipt, TaskMessage, TaskQueue};
use shoal_infra::telemetry::metrics::metrics;
use shoal_infra::telemetry::trace;
use tracing::Instrument;

use super::firsts::Firsts;
use super::flow::{Ahead, Flow, Slot};
use super::health::{LogHealth, next_backoff};
use super::job_cache::JobCache;
use super::{AbortOnDrop, Inflight};
use crate::batching::{AckBatcher, GroupCommitter};
use crate::config::WorkerConfig;
use crate::handler::{Handler, Handlers, TaskContext, TaskError};
use crate::metrics::WorkerMetrics;

/// How long a message waits before it comes back when it cannot be handled now for a reason
/// of its own (the log is behind it), or after a panic.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// What a worker's deliveries share.
pub(super) struct Shared {
    pub(super) config: WorkerConfig,
    pub(super) handlers: Handlers,
    pub(super) log: Arc<dyn EventLog>,
    pub(super) queue: Arc<dyn TaskQueue>,
    pub(super) metrics: Arc<WorkerMetrics>,
    pub(super) committer: GroupCommitter,
    pub(super) acks: AckBatcher,
    pub(super) inflight: Arc<Inflight>,
    pub(super) jobs: JobCache,
    pub(super) health: Arc<LogHealth>,
    pub(super) flow: Arc<Flow>,
    pub(super) firsts: Firsts,
}

/// A stream's events, those that cannot be decoded skipped (and logged).
pub(super) fn decode_all(records: &[RecordedEvent]) -> Vec<Event> {
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
    /// Dead-lettered, acknowledged with its end's commit (ADR 31), or in someone else's
    /// hands: nothing more to do.
    Done,
    /// The log or the queue failed: keep the message (the heartbeat keeps it hidden) and
    /// handle the delivery again once the failure is over, without using up a receive.
    Hold,
}

/// A task this worker holds a started attempt of.
struct Started {
    state: TaskState,
    /// The stream's version, with the `TaskStarted` of `state.attempt` as its last event.
    version: i64,
    /// `state` is the stream's state, not an approximation implied by the message (which
    /// cannot know the retry budget after a manual retry).
    exact: bool,
    /// The start's events when they are not in the log yet (a first attempt run before its
    /// start was recorded, ADR 27): appended with the attempt's end, or on their own once the
    /// handler has run for [`WorkerConfig::start_grace`]. `version` counts them.
    unrecorded: Vec<Event>,
}

/// The attempt's start was not recorded, and recording it with the end conflicted: another
/// delivery started the attempt first. The log decides what becomes of this one.
struct StartLost;

/// Handles one delivery to its end and settles its message (acknowledge, release, or nothing
/// when it was dead-lettered or is in someone else's hands). `key` is its receipt's entry in
/// the in-flight set; `ahead` counts it as dispatched ahead of the slots until it takes one.
/// A concurrency slot is held only while the handler runs.
pub(super) async fn process(shared: Arc<Shared>, delivery: Delivery, key: u64, ahead: Ahead) {
    let receipt = delivery.receipt.clone();
    let mut held = false;
    let mut backoff = Duration::ZERO;
    let disposition = loop {
        // A bug that panics here must not leave the message hidden by the heartbeat for good.
        let disposition = AssertUnwindSafe(shared.handle(delivery.clone(), held, &ahead))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| {
                tracing::error!("handling a delivery panicked; releasing its message");
                Disposition::Release(RETRY_DELAY)
            });
        if !matches!(disposition, Disposition::Hold) {
            break disposition;
        }
        // Starting over is safe (every step decides from the log), and the message stays
        // hidden meanwhile: no other worker receives it, so no receive is used.
        held = true;
        WorkerMetrics::inc(&shared.metrics.held_on_errors);
        backoff = next_backoff(backoff);
        tracing::debug!(
            ?backoff,
            "holding the message until the log and the queue answer"
        );
        shared.health.wait(backoff).await;
    };
    drop(ahead);
    // Out of the in-flight set first: shutdown releases only what is in it. Still held (for
    // the bound on held messages) until acknowledged or released.
    shared.flow.settle();
    shared.inflight.remove(key);
    match disposition {
        // The acknowledger reports it settled.
        Disposition::Ack => shared.acks.ack(receipt),
        Disposition::Release(delay) => {
            // A heartbeat under way must not hide it again after the release.
            shared.inflight.extended().await;
            match shared.queue.release(&receipt, delay).await {
                Ok(()) => WorkerMetrics::inc(&shared.metrics.released),
                Err(error) => tracing::warn!(%error, "could not release the message"),
            }
            shared.flow.settled(1);
        }
        Disposition::Done | Disposition::Hold => shared.flow.settled(1),
    }
}

/// Largest `stream_version` a message may carry: far beyond any real task stream (a few events
/// per attempt), far enough below `i64::MAX` that the log's version arithmetic cannot overflow.
const MAX_MESSAGE_STREAM_VERSION: i64 = 1 << 40;

impl Shared {
    /// Steps 1 to 6 of the module docs, in order; answers what becomes of the message.
    ///
    /// `held`: this delivery was handled before and held after an infrastructure error, so
    /// this worker may have started its attempt already (the append's outcome was unknown).
    /// `ahead` leaves the count of deliveries started ahead once a slot is taken.
    async fn handle(&self, delivery: Delivery, held: bool, ahead: &Ahead) -> Disposition {
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
                        Disposition::Hold
                    }
                };
            }
        };
        if !(0..=MAX_MESSAGE_STREAM_VERSION).contains(&message.stream_version) {
            // Only a crafted message carries such a version; `stream_version + n` would
            // overflow. It is a poison message.
            WorkerMetrics::inc(&self.metrics.poison);
            tracing::warn!(
                stream_version = message.stream_version,
                "message with an impossible stream_version: dead-lettering it"
            );
            let reason = format!(
                "unusable task message: stream_version {} is out of range (0 to {})",
                message.stream_version, MAX_MESSAGE_STREAM_VERSION
            );
            return self.dead_letter_message(&delivery.receipt, &reason).await;
        }
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
        if self.flow.is_stopping() {
            // Not started, and it would not run before the worker stops: run it elsewhere.
            return Disposition::Release(Duration::ZERO);
        }
        // A held delivery may have started the attempt itself: a takeover then runs it.
        let may_take_over = delivery.receive_count > 1 || held;
        // A first attempt's first delivery runs before its start is recorded (ADR 27), unless
        // another copy of its message is being handled here: that one goes first, and this
        // one then learns from the log what is left to do.
        let mut first = None;
        if !may_take_over && message.attempt == FIRST_ATTEMPT {
            match self.firsts.enter(message.task_id) {
                Ok(entered) => first = Some(entered),
                Err(taken) => {
                    tokio::select! {
                        () = taken.done() => {}
                        () = self.flow.stopped() => return Disposition::Release(Duration::ZERO),
                    }
                }
            }
        }
        let recorded = match first {
            Some(_) => None,
            None => match self.start(&message, &delivery.receipt, may_take_over).await {
                Ok(started) => Some(started),
                Err(disposition) => return disposition,
            },
        };
        // The start is durable, or this delivery is the attempt's first: the handler may run
        // once a slot is free.
        let Some(slot) = self.flow.slot().await else {
            // The worker stops before a slot took it: its next holder takes the attempt over
            // (or, if nothing was recorded, starts it).
            return Disposition::Release(Duration::ZERO);
        };
        ahead.leave();
        metrics().task_started(&message.job_type);
        let started = match recorded.or_else(|| first_start(&message, &self.config.worker_id)) {
            Some(started) => started,
            // The domain would not start it on the state the message implies: the log decides.
            None => match self.start(&message, &delivery.receipt, may_take_over).await {
                Ok(started) => started,
                Err(disposition) => return disposition,
            },
        };
        let disposition = self
            .run_attempt(&message, &delivery.receipt, started, slot)
            .await;
        drop(first);
        disposition
    }

    /// Appends `TaskStarted` for the message's attempt, or finds out from the log why not.
    async fn start(
        &self,
        message: &TaskMessage,
        receipt: &Receipt,
        may_take_over: bool,
    ) -> Result<Started, Disposition> {
        let implied = implied_state(message);
        let start = TaskCommand::StartTask {
            attempt: message.attempt,
            worker: self.config.worker_id.clone(),
            now: Utc::now(),
        };
        if let Ok(events) = decide_task(&implied, start) {
            let Some(next) = i64::try_from(events.len())
                .ok()
                .and_then(|n| message.stream_version.checked_add(n))
            else {
                return Err(self
                    .dead_letter_message(receipt, "stream_version out of range")
                    .await);
            };
            match self.append(message, message.stream_version, &events).await {
                Ok(()) => {
                    return Ok(Started {
                        state: events.iter().fold(implied, evolve_task),
                        version: next,
                        exact: message.attempt == FIRST_ATTEMPT,
                        unrecorded: Vec::new(),
                    });
                }
                Err(LogError::Conflict { .. }) => {}
                Err(error) => return Err(self.log_failed(&error, "could not append TaskStarted")),
            }
        }
        self.start_from_log(message, receipt, may_take_over).await
    }

    /// The log is not where the message says: reads it and decides (step 4's cases). A second
    /// round is only needed when the stream moves while we look.
    async fn start_from_log(
        &self,
        message: &TaskMessage,
        receipt: &Receipt,
        may_take_over: bool,
    ) -> Result<Started, Disposition> {
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
                TaskStatus::Running if may_take_over => {
                    // The previous holder's visibility timeout ran out: presumed dead. Its
                    // `TaskStarted` stands; this worker runs the attempt and records its end.
                    tracing::info!(previous = ?state.worker, "taking over an attempt whose worker stopped responding");
                    WorkerMetrics::inc(&self.metrics.taken_over);
                    return Ok(Started {
                        state,
                        version,
                        exact: true,
                        unrecorded: Vec::new(),
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
                                unrecorded: Vec::new(),
                            });
                        }
                        Err(LogError::Conflict { .. }) => continue,
                        Err(error) => {
                            return Err(self.log_failed(&error, "could not append TaskStarted"));
                        }
                    }
                }
            }
        }
        Err(Disposition::Release(RETRY_DELAY))
    }

    /// Runs the handler in `slot`, frees the slot, and records the outcome. An unrecorded
    /// start is appended on its own once the handler has run for the start grace, or with the
    /// end if the handler is done sooner.
    async fn run_attempt(
        &self,
        message: &TaskMessage,
        receipt: &Receipt,
        mut started: Started,
        slot: Slot,
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
        let selected = self.handlers.select_for(
            &context.job_type,
            &context.parameters,
            message.fallback_handler.as_deref(),
        );
        let running = async {
            match selected {
                Ok((name, handler)) => {
                    tracing::debug!(handler = %name, "running");
                    self.run_handler(handler, context, timeout_seconds).await
                }
                Err(error) => Err(error),
            }
        };
        tokio::pin!(running);
        // The slot is freed as soon as the handler is done: the next task takes it while this
        // one's start (if it is still being recorded) and end commit.
        let mut slot = Some(slot);
        let mut done = |outcome| {
            drop(slot.take());
            (outcome, began.elapsed())
        };
        let (outcome, elapsed) = if started.unrecorded.is_empty() {
            done(running.await)
        } else {
            match tokio::time::timeout(self.config.start_grace, &mut running).await {
                Ok(outcome) => done(outcome),
                // A slow attempt: its start is recorded now, while the handler runs. If another
                // delivery holds the attempt, the handler is stopped (dropping `running` aborts
                // it) or its outcome dropped.
                Err(_) => match tokio::try_join!(
                    self.record_start(message, receipt, &mut started),
                    async { Ok(done(running.await)) },
                ) {
                    Ok(((), ended)) => ended,
                    Err(disposition) => return disposition,
                },
            }
        };
        let duration_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        let outcome = outcome
            .and_then(|result| crate::limits::check_result(result, self.config.max_result_bytes))
            .map_err(|error| TaskError {
                message: crate::limits::storable_error(&error.message),
                ..error
            });
        // Kept only while the start is unrecorded: a lost start records it again.
        let again = (!started.unrecorded.is_empty()).then(|| outcome.clone());
        match self
            .record_end(message, receipt, started, outcome, duration_ms, elapsed)
            .await
        {
            Ok(disposition) => disposition,
            Err(StartLost) => {
                // Another delivery started the attempt first: the log decides, as when a
                // start conflicts. The handler is not run again: if the attempt is still to
                // do here (the log moved for another reason), its outcome is recorded.
                let Some(outcome) = again else {
                    return Disposition::Ack;
                };
                match self.start_from_log(message, receipt, false).await {
                    Ok(started) => self
                        .record_end(message, receipt, started, outcome, duration_ms, elapsed)
                        .await
                        .unwrap_or(Disposition::Ack),
                    Err(disposition) => disposition,
                }
            }
        }
    }

    /// Appends the unrecorded start of a running attempt. A conflict means another delivery
    /// started it first: the log decides (an `Err` stops the handler and settles the message
    /// so). A failed append leaves the start unrecorded: it goes with the end, which is
    /// appended until the log takes it.
    async fn record_start(
        &self,
        message: &TaskMessage,
        receipt: &Receipt,
        started: &mut Started,
    ) -> Result<(), Disposition> {
        let from = started.version - started.unrecorded.len() as i64;
        match self.append(message, from, &started.unrecorded).await {
            Ok(()) => started.unrecorded.clear(),
            Err(LogError::Conflict { .. }) => {
                *started = self.start_from_log(message, receipt, false).await?;
            }
            Err(error) => {
                tracing::warn!(%error, "could not record the start of a running attempt; it goes with its end");
            }
        }
        Ok(())
    }

    /// Records the attempt's outcome (with its start, if that is unrecorded).
    async fn record_end(
        &self,
        message: &TaskMessage,
        receipt: &Receipt,
        started: Started,
        outcome: Result<Option<Value>, TaskError>,
        duration_ms: u64,
        elapsed: Duration,
    ) -> Result<Disposition, StartLost> {
        match outcome {
            Ok(result) => {
                self.complete(message, receipt, started, result, duration_ms, elapsed)
                    .await
            }
            Err(error) => self.fail(message, receipt, started, error, elapsed).await,
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
        receipt: &Receipt,
        started: Started,
        result: Option<Value>,
        duration_ms: u64,
        elapsed: Duration,
    ) -> Result<Disposition, StartLost> {
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
                return Ok(Disposition::Ack);
            }
        };
        let (from, events) = with_start(started.version, started.unrecorded, events);
        Ok(
            match self
                .append_durably(message, from, &events, Some(receipt))
                .await
            {
                Ok(acked) => {
                    WorkerMetrics::inc(&self.metrics.completed);
                    metrics().task_completed(&message.job_type, elapsed);
                    if acked {
                        Disposition::Done
                    } else {
                        Disposition::Ack
                    }
                }
                Err(LogError::Conflict { .. }) if from < started.version => return Err(StartLost),
                Err(LogError::Conflict { .. }) => {
                    tracing::info!("another worker recorded this attempt's end first");
                    WorkerMetrics::inc(&self.metrics.skipped_duplicates);
                    Disposition::Ack
                }
                Err(error) => {
                    tracing::warn!(%error, "could not append TaskCompleted");
                    Disposition::Release(RETRY_DELAY)
                }
            },
        )
    }

    async fn fail(
        &self,
        message: &TaskMessage,
        receipt: &Receipt,
        started: Started,
        error: TaskError,
        elapsed: Duration,
    ) -> Result<Disposition, StartLost> {
        tracing::info!(error = %error.message, retryable = error.retryable, "attempt failed");
        let Started {
            mut state,
            mut version,
            exact,
            unrecorded,
        } = started;
        // Only a first attempt runs before its start is recorded, and its state is exact.
        debug_assert!(exact || unrecorded.is_empty());
        if !exact {
            // The retry budget after a manual retry is in the stream, not in the message.
            match self.load(message.task_id).await {
                Ok(loaded) => (state, version) = loaded,
                Err(disposition) => return Ok(disposition),
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
                return Ok(Disposition::Ack);
            }
        };
        let (from, appended) = with_start(version, unrecorded, events.clone());
        match self.append_durably(message, from, &appended, None).await {
            Ok(_) => {}
            Err(LogError::Conflict { .. }) if from < version => return Err(StartLost),
            Err(LogError::Conflict { .. }) => {
                tracing::info!("another worker recorded this attempt's end first");
                WorkerMetrics::inc(&self.metrics.skipped_duplicates);
                return Ok(Disposition::Ack);
            }
            Err(error) => {
                tracing::warn!(%error, "could not append TaskFailed");
                return Ok(Disposition::Release(RETRY_DELAY));
            }
        }
        version += events.len() as i64;
        let state = events.iter().fold(state, evolve_task);
        metrics().task_failed(
            &message.job_type,
            elapsed,
            state.status != TaskStatus::Failed,
        );
        Ok(if state.status == TaskStatus::Failed {
            WorkerMetrics::inc(&self.metrics.failed);
            self.dead_letter_task(state, version, receipt, error.message)
                .await
        } else {
            WorkerMetrics::inc(&self.metrics.retried);
            Disposition::Ack
        })
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
                // Handled again, the delivery finds the task FAILED and dead-letters it then.
                tracing::warn!(%error, "could not dead-letter the message of a failed task");
                return Disposition::Hold;
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
                Disposition::Hold
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
        self.append_acking(message, expected_version, events, None)
            .await
            .map(|_| ())
    }

    /// [`Shared::append`]; with `ack`, the message is acknowledged in the same commit where
    /// the committer can (the queue is in the log's database): then `Ok(true)`.
    async fn append_acking(
        &self,
        message: &TaskMessage,
        expected_version: i64,
        events: &[Event],
        ack: Option<&Receipt>,
    ) -> Result<bool, LogError> {
        let batch = self.batch(
            TaskId::from_uuid(message.task_id),
            expected_version,
            events,
            message.traceparent.as_deref(),
        );
        let appended = match ack {
            Some(receipt) => self.committer.append_and_ack(batch, receipt).await,
            None => self.committer.append(batch).await.map(|_| false),
        };
        match &appended {
            Ok(_) | Err(LogError::Conflict { .. }) => self.health.succeeded(),
            Err(LogError::Database(_)) => self.health.failed(),
            Err(_) => {}
        }
        appended
    }

    /// [`Shared::append`] of an attempt's end, tried again while the log fails (the message
    /// stays hidden meanwhile): the handler ran, and running it again is what an outage must
    /// not cause. A retry after an append whose outcome was unknown may find it written:
    /// that is a `Conflict`, as when another holder recorded the end first.
    /// With `ack`, as [`Shared::append_acking`].
    async fn append_durably(
        &self,
        message: &TaskMessage,
        expected_version: i64,
        events: &[Event],
        ack: Option<&Receipt>,
    ) -> Result<bool, LogError> {
        let mut backoff = Duration::ZERO;
        loop {
            match self
                .append_acking(message, expected_version, events, ack)
                .await
            {
                Err(LogError::Database(error)) => {
                    WorkerMetrics::inc(&self.metrics.held_on_errors);
                    backoff = next_backoff(backoff);
                    tracing::warn!(%error, ?backoff, "could not record the attempt's end; trying again");
                    self.health.wait(backoff).await;
                }
                other => return other,
            }
        }
    }

    /// An append or a read of the log failed: a database error holds the delivery (see
    /// [`Disposition::Hold`]); an invalid append cannot succeed later, so the message is
    /// released for another try.
    fn log_failed(&self, error: &LogError, what: &str) -> Disposition {
        tracing::warn!(%error, "{what}");
        match error {
            LogError::Database(_) => {
                self.health.failed();
                Disposition::Hold
            }
            _ => Disposition::Release(RETRY_DELAY),
        }
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
        if let Some(attempt) = trace::current_traceparent() {
            // What the next attempt's span links to, if this one fails with a retry.
            metadata[trace::ATTEMPT_TRACEPARENT] = Value::String(attempt);
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
        let records = self
            .log
            .read_stream(&stream_id, 0)
            .await
            .map_err(|error| self.log_failed(&error, "could not read the task's stream"))?;
        self.health.succeeded();
        let version = records.last().map_or(0, |r| r.stream_version);
        let state = decode_all(&records)
            .iter()
            .fold(TaskState::default(), evolve_task);
        Ok((state, version))
    }
}

/// A first attempt's start, decided on the state its message implies (exact for a first
/// attempt) and not appended yet: see [`Started::unrecorded`].
fn first_start(message: &TaskMessage, worker: &str) -> Option<Started> {
    let implied = implied_state(message);
    let start = TaskCommand::StartTask {
        attempt: message.attempt,
        worker: worker.to_owned(),
        now: Utc::now(),
    };
    let events = decide_task(&implied, start).ok()?;
    // `stream_version` was checked to be far from overflowing.
    Some(Started {
        version: message.stream_version + events.len() as i64,
        state: events.iter().fold(implied, evolve_task),
        exact: true,
        unrecorded: events,
    })
}

/// An attempt's end, preceded by its start if that is unrecorded: the events to append and
/// the version to expect, given `version` (which counts the unrecorded start).
fn with_start(version: i64, unrecorded: Vec<Event>, end: Vec<Event>) -> (i64, Vec<Event>) {
    let from = version - unrecorded.len() as i64;
    if unrecorded.is_empty() {
        return (from, end);
    }
    (from, unrecorded.into_iter().chain(end).collect())
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
        fallback_handler: message.fallback_handler.clone(),
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
