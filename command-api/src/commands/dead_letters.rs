//! Dead letters: listing the task queue's dead-letter queue, and redriving it through the log.
//!
//! A redrive never puts a dead letter back on the queue by itself for a FAILED task: it appends
//! the domain's manual retry (`TaskRetryScheduled { manual: true }`, and `JobRetryRequested` when
//! the job is FAILED), the orchestrator relays a new message for the new attempt, and the dead
//! letter is then removed. So the task's history shows what happened: `TaskDeadLettered`, ...,
//! `TaskRetryScheduled { manual }`, ..., `TaskCompleted`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use shoal_domain::{JobCommand, JobId, JobStatus, TaskId, TaskStatus, decide_job};
use shoal_infra::eventlog::AppendBatch;
use shoal_infra::queue::{DeadLetter, OutgoingMessage, QueueError, TaskMessage, TaskQueue};
use uuid::Uuid;

use super::jobs::retry_appends;
use super::streams::{LoadedTask, encode_all, fold_tasks};
use super::{CONFLICT_ATTEMPTS, CommandError, CommandService, InfrastructureError};

/// Dead letters listed when no limit is given.
pub const DEFAULT_DEAD_LETTER_LIMIT: u32 = 100;
/// Most dead letters listed, and handled by one redrive (run it again for more).
pub const MAX_DEAD_LETTER_LIMIT: u32 = 1_000;

/// The command name in the metadata of the events a redrive appends.
const COMMAND: &str = "redrive_dead_letters";

/// What a redrive did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RedriveOutcome {
    /// FAILED tasks scheduled for another attempt (a manual `TaskRetryScheduled`); the
    /// orchestrator relays a new message for each.
    pub redriven: u32,
    /// Messages of tasks still waiting to run (ENQUEUED or RETRYING, e.g. moved to the DLQ
    /// after too many receives) sent back to the queue as they were.
    pub resent: u32,
    /// Dead letters removed from the dead-letter queue: those redriven or resent, and those
    /// whose task has completed or been retried since (obsolete).
    pub removed: u32,
    /// Dead letters left where they are: messages without a task (poison messages), of a task
    /// the log does not know, of a cancelled job, or of a task running now.
    pub skipped: u32,
}

impl CommandService {
    /// The dead letters of the task queue, oldest first, optionally of one job; at most
    /// `limit` (capped at [`MAX_DEAD_LETTER_LIMIT`]).
    ///
    /// Errors: the queue failed, or the service has no queue ([`CommandError::Infrastructure`]).
    #[tracing::instrument(name = "command.dead_letters", skip_all)]
    pub async fn dead_letters(
        &self,
        job_id: Option<JobId>,
        limit: u32,
    ) -> Result<Vec<DeadLetter>, CommandError> {
        let limit = limit.min(MAX_DEAD_LETTER_LIMIT);
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.task_queue()?
            .dead_letters(job_id.map(Uuid::from), i64::from(limit))
            .await
            .map_err(queue_error)
    }

    /// Sends dead letters (of one job, or all) back through the log; see [`RedriveOutcome`]
    /// for what happens to each. Handles at most [`MAX_DEAD_LETTER_LIMIT`] dead letters per
    /// call. Safe to run twice or concurrently: a task is retried only while it is FAILED (an
    /// append at its stream version), and a dead letter is removed only once its task no
    /// longer needs it.
    ///
    /// Errors: the log or the queue failed, or the service has no queue
    /// ([`CommandError::Infrastructure`]); other writers kept changing a job
    /// ([`CommandError::Conflict`]: run it again).
    pub async fn redrive_dead_letters(
        &self,
        job_id: Option<JobId>,
    ) -> Result<RedriveOutcome, CommandError> {
        self.redrive_dead_letters_of(job_id, None).await
    }

    /// [`CommandService::redrive_dead_letters`] of a selection: only the dead letters of the
    /// tasks in `tasks` (all when `None`); the others stay where they are and are not counted.
    #[tracing::instrument(name = "command.redrive_dead_letters", skip_all)]
    pub async fn redrive_dead_letters_of(
        &self,
        job_id: Option<JobId>,
        tasks: Option<&HashSet<TaskId>>,
    ) -> Result<RedriveOutcome, CommandError> {
        let queue = self.task_queue()?.clone();
        let mut letters = queue
            .dead_letters(job_id.map(Uuid::from), i64::from(MAX_DEAD_LETTER_LIMIT))
            .await
            .map_err(queue_error)?;
        if let Some(tasks) = tasks {
            letters.retain(|letter| {
                letter
                    .task_id
                    .is_some_and(|id| tasks.contains(&TaskId::from_uuid(id)))
            });
        }
        let mut outcome = RedriveOutcome::default();

        let mut by_task: HashMap<TaskId, Vec<&DeadLetter>> = HashMap::new();
        for letter in &letters {
            match letter.task_id {
                Some(task_id) => by_task
                    .entry(TaskId::from_uuid(task_id))
                    .or_default()
                    .push(letter),
                None => outcome.skipped += 1,
            }
        }
        let task_ids: Vec<TaskId> = by_task.keys().copied().collect();
        let loaded: HashMap<TaskId, LoadedTask> = self
            .load_tasks(&task_ids)
            .await?
            .into_iter()
            .map(|task| (task.task_id, task))
            .collect();

        let mut failed_by_job: HashMap<JobId, Vec<TaskId>> = HashMap::new();
        let mut removable: Vec<String> = Vec::new();
        let mut resend: Vec<OutgoingMessage> = Vec::new();
        for (task_id, letters) in &by_task {
            let ids = letters.iter().map(|letter| letter.id.clone());
            let Some(task) = loaded.get(task_id) else {
                outcome.skipped += count(letters.len());
                continue;
            };
            match task.state.status {
                TaskStatus::Failed => match task.state.enqueued.as_ref() {
                    Some(enqueued) => failed_by_job
                        .entry(enqueued.job_id)
                        .or_default()
                        .push(*task_id),
                    None => outcome.skipped += count(letters.len()),
                },
                TaskStatus::Completed => removable.extend(ids),
                TaskStatus::Enqueued | TaskStatus::Retrying => {
                    // The message of the attempt the task waits for, if a dead letter has it.
                    let message = letters
                        .iter()
                        .filter_map(|letter| serde_json::from_str::<TaskMessage>(&letter.raw).ok())
                        .find(|message| message.attempt == task.state.attempt);
                    match message {
                        Some(body) => {
                            resend.push(OutgoingMessage {
                                body,
                                delay: Duration::ZERO,
                            });
                            removable.extend(ids);
                        }
                        None => outcome.skipped += count(letters.len()),
                    }
                }
                TaskStatus::Running | TaskStatus::Pending => {
                    outcome.skipped += count(letters.len());
                }
            }
        }

        for (job_id, task_ids) in failed_by_job {
            let (retried, done) = self.redrive_job(job_id, &task_ids).await?;
            outcome.redriven += count(retried);
            for task_id in &task_ids {
                let letters = &by_task[task_id];
                if done.contains(task_id) {
                    removable.extend(letters.iter().map(|letter| letter.id.clone()));
                } else {
                    outcome.skipped += count(letters.len());
                }
            }
        }

        if !resend.is_empty() {
            outcome.resent = count(resend.len());
            queue.send(resend).await.map_err(queue_error)?;
        }
        if !removable.is_empty() {
            queue
                .remove_dead_letters(&removable)
                .await
                .map_err(queue_error)?;
            outcome.removed = count(removable.len());
        }
        tracing::info!(?outcome, "dead letters redriven");
        Ok(outcome)
    }

    /// Retries the tasks of `task_ids` (of `job_id`) that are FAILED, with `JobRetryRequested`
    /// when the job is FAILED, in one append. Returns how many it retried and the tasks whose
    /// dead letters are no longer needed (retried now or since); a cancelled or unknown job
    /// retries nothing.
    async fn redrive_job(
        &self,
        job_id: JobId,
        task_ids: &[TaskId],
    ) -> Result<(usize, HashSet<TaskId>), CommandError> {
        for _ in 0..CONFLICT_ATTEMPTS {
            let job = match self.load_job(job_id).await {
                Ok(job) => job,
                Err(CommandError::NotFound(_)) => return Ok((0, HashSet::new())),
                Err(other) => return Err(other),
            };
            if job.state.status == JobStatus::Cancelled {
                return Ok((0, HashSet::new()));
            }
            let tasks = self.load_tasks(task_ids).await?;
            let (failed, others): (Vec<LoadedTask>, Vec<LoadedTask>) = tasks
                .into_iter()
                .partition(|task| task.state.status == TaskStatus::Failed);
            let mut done: HashSet<TaskId> = others
                .iter()
                .filter(|task| task.state.status != TaskStatus::Running)
                .map(|task| task.task_id)
                .collect();
            if failed.is_empty() {
                return Ok((0, done));
            }
            let now = Utc::now();
            let streams = retry_appends(&failed, now, COMMAND, self.actor())?;
            let appended = if job.state.status == JobStatus::Failed {
                let job_events = decide_job(
                    &job.state,
                    JobCommand::RequestRetry {
                        failed_tasks: count(failed.len()),
                        now,
                    },
                )?;
                self.append_to_job(
                    &job,
                    encode_all(&job_events, COMMAND, self.actor()),
                    streams,
                )
                .await
            } else {
                self.log
                    .append(AppendBatch {
                        streams,
                        idempotency_key: None,
                        checkpoint: None,
                    })
                    .await
                    .map(|_| ())
                    .map_err(CommandError::from)
            };
            match appended {
                Ok(()) => {
                    done.extend(failed.iter().map(|task| task.task_id));
                    return Ok((failed.len(), done));
                }
                Err(CommandError::Conflict) => continue,
                Err(other) => return Err(other),
            }
        }
        Err(CommandError::Conflict)
    }

    /// Reads and folds the task streams of `task_ids` (those that exist).
    async fn load_tasks(&self, task_ids: &[TaskId]) -> Result<Vec<LoadedTask>, CommandError> {
        let mut tasks = Vec::with_capacity(task_ids.len());
        for chunk in task_ids.chunks(self.chunk_size) {
            let stream_ids: Vec<String> = chunk.iter().map(TaskId::stream_id).collect();
            let recorded = self.log.read_streams(&stream_ids).await?;
            tasks.extend(fold_tasks(&recorded)?);
        }
        Ok(tasks)
    }

    fn task_queue(&self) -> Result<&Arc<dyn TaskQueue>, CommandError> {
        self.queue
            .as_ref()
            .ok_or(CommandError::Infrastructure(InfrastructureError::NoQueue))
    }
}

fn queue_error(error: QueueError) -> CommandError {
    CommandError::Infrastructure(InfrastructureError::Queue(error))
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
