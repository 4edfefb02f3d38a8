//! What the worker's integration tests share: they play the orchestrator, appending a job's
//! `JobSubmitted`, `TasksCreated` and `TaskEnqueued` events as the domain decides them and
//! sending the matching messages, then read the task streams back (the log is the truth).

// Each test file uses a part of this module.
#![allow(dead_code)]

use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};
use shoal_domain::{
    Event, JobCommand, JobId, JobState, Limits, Split, SubmitJob, TaskId, decide_job, evolve_job,
};
use shoal_infra::eventlog::{
    AppendBatch, EventLog, ExpectedVersion, NewEvent, RecordedEvent, StreamAppend,
};
use shoal_infra::queue::{OutgoingMessage, TaskMessage, TaskQueue};

/// A job to submit: `tasks` tasks of `job_type`, 3 attempts of at most 60 s each by default.
#[derive(Debug)]
pub struct JobSpec {
    pub job_type: &'static str,
    pub tasks: u32,
    pub parameters: Value,
    pub max_attempts: u32,
    pub timeout_seconds: u32,
    pub fallback_handler: Option<&'static str>,
}

impl JobSpec {
    pub fn new(job_type: &'static str, tasks: u32) -> Self {
        JobSpec {
            job_type,
            tasks,
            parameters: json!({}),
            max_attempts: 3,
            timeout_seconds: 60,
            fallback_handler: None,
        }
    }
}

/// A submitted job.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: JobId,
    pub tasks: u32,
    /// The first attempt's message of each task, in index order.
    pub messages: Vec<TaskMessage>,
}

impl Job {
    /// The job's id and its number of tasks.
    pub fn key(&self) -> (JobId, u32) {
        (self.id, self.tasks)
    }
}

/// Appends a job's submission and all its tasks in one batch, as the orchestrator's first chunk
/// would, and sends the tasks' messages.
pub async fn submit(log: &dyn EventLog, queue: &dyn TaskQueue, spec: JobSpec) -> Job {
    let job_id = JobId::new();
    let now = Utc::now();
    let submitted = decide_job(
        &JobState::default(),
        JobCommand::SubmitJob(SubmitJob {
            job_id,
            job_type: spec.job_type.into(),
            split: Split::Total {
                total_tasks: spec.tasks,
            },
            parameters: spec.parameters,
            max_attempts: Some(spec.max_attempts),
            timeout_seconds: Some(spec.timeout_seconds),
            limits: Limits::default(),
            now,
            fallback_handler: spec.fallback_handler.map(str::to_owned),
            priority: 0,
        }),
    )
    .unwrap();
    let state = submitted.iter().fold(JobState::default(), evolve_job);
    let created = decide_job(
        &state,
        JobCommand::CreateTasks {
            max_chunk: spec.tasks,
            now,
        },
    )
    .unwrap();
    let mut batch = AppendBatch {
        streams: vec![StreamAppend {
            stream_id: job_id.stream_id(),
            expected: ExpectedVersion::NoStream,
            events: submitted.iter().map(new_event).collect(),
        }],
        ..AppendBatch::default()
    };
    let mut messages = Vec::new();
    for event in &created {
        match event {
            Event::TaskEnqueued(e) => {
                batch.streams.push(StreamAppend {
                    stream_id: e.task_id.stream_id(),
                    expected: ExpectedVersion::NoStream,
                    events: vec![new_event(event)],
                });
                messages.push(TaskMessage {
                    task_id: e.task_id.as_uuid(),
                    job_id: e.job_id.as_uuid(),
                    task_index: e.index,
                    parameters: e.input.clone(),
                    job_type: e.job_type.clone(),
                    attempt: e.attempt,
                    stream_version: 1,
                    max_attempts: e.max_attempts,
                    timeout_seconds: e.timeout_seconds,
                    not_before: None,
                    traceparent: None,
                    previous_attempt_traceparent: None,
                    fallback_handler: e.fallback_handler.clone(),
                });
            }
            Event::TasksCreated(_) => batch.streams[0].events.push(new_event(event)),
            other => panic!("unexpected event {other:?}"),
        }
    }
    log.append(batch).await.unwrap();
    for chunk in messages.chunks(500) {
        let outgoing = chunk
            .iter()
            .map(|body| OutgoingMessage {
                body: body.clone(),
                delay: Duration::ZERO,
            })
            .collect();
        queue.send(outgoing).await.unwrap();
    }
    Job {
        id: job_id,
        tasks: spec.tasks,
        messages,
    }
}

/// `event` as the log stores it, with the test as its actor.
pub fn new_event(event: &Event) -> NewEvent {
    NewEvent {
        event_type: event.event_type().into(),
        schema_version: event.schema_version(),
        data: event.to_json(),
        metadata: json!({"actor": "test"}),
    }
}

pub fn decode(record: &RecordedEvent) -> Event {
    Event::decode(&record.event_type, record.schema_version, record.data.get()).unwrap()
}

/// Each task's events, in index order.
pub async fn task_events(log: &dyn EventLog, (job, tasks): (JobId, u32)) -> Vec<Vec<Event>> {
    let ids: Vec<String> = (0..tasks)
        .map(|i| TaskId::for_task(job, i).stream_id())
        .collect();
    let records = log.read_streams(&ids).await.unwrap();
    ids.iter()
        .map(|id| {
            records
                .iter()
                .filter(|r| &r.stream_id == id)
                .map(decode)
                .collect()
        })
        .collect()
}
