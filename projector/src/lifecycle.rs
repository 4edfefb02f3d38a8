//! A job's own status as its stream says, folded the way `shoal_domain::evolve_job` folds it,
//! from the few fields the read tables keep (both projections share it).

use shoal_domain::{Event, JobStatus};

/// What a projection remembers of a job's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StreamState {
    pub status: JobStatus,
    pub total_tasks: u32,
    pub created_upto: u32,
}

impl StreamState {
    /// Applies a job event (task events and `JobSubmitted` change nothing here).
    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::TasksCreated(e) => {
                self.created_upto = self.created_upto.max(e.to_index);
                if matches!(self.status, JobStatus::Pending | JobStatus::CreatingTasks) {
                    self.status = if self.created_upto >= self.total_tasks {
                        JobStatus::Enqueued
                    } else {
                        JobStatus::CreatingTasks
                    };
                }
            }
            Event::JobCompleted(_) => self.status = JobStatus::Completed,
            Event::JobFailed(_) => self.status = JobStatus::Failed,
            Event::JobCancelled(_) => self.status = JobStatus::Cancelled,
            Event::JobRetryRequested(_) => {
                if matches!(self.status, JobStatus::Enqueued | JobStatus::Failed) {
                    self.status = JobStatus::Running;
                }
            }
            Event::JobSubmitted(_)
            | Event::TaskEnqueued(_)
            | Event::TaskStarted(_)
            | Event::TaskCompleted(_)
            | Event::TaskFailed(_)
            | Event::TaskRetryScheduled(_)
            | Event::TaskDeadLettered(_)
            | Event::JobExecutionStarted(_)
            | Event::JobStepStarted(_)
            | Event::JobStepSucceeded(_)
            | Event::JobStepRetried(_)
            | Event::JobStepFailed(_) => {}
        }
    }
}

/// The status read models show: an ENQUEUED job whose tasks have started is RUNNING (the same
/// rule as `JobProgress::displayed_status`).
pub(crate) fn displayed(stream_status: JobStatus, started: bool) -> JobStatus {
    if stream_status == JobStatus::Enqueued && started {
        JobStatus::Running
    } else {
        stream_status
    }
}
