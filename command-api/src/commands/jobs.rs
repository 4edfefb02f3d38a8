//! The job commands: submit, cancel, retry the failed tasks; and a job as its stream tells it.

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use shoal_domain::admission::{JobConcurrency, decide_job_concurrency};
use shoal_domain::priority::DEFAULT_PRIORITY;
use shoal_domain::{
    Event, JobCommand, JobId, JobState, SubmitJob, TaskCommand, TaskId, TaskStatus, decide_job,
    decide_task,
};
use shoal_infra::eventlog::{AppendBatch, ExpectedVersion, LogError, NewEvent, StreamAppend};

use super::input::{check_no_nul, submit_key};
use super::streams::{JobStream, LoadedTask, decode, encode_all, fold_tasks};
use super::{
    CONFLICT_ATTEMPTS, CommandError, CommandService, InfrastructureError, JobSnapshot,
    SubmitJobInput,
};
#[cfg(doc)]
use shoal_domain::Rejection;

/// Longest cancellation reason, in characters.
pub const MAX_REASON_CHARS: usize = 2_000;

/// An accepted submission.
#[derive(Debug, Clone, PartialEq)]
pub struct SubmittedJob {
    /// The job as its stream now is: PENDING for a new job; for a replay, the first job as it
    /// is now (the orchestrator may have moved it on).
    pub job: JobSnapshot,
    /// True when the idempotency key had been used: nothing was appended and `job` is the job
    /// of the first submission.
    pub replayed: bool,
}

/// What a retry of a job's failed tasks did.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryOutcome {
    /// The job.
    pub job_id: JobId,
    /// How many FAILED tasks were scheduled for another attempt.
    pub retried_tasks: u32,
    /// The job after the retry request.
    pub job: JobSnapshot,
}

impl CommandService {
    /// Accepts a job: one `JobSubmitted` in a new stream `job-<id>`, with a fresh v7 id.
    ///
    /// It never waits for tasks: a job of a million tasks is one event, and the orchestrator
    /// expands it afterwards. With an idempotency key that was used before, nothing is
    /// appended and the first job is returned (`replayed`).
    ///
    /// A priority other than the default is given to the task queue before the append (see
    /// [`CommandService::set_job_priority`]), so that the job's first tasks are queued with it.
    pub async fn submit_job(&self, input: SubmitJobInput) -> Result<SubmittedJob, CommandError> {
        self.submit_job_with(input, JobConcurrency::default()).await
    }

    /// [`CommandService::submit_job`] with the job's own concurrency settings
    /// (`maxConcurrency`, `concurrencyKey`): a `JobConcurrencySet` appended with the
    /// `JobSubmitted` when any is given. Errors: a limit out of range or a key that names no
    /// scalar parameter of the job ([`Rejection::InvalidLimit`]).
    #[tracing::instrument(name = "command.submit_job", skip_all, fields(job_type = %input.job_type))]
    pub async fn submit_job_with(
        &self,
        input: SubmitJobInput,
        concurrency: JobConcurrency,
    ) -> Result<SubmittedJob, CommandError> {
        check_no_nul(&input)?;
        if concurrency
            .concurrency_key
            .as_deref()
            .is_some_and(|key| key.contains('\0'))
        {
            return Err(CommandError::invalid(
                "concurrency_key",
                "concurrency_key must not contain NUL characters",
            ));
        }
        let idempotency_key = match input.idempotency_key {
            Some(key) => Some(submit_key(&key)?),
            None => None,
        };
        let job_id = JobId::new();
        let mut events = decide_job(
            &JobState::default(),
            JobCommand::SubmitJob(SubmitJob {
                job_id,
                job_type: input.job_type,
                split: input.split,
                parameters: input.parameters,
                max_attempts: input.max_attempts,
                timeout_seconds: input.timeout_seconds,
                limits: self.limits,
                now: Utc::now(),
                fallback_handler: input.fallback_handler,
                priority: input.priority.unwrap_or(i64::from(DEFAULT_PRIORITY)),
            }),
        )?;
        if let Some(Event::JobSubmitted(submitted)) = events.first() {
            let settings = decide_job_concurrency(submitted, concurrency)?;
            events.extend(settings);
        }
        if let Some(Event::JobSubmitted(submitted)) = events.first()
            && submitted.priority != DEFAULT_PRIORITY
        {
            self.queue_priority(job_id, submitted.priority).await?;
        }
        let outcome = self
            .log
            .append(AppendBatch {
                streams: vec![StreamAppend {
                    stream_id: job_id.stream_id(),
                    expected: ExpectedVersion::NoStream,
                    events: encode_all(&events, "submit_job", self.actor()),
                }],
                idempotency_key,
                checkpoint: None,
            })
            .await?;
        if outcome.replayed {
            let first_job = self.job_of_first_submission(&outcome.positions).await?;
            tracing::debug!(job_id = %first_job, "idempotent submission replayed");
            let job = self.load_job(first_job).await?.snapshot(first_job)?;
            return Ok(SubmittedJob {
                job,
                replayed: true,
            });
        }
        let mut job = JobStream::default();
        for (version, event) in (1..).zip(&events) {
            job.apply(event, version);
        }
        Ok(SubmittedJob {
            job: job.snapshot(job_id)?,
            replayed: false,
        })
    }

    /// Cancels a live job: `JobCancelled`. No further tasks are created; tasks already queued
    /// are left to the orchestrator and workers.
    ///
    /// Errors: unknown job ([`CommandError::NotFound`]); an ended or already cancelled job
    /// ([`Rejection::JobTransition`], [`Rejection::JobAlreadyCancelled`]).
    #[tracing::instrument(name = "command.cancel_job", skip_all, fields(job_id = %job_id))]
    pub async fn cancel_job(
        &self,
        job_id: JobId,
        reason: Option<String>,
    ) -> Result<JobSnapshot, CommandError> {
        if let Some(reason) = &reason {
            if reason.contains('\0') {
                return Err(CommandError::invalid(
                    "reason",
                    "reason must not contain NUL characters",
                ));
            }
            if reason.chars().count() > MAX_REASON_CHARS {
                return Err(CommandError::invalid(
                    "reason",
                    format!("reason must be at most {MAX_REASON_CHARS} characters"),
                ));
            }
        }
        for _ in 0..CONFLICT_ATTEMPTS {
            let mut job = self.load_job(job_id).await?;
            let events = decide_job(
                &job.state,
                JobCommand::CancelJob {
                    reason: reason.clone(),
                    now: Utc::now(),
                },
            )?;
            match self
                .append_to_job(
                    &job,
                    encode_all(&events, "cancel_job", self.actor()),
                    Vec::new(),
                )
                .await
            {
                Ok(()) => {
                    for event in &events {
                        job.apply(event, job.version + 1);
                    }
                    return job.snapshot(job_id);
                }
                Err(CommandError::Conflict) => continue,
                Err(other) => return Err(other),
            }
        }
        Err(CommandError::Conflict)
    }

    /// Changes a live job's priority: `JobPriorityChanged` in its stream (recorded with the
    /// actor), then the order of its tasks in the queue, those waiting now and those queued
    /// later (see [`shoal_infra::queue::TaskQueue::set_priority`]).
    ///
    /// Idempotent: asking for the priority the job already has appends nothing, and applies it
    /// to the queue again (which repairs the queue's order should an earlier request have
    /// failed between its append and the queue).
    ///
    /// Errors: unknown job ([`CommandError::NotFound`]); a priority out of range
    /// ([`Rejection::PriorityOutOfRange`]); an ended job, COMPLETED, FAILED or CANCELLED
    /// ([`Rejection::JobTransition`]).
    #[tracing::instrument(
        name = "command.set_job_priority",
        skip_all,
        fields(job_id = %job_id, priority)
    )]
    pub async fn set_job_priority(
        &self,
        job_id: JobId,
        priority: i64,
    ) -> Result<JobSnapshot, CommandError> {
        for _ in 0..CONFLICT_ATTEMPTS {
            let mut job = self.load_job(job_id).await?;
            let events = decide_job(
                &job.state,
                JobCommand::ChangePriority {
                    priority,
                    now: Utc::now(),
                },
            )?;
            if !events.is_empty() {
                match self
                    .append_to_job(
                        &job,
                        encode_all(&events, "set_job_priority", self.actor()),
                        Vec::new(),
                    )
                    .await
                {
                    Ok(()) => {}
                    Err(CommandError::Conflict) => continue,
                    Err(other) => return Err(other),
                }
                for event in &events {
                    job.apply(event, job.version + 1);
                }
            }
            self.queue_priority(job_id, job.state.priority).await?;
            return job.snapshot(job_id);
        }
        Err(CommandError::Conflict)
    }

    /// Gives the task queue the job's priority; nothing without a queue.
    async fn queue_priority(&self, job_id: JobId, priority: i32) -> Result<(), CommandError> {
        if let Some(queue) = &self.queue {
            queue
                .set_priority(job_id.as_uuid(), priority)
                .await
                .map_err(|e| CommandError::Infrastructure(InfrastructureError::Queue(e)))?;
        }
        Ok(())
    }

    /// Retries every FAILED task of a job: a manual `TaskRetryScheduled` (fresh attempt budget,
    /// due now) in each failed task's stream, and one `JobRetryRequested` in the job's stream.
    /// The orchestrator relays the retries to the queue and the job runs again.
    ///
    /// The failed tasks are found through the log's index of final failures by job, and read
    /// a page (the chunk size) at a time: a first pass counts them (the request records how
    /// many), a second retries them, one append per page. Memory is bounded by a page, and
    /// only tasks that ever failed for good are read, however big the job. The first append
    /// also carries `JobRetryRequested` at the job stream's version, so two concurrent requests
    /// cannot both retry the same tasks.
    ///
    /// Errors: unknown job ([`CommandError::NotFound`]); no failed task
    /// ([`Rejection::NothingToRetry`]); a job in a status that cannot retry (PENDING,
    /// COMPLETED, CANCELLED: [`Rejection::JobTransition`]).
    #[tracing::instrument(name = "command.retry_failed_tasks", skip_all, fields(job_id = %job_id))]
    pub async fn retry_failed_tasks(&self, job_id: JobId) -> Result<RetryOutcome, CommandError> {
        for _ in 0..CONFLICT_ATTEMPTS {
            let mut job = self.load_job(job_id).await?;
            let failed_count = self.count_failed_tasks(job_id).await?;
            let now = Utc::now();
            let job_events = decide_job(
                &job.state,
                JobCommand::RequestRetry {
                    failed_tasks: failed_count,
                    now,
                },
            )?;
            let (first, mut next) = self.failed_page(job_id, None).await?;
            match self
                .append_to_job(
                    &job,
                    encode_all(&job_events, "retry_failed_tasks", self.actor()),
                    retry_appends(&first, now, "retry_failed_tasks", self.actor())?,
                )
                .await
            {
                Ok(()) => {}
                Err(CommandError::Conflict) => continue,
                Err(other) => return Err(other),
            }
            for event in &job_events {
                job.apply(event, job.version + 1);
            }
            let mut retried = first.len();
            while let Some(after) = next {
                let (page, following) = self.failed_page(job_id, Some(after)).await?;
                retried += self.retry_chunk(&page).await?;
                next = following;
            }
            return Ok(RetryOutcome {
                job_id,
                retried_tasks: u32::try_from(retried).unwrap_or(u32::MAX),
                job: job.snapshot(job_id)?,
            });
        }
        Err(CommandError::Conflict)
    }

    /// How many of the job's tasks are FAILED now, counted a page at a time.
    async fn count_failed_tasks(&self, job_id: JobId) -> Result<u32, CommandError> {
        let mut count = 0usize;
        let mut next = None;
        loop {
            let (page, following) = self.failed_page(job_id, next).await?;
            count += page.len();
            match following {
                Some(after) => next = Some(after),
                None => break,
            }
        }
        u32::try_from(count).map_err(|_| CommandError::inconsistent("more failed tasks than u32"))
    }

    /// The next FAILED tasks of a job after the task stream `after` (at most a chunk), and
    /// where the following page starts (`None`: no more). Candidates come from the log's index
    /// of final failures; each is read and folded, and those no longer FAILED (retried,
    /// completed since) are left out.
    pub(super) async fn failed_page(
        &self,
        job_id: JobId,
        mut after: Option<String>,
    ) -> Result<(Vec<LoadedTask>, Option<String>), CommandError> {
        let page = i64::try_from(self.chunk_size).unwrap_or(i64::MAX);
        loop {
            let streams = self
                .log
                .job_failed_task_streams(job_id.as_uuid(), after.as_deref(), page)
                .await?;
            let next = (streams.len() >= self.chunk_size)
                .then(|| streams.last().cloned())
                .flatten();
            let recorded = self.log.read_streams(&streams).await?;
            let failed: Vec<LoadedTask> = fold_tasks(&recorded)?
                .into_iter()
                .filter(|task| task.state.status == TaskStatus::Failed)
                .collect();
            if !failed.is_empty() || next.is_none() {
                return Ok((failed, next));
            }
            after = next;
        }
    }

    /// The job as its stream tells it ([`CommandError::NotFound`] when it does not exist).
    pub async fn job_snapshot(&self, job_id: JobId) -> Result<JobSnapshot, CommandError> {
        self.load_job(job_id).await?.snapshot(job_id)
    }

    /// Reads and folds a job stream; `NotFound` when it is empty.
    pub(super) async fn load_job(&self, job_id: JobId) -> Result<JobStream, CommandError> {
        let recorded = self.log.read_stream(&job_id.stream_id(), 0).await?;
        if recorded.is_empty() {
            return Err(CommandError::not_found(job_id));
        }
        let mut job = JobStream::default();
        for record in &recorded {
            job.apply(&decode(record)?, record.stream_version);
        }
        Ok(job)
    }

    /// Appends `job_events` to the job stream at the version it was loaded at, together with
    /// `tasks` (other streams), in one transaction.
    pub(super) async fn append_to_job(
        &self,
        job: &JobStream,
        job_events: Vec<NewEvent>,
        mut tasks: Vec<StreamAppend>,
    ) -> Result<(), CommandError> {
        let job_id = job
            .state
            .job_id()
            .ok_or_else(|| CommandError::inconsistent("job stream without JobSubmitted"))?;
        let mut streams = vec![StreamAppend {
            stream_id: job_id.stream_id(),
            expected: ExpectedVersion::Exact(job.version),
            events: job_events,
        }];
        streams.append(&mut tasks);
        self.log
            .append(AppendBatch {
                streams,
                idempotency_key: None,
                checkpoint: None,
            })
            .await?;
        Ok(())
    }

    /// The FAILED tasks among `task_ids`, with their stream versions, in index order.
    async fn failed_tasks(&self, task_ids: &[TaskId]) -> Result<Vec<LoadedTask>, CommandError> {
        let chunks: Vec<Vec<String>> = task_ids
            .chunks(self.chunk_size)
            .map(|chunk| chunk.iter().map(TaskId::stream_id).collect())
            .collect();
        let loaded: Vec<Vec<LoadedTask>> = futures::stream::iter(chunks)
            .map(|stream_ids| async move {
                let recorded = self.log.read_streams(&stream_ids).await?;
                fold_tasks(&recorded)
            })
            .buffered(4)
            .try_collect()
            .await?;
        Ok(loaded
            .into_iter()
            .flatten()
            .filter(|task| task.state.status == TaskStatus::Failed)
            .collect())
    }

    /// Retries the tasks of `chunk` that are still FAILED, in one append; on a conflict
    /// (a task changed meanwhile, e.g. was dead-lettered), re-reads them and tries again.
    /// Returns how many were retried.
    async fn retry_chunk(&self, chunk: &[LoadedTask]) -> Result<usize, CommandError> {
        let mut pending = chunk.to_vec();
        for _ in 0..CONFLICT_ATTEMPTS {
            if pending.is_empty() {
                return Ok(0);
            }
            let now = Utc::now();
            let streams = retry_appends(&pending, now, "retry_failed_tasks", self.actor())?;
            match self
                .log
                .append(AppendBatch {
                    streams,
                    idempotency_key: None,
                    checkpoint: None,
                })
                .await
            {
                Ok(_) => return Ok(pending.len()),
                Err(LogError::Conflict { .. }) => {
                    let ids: Vec<TaskId> = pending.iter().map(|task| task.task_id).collect();
                    pending = self.failed_tasks(&ids).await?;
                }
                Err(other) => return Err(other.into()),
            }
        }
        Err(CommandError::Conflict)
    }

    /// The job id of the `JobSubmitted` a replayed submission's first append wrote.
    async fn job_of_first_submission(&self, positions: &[i64]) -> Result<JobId, CommandError> {
        let first = positions
            .first()
            .ok_or_else(|| CommandError::inconsistent("replayed append without positions"))?;
        let recorded = self.log.read_positions(&[*first]).await?;
        let record = recorded.first().ok_or_else(|| {
            CommandError::inconsistent(format!("replayed append's event {first} is missing"))
        })?;
        match decode(record)? {
            Event::JobSubmitted(e) => Ok(e.job_id),
            other => Err(CommandError::inconsistent(format!(
                "a submission's idempotency key points at a {} event",
                other.event_type()
            ))),
        }
    }
}

/// One append per task: its manual `TaskRetryScheduled`, at the version it was read at,
/// recorded as `command` by `actor`.
pub(super) fn retry_appends(
    tasks: &[LoadedTask],
    now: DateTime<Utc>,
    command: &str,
    actor: Option<&str>,
) -> Result<Vec<StreamAppend>, CommandError> {
    tasks
        .iter()
        .map(|task| {
            let events = decide_task(&task.state, TaskCommand::RetryTask { now })?;
            Ok(StreamAppend {
                stream_id: task.task_id.stream_id(),
                expected: ExpectedVersion::Exact(task.version),
                events: encode_all(&events, command, actor),
            })
        })
        .collect()
}
