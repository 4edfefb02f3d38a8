//! The GraphQL types of the dead-letter query and redrive mutation.

use async_graphql::{ID, SimpleObject};
use chrono::{DateTime, Utc};

use crate::commands::RedriveOutcome;

/// Characters of a dead letter's body shown in `bodyPreview`.
pub const BODY_PREVIEW_CHARS: usize = 200;

/// A message in the task queue's dead-letter queue.
#[derive(Debug, SimpleObject)]
pub struct DeadLetter {
    /// The dead letter's id in its queue (an SQS receipt handle, valid for a short while, or a
    /// row id).
    pub id: ID,
    /// Its job, when the message names one.
    pub job_id: Option<ID>,
    /// Its task, when the message names one (a poison message may not).
    pub task_id: Option<ID>,
    /// Why it was dead-lettered.
    pub reason: String,
    /// When it was dead-lettered.
    pub dead_lettered_at: DateTime<Utc>,
    /// The start of the message body.
    pub body_preview: String,
}

impl From<shoal_infra::queue::DeadLetter> for DeadLetter {
    fn from(letter: shoal_infra::queue::DeadLetter) -> Self {
        DeadLetter {
            id: ID(letter.id),
            job_id: letter.job_id.map(|id| ID(id.to_string())),
            task_id: letter.task_id.map(|id| ID(id.to_string())),
            reason: letter.reason,
            dead_lettered_at: letter.dead_lettered_at,
            body_preview: letter.raw.chars().take(BODY_PREVIEW_CHARS).collect(),
        }
    }
}

/// What `redriveDeadLetters` did.
#[derive(Debug, SimpleObject)]
pub struct RedriveResult {
    /// FAILED tasks scheduled for another attempt (each gets a new message).
    pub redriven: u32,
    /// Messages of tasks still waiting to run sent back to the queue as they were.
    pub resent: u32,
    /// Dead letters removed from the dead-letter queue (redriven, resent or obsolete).
    pub removed: u32,
    /// Dead letters left in place: poison messages without a task, unknown tasks, cancelled
    /// jobs, running tasks.
    pub skipped: u32,
}

impl From<RedriveOutcome> for RedriveResult {
    fn from(outcome: RedriveOutcome) -> Self {
        RedriveResult {
            redriven: outcome.redriven,
            resent: outcome.resent,
            removed: outcome.removed,
            skipped: outcome.skipped,
        }
    }
}
