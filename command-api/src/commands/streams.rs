//! Streams folded from the log: a job's and a task's, with what their snapshots need beyond
//! the domain's state, and the decoding and encoding of their events.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::json;
use shoal_domain::{
    Event, JobId, JobState, Split, TaskCommand, TaskId, TaskState, TaskView, decide_task,
    evolve_job, evolve_task,
};
use shoal_infra::eventlog::{NewEvent, RecordedEvent};

use super::tasks::EXTERNAL_WORKER;
use super::{CommandError, InfrastructureError, JobSnapshot, TaskSnapshot};

/// A job stream folded, with what [`JobSnapshot`] needs beyond [`JobState`].
#[derive(Debug, Default)]
pub(super) struct JobStream {
    pub(super) state: JobState,
    pub(super) version: i64,
    pub(super) updated_at: Option<DateTime<Utc>>,
    pub(super) ended_at: Option<DateTime<Utc>>,
    pub(super) cancel_reason: Option<String>,
}

impl JobStream {
    pub(super) fn apply(&mut self, event: &Event, version: i64) {
        self.state = evolve_job(std::mem::take(&mut self.state), event);
        self.version = version;
        self.updated_at = Some(event.at());
        match event {
            Event::JobCompleted(e) => self.ended_at = Some(e.at),
            Event::JobFailed(e) => self.ended_at = Some(e.at),
            Event::JobCancelled(e) => {
                self.ended_at = Some(e.at);
                self.cancel_reason.clone_from(&e.reason);
            }
            Event::JobRetryRequested(_) => self.ended_at = None,
            _ => {}
        }
    }

    pub(super) fn snapshot(&self, job_id: JobId) -> Result<JobSnapshot, CommandError> {
        let job = self.state.submitted.as_ref().ok_or_else(|| {
            CommandError::inconsistent(format!("stream of job {job_id} has no JobSubmitted"))
        })?;
        Ok(JobSnapshot {
            job_id: job.job_id,
            job_type: job.job_type.clone(),
            status: self.state.status,
            total_tasks: job.total_tasks,
            tasks_created: self.state.created_upto,
            batch_size: match &job.split {
                Split::Items { batch_size, .. } => Some(*batch_size),
                Split::Total { .. } => None,
            },
            parameters: job.parameters.clone(),
            max_attempts: job.max_attempts,
            timeout_seconds: job.timeout_seconds,
            submitted_at: job.submitted_at,
            updated_at: self.updated_at.unwrap_or(job.submitted_at),
            ended_at: self.ended_at,
            cancel_reason: self.cancel_reason.clone(),
            priority: self.state.priority,
            version: self.version,
        })
    }
}

/// A task stream folded twice: the aggregate's [`TaskState`] to decide with, and the domain's
/// [`TaskView`] (the projection's fold) for [`TaskSnapshot`].
#[derive(Debug, Default)]
pub(super) struct TaskStream {
    pub(super) state: TaskState,
    pub(super) view: Option<TaskView>,
    pub(super) version: i64,
}

impl TaskStream {
    pub(super) fn apply(&mut self, event: &Event, version: i64) {
        self.state = evolve_task(std::mem::take(&mut self.state), event);
        self.view = TaskView::evolve(self.view.take(), event);
        self.version = version;
    }

    /// `TaskStarted` of the current attempt by an external worker.
    pub(super) fn start(&self, now: DateTime<Utc>) -> Result<Event, CommandError> {
        let mut events = decide_task(
            &self.state,
            TaskCommand::StartTask {
                attempt: self.state.attempt,
                worker: EXTERNAL_WORKER.to_owned(),
                now,
            },
        )?;
        events
            .pop()
            .ok_or_else(|| CommandError::inconsistent("StartTask decided no event"))
    }

    pub(super) fn snapshot(&self) -> Result<TaskSnapshot, CommandError> {
        let task = self
            .view
            .as_ref()
            .ok_or_else(|| CommandError::inconsistent("task stream without TaskEnqueued"))?;
        Ok(TaskSnapshot {
            task_id: task.task_id,
            job_id: task.job_id,
            index: task.index,
            status: task.status,
            attempt: task.attempt,
            max_attempts: task.max_attempts,
            parameters: task.parameters.clone(),
            result: task.result.clone(),
            error_message: task.error_message.clone(),
            worker: task.worker.clone(),
            created_at: task.created_at,
            updated_at: task.updated_at,
            started_at: task.started_at,
            completed_at: task.completed_at,
            duration_ms: task.duration_ms,
            version: self.version,
        })
    }
}

/// A task stream folded, at its version.
#[derive(Debug, Clone)]
pub(super) struct LoadedTask {
    pub(super) task_id: TaskId,
    pub(super) state: TaskState,
    pub(super) version: i64,
}

/// Folds the events of several task streams (grouped by stream, as `read_streams` returns
/// them), in stream order.
pub(super) fn fold_tasks(recorded: &[RecordedEvent]) -> Result<Vec<LoadedTask>, CommandError> {
    let mut tasks: Vec<LoadedTask> = Vec::new();
    let mut index_of: HashMap<&str, usize> = HashMap::new();
    for record in recorded {
        let event = decode(record)?;
        let slot = match index_of.get(record.stream_id.as_str()) {
            Some(&slot) => slot,
            None => {
                let task_id = event.task_id().ok_or_else(|| {
                    CommandError::inconsistent(format!(
                        "task stream {} holds a {} event",
                        record.stream_id,
                        event.event_type()
                    ))
                })?;
                tasks.push(LoadedTask {
                    task_id,
                    state: TaskState::default(),
                    version: 0,
                });
                index_of.insert(&record.stream_id, tasks.len() - 1);
                tasks.len() - 1
            }
        };
        let task = &mut tasks[slot];
        task.state = evolve_task(std::mem::take(&mut task.state), &event);
        task.version = record.stream_version;
    }
    Ok(tasks)
}

pub(super) fn decode(record: &RecordedEvent) -> Result<Event, CommandError> {
    Event::decode(&record.event_type, record.schema_version, record.data.get()).map_err(|source| {
        CommandError::Infrastructure(InfrastructureError::Decode {
            stream_id: record.stream_id.clone(),
            position: record.log_position.position,
            source,
        })
    })
}

/// The events as stored, with their metadata: the command, the actor who issued it (the API
/// token's name; none when the API runs without tokens) and the trace context.
pub(super) fn encode_all(events: &[Event], command: &str, actor: Option<&str>) -> Vec<NewEvent> {
    let mut metadata = json!({ "command": command });
    if let Some(actor) = actor {
        metadata["actor"] = json!(actor);
    }
    if let Some(traceparent) = shoal_infra::telemetry::trace::current_traceparent() {
        metadata["traceparent"] = json!(traceparent);
    }
    events
        .iter()
        .map(|event| {
            let encoded = event.encode();
            NewEvent {
                event_type: encoded.event_type.to_owned(),
                schema_version: encoded.schema_version,
                data: encoded.data,
                metadata: metadata.clone(),
            }
        })
        .collect()
}
