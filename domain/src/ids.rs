//! Identifiers of jobs and tasks, and the names of their event streams.
//!
//! A job id is a UUIDv7 (time-ordered, so ids sort roughly by submission time). A task id is
//! *derived* from its job id and index (UUIDv5), so expanding a job twice names the same tasks:
//! a repeated expansion collides on the task streams instead of creating duplicates.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Prefix of a job's stream id: `job-<uuid>`.
pub const JOB_STREAM_PREFIX: &str = "job-";
/// Prefix of a task's stream id: `task-<uuid>`.
pub const TASK_STREAM_PREFIX: &str = "task-";

/// A string that is not a UUID, or not a stream id this crate knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseIdError {
    /// The text is not a UUID. Callers answer "invalid id" (HTTP 404/422), never a 500.
    #[error("{input:?} is not a valid UUID")]
    InvalidUuid {
        /// The text that failed to parse.
        input: String,
    },
    /// The stream id starts with neither `job-` nor `task-`.
    #[error("{input:?} is not a job or task stream id")]
    UnknownStream {
        /// The text that failed to parse.
        input: String,
    },
}

fn parse_uuid(s: &str) -> Result<Uuid, ParseIdError> {
    Uuid::parse_str(s.trim()).map_err(|_| ParseIdError::InvalidUuid {
        input: s.to_owned(),
    })
}

/// The id of a job. New ids are UUIDv7; ids of imported jobs may be any UUID.
///
/// Serialized as the hyphenated UUID string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(Uuid);

impl JobId {
    /// A fresh, time-ordered (v7) id.
    #[expect(
        clippy::new_without_default,
        reason = "a Default that returns a different id each call would be surprising"
    )]
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// Wraps an existing UUID (any version: imported jobs keep their ids).
    pub const fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    /// Parses a UUID in any of the usual textual forms (surrounding whitespace is ignored).
    pub fn parse(s: &str) -> Result<Self, ParseIdError> {
        parse_uuid(s).map(Self)
    }

    /// The UUID itself.
    pub const fn as_uuid(&self) -> Uuid {
        self.0
    }

    /// The id of the job's event stream: `job-<uuid>`.
    pub fn stream_id(&self) -> String {
        format!("{JOB_STREAM_PREFIX}{}", self.0)
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl FromStr for JobId {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl From<JobId> for Uuid {
    fn from(id: JobId) -> Self {
        id.0
    }
}

/// The id of a task: a pure function of its job id and index (see [`TaskId::for_task`]).
///
/// Serialized as the hyphenated UUID string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(Uuid);

impl TaskId {
    /// The id of task `index` of `job`: `UUIDv5(namespace = job id, name = index as 4 big-endian
    /// bytes)`. The same inputs always give the same id; this is part of the stored format and
    /// must never change.
    pub fn for_task(job: JobId, index: u32) -> Self {
        Self(Uuid::new_v5(&job.0, &index.to_be_bytes()))
    }

    /// Wraps an existing UUID (imported tasks keep their ids).
    pub const fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    /// Parses a UUID in any of the usual textual forms (surrounding whitespace is ignored).
    pub fn parse(s: &str) -> Result<Self, ParseIdError> {
        parse_uuid(s).map(Self)
    }

    /// The UUID itself.
    pub const fn as_uuid(&self) -> Uuid {
        self.0
    }

    /// The id of the task's event stream: `task-<uuid>`.
    pub fn stream_id(&self) -> String {
        format!("{TASK_STREAM_PREFIX}{}", self.0)
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl FromStr for TaskId {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl From<TaskId> for Uuid {
    fn from(id: TaskId) -> Self {
        id.0
    }
}

/// A parsed stream id: which aggregate a stream belongs to.
///
/// `Display` gives the stream id back (`job-<uuid>` / `task-<uuid>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamRef {
    /// `job-<uuid>`: the job-level events of one job.
    Job(JobId),
    /// `task-<uuid>`: the events of one task.
    Task(TaskId),
}

impl StreamRef {
    /// Parses `job-<uuid>` or `task-<uuid>`.
    pub fn parse(stream_id: &str) -> Result<Self, ParseIdError> {
        if let Some(rest) = stream_id.strip_prefix(JOB_STREAM_PREFIX) {
            JobId::parse(rest).map(Self::Job)
        } else if let Some(rest) = stream_id.strip_prefix(TASK_STREAM_PREFIX) {
            TaskId::parse(rest).map(Self::Task)
        } else {
            Err(ParseIdError::UnknownStream {
                input: stream_id.to_owned(),
            })
        }
    }

    /// The stream id, as stored in the log.
    pub fn stream_id(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for StreamRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Job(id) => write!(f, "{JOB_STREAM_PREFIX}{id}"),
            Self::Task(id) => write!(f, "{TASK_STREAM_PREFIX}{id}"),
        }
    }
}

impl FromStr for StreamRef {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_job_ids_are_v7_and_distinct() {
        let a = JobId::new();
        let b = JobId::new();
        assert_ne!(a, b);
        assert_eq!(a.as_uuid().get_version_num(), 7);
    }

    #[test]
    fn job_id_displays_hyphenated_and_parses_back() {
        let id = JobId::new();
        let text = id.to_string();
        assert_eq!(text.len(), 36);
        assert_eq!(JobId::parse(&text), Ok(id));
        assert_eq!(text.parse::<JobId>(), Ok(id));
        assert!(matches!(
            JobId::parse("nope"),
            Err(ParseIdError::InvalidUuid { .. })
        ));
    }

    #[test]
    fn ids_serialize_as_plain_strings() {
        let id = JobId::parse("0190a5c4-1f2e-7abc-8def-0123456789ab").unwrap();
        let json = serde_json::to_value(id).unwrap();
        assert_eq!(
            json,
            serde_json::json!("0190a5c4-1f2e-7abc-8def-0123456789ab")
        );
        let back: JobId = serde_json::from_value(json).unwrap();
        assert_eq!(back, id);
    }

    #[test]
    fn task_ids_are_deterministic_per_job_and_index() {
        let job = JobId::new();
        assert_eq!(TaskId::for_task(job, 7), TaskId::for_task(job, 7));
        assert_ne!(TaskId::for_task(job, 7), TaskId::for_task(job, 8));
        assert_ne!(TaskId::for_task(job, 7), TaskId::for_task(JobId::new(), 7));
        assert_eq!(TaskId::for_task(job, 0).as_uuid().get_version_num(), 5);
    }

    #[test]
    fn task_id_derivation_is_stable() {
        // Stored ids depend on this exact derivation; a change would orphan every task stream.
        let job = JobId::parse("00000000-0000-7000-8000-000000000000").unwrap();
        let expected = Uuid::new_v5(&job.as_uuid(), &[0, 0, 0, 1]);
        assert_eq!(TaskId::for_task(job, 1).as_uuid(), expected);
    }

    #[test]
    fn stream_ids_round_trip() {
        let job = JobId::new();
        let task = TaskId::for_task(job, 3);
        assert_eq!(job.stream_id(), format!("job-{job}"));
        assert_eq!(task.stream_id(), format!("task-{task}"));
        assert_eq!(StreamRef::parse(&job.stream_id()), Ok(StreamRef::Job(job)));
        assert_eq!(
            StreamRef::parse(&task.stream_id()),
            Ok(StreamRef::Task(task))
        );
        assert_eq!(StreamRef::Task(task).stream_id(), task.stream_id());
        assert!(matches!(
            StreamRef::parse("order-1"),
            Err(ParseIdError::UnknownStream { .. })
        ));
        assert!(matches!(
            StreamRef::parse("task-xyz"),
            Err(ParseIdError::InvalidUuid { .. })
        ));
    }
}
