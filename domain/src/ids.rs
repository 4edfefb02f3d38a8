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
/// Prefix of an API token's stream: `token-<uuid>`.
pub const TOKEN_STREAM_PREFIX: &str = "token-";
/// The stream of the cluster-wide concurrency and rate limits.
pub const LIMITS_STREAM: &str = "limits";
/// What joins a job id and a task index in the original system's task ids:
/// `<job id>-task-<index>`.
pub const LEGACY_TASK_ID_INFIX: &str = "-task-";

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

    /// Parses a task id in either of the forms clients use: Shoal's UUID, or the original
    /// system's `<job id>-task-<index>` (what its clients build), which names the same task
    /// because a task id is derived from (job, index). The index is decimal, without sign or
    /// leading zeros, and fits a `u32`; anything else is [`ParseIdError::InvalidUuid`].
    ///
    /// Whether a task of that index exists is not checked here: an index past the job's last
    /// task gives an id that names no stream (a 404 at the API).
    pub fn parse_any_form(s: &str) -> Result<Self, ParseIdError> {
        let text = s.trim();
        if let Ok(uuid) = Uuid::parse_str(text) {
            return Ok(Self(uuid));
        }
        Self::parse_legacy(text).ok_or_else(|| ParseIdError::InvalidUuid {
            input: s.to_owned(),
        })
    }

    fn parse_legacy(text: &str) -> Option<Self> {
        let (job, index) = text.rsplit_once(LEGACY_TASK_ID_INFIX)?;
        let canonical = !index.is_empty()
            && index.bytes().all(|b| b.is_ascii_digit())
            && (index == "0" || !index.starts_with('0'));
        if !canonical {
            return None;
        }
        let index: u32 = index.parse().ok()?;
        let job = Uuid::parse_str(job).ok()?;
        Some(Self::for_task(JobId(job), index))
    }

    /// The original system's name of task `index` of `job`: `<job id>-task-<index>`.
    /// [`TaskId::parse_any_form`] reads it back as [`TaskId::for_task`]`(job, index)`.
    pub fn legacy_name(job: JobId, index: u32) -> String {
        format!("{job}{LEGACY_TASK_ID_INFIX}{index}")
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
    /// `token-<uuid>`: the events of one API token.
    Token(Uuid),
    /// `limits`: the cluster-wide concurrency and rate limits (`LimitSet`).
    Limits,
}

impl StreamRef {
    /// Parses `job-<uuid>` or `task-<uuid>`.
    pub fn parse(stream_id: &str) -> Result<Self, ParseIdError> {
        if let Some(rest) = stream_id.strip_prefix(JOB_STREAM_PREFIX) {
            JobId::parse(rest).map(Self::Job)
        } else if let Some(rest) = stream_id.strip_prefix(TASK_STREAM_PREFIX) {
            TaskId::parse(rest).map(Self::Task)
        } else if let Some(rest) = stream_id.strip_prefix(TOKEN_STREAM_PREFIX) {
            parse_uuid(rest).map(Self::Token)
        } else if stream_id == LIMITS_STREAM {
            Ok(Self::Limits)
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
            Self::Token(id) => write!(f, "{TOKEN_STREAM_PREFIX}{}", id.hyphenated()),
            Self::Limits => f.write_str(LIMITS_STREAM),
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
    fn the_original_systems_task_ids_name_the_same_tasks() {
        let job = JobId::parse("0190a5c4-1f2e-7abc-8def-0123456789ab").unwrap();
        for index in [0, 1, 9, 10, 9_999, 999_999, u32::MAX] {
            let name = TaskId::legacy_name(job, index);
            assert_eq!(name, format!("{job}-task-{index}"));
            assert_eq!(
                TaskId::parse_any_form(&name),
                Ok(TaskId::for_task(job, index))
            );
        }
        // Whitespace around it is ignored, as for UUIDs; so is the job id's case.
        assert_eq!(
            TaskId::parse_any_form(" 0190A5C4-1F2E-7ABC-8DEF-0123456789AB-task-3\n"),
            Ok(TaskId::for_task(job, 3))
        );
        // The UUID form still parses, to itself.
        let task = TaskId::for_task(job, 5);
        assert_eq!(TaskId::parse_any_form(&task.to_string()), Ok(task));
        assert_eq!(TaskId::parse(&task.to_string()), Ok(task));
        // Plain `parse` (used for stream ids) knows only the UUID form.
        assert!(TaskId::parse(&TaskId::legacy_name(job, 5)).is_err());
    }

    proptest::proptest! {
        #[test]
        fn every_legacy_name_parses_to_its_task(job in proptest::prelude::any::<u128>(), index: u32) {
            let job = JobId::from_uuid(Uuid::from_u128(job));
            proptest::prop_assert_eq!(
                TaskId::parse_any_form(&TaskId::legacy_name(job, index)),
                Ok(TaskId::for_task(job, index))
            );
        }
    }

    #[test]
    fn malformed_task_ids_are_refused() {
        let job = "0190a5c4-1f2e-7abc-8def-0123456789ab";
        for bad in [
            String::new(),
            "nope".to_owned(),
            format!("{job}-task-"),
            format!("{job}-task--1"),
            format!("{job}-task-+1"),
            format!("{job}-task-01"),
            format!("{job}-task-1.0"),
            format!("{job}-task- 1"),
            format!("{job}-task-4294967296"),
            format!("{job}-TASK-1"),
            format!("{job}-tasks-1"),
            format!("{job}task-1"),
            "not-a-uuid-task-1".to_owned(),
            "-task-1".to_owned(),
            format!("{job}-task-1-task-2"),
        ] {
            assert_eq!(
                TaskId::parse_any_form(&bad),
                Err(ParseIdError::InvalidUuid { input: bad.clone() }),
                "{bad:?}"
            );
        }
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
