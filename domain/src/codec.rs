//! The stored form of events: a type name, a schema version and a JSON payload.
//!
//! Writing always uses the current schema version. Reading accepts every version ever written
//! and upcasts old ones to the current shape in memory; stored events are never rewritten.
//! A row that cannot be decoded gives a [`DecodeError`], never a panic.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::events::{Event, JobSubmitted};
use crate::ids::JobId;
use crate::limits::{DEFAULT_MAX_ATTEMPTS, DEFAULT_TIMEOUT_SECONDS};
use crate::split::Split;

/// An event stored row's worth: type, schema version, payload.
#[derive(Debug, Clone)]
pub struct EncodedEvent {
    /// The stable type name, e.g. `"JobSubmitted"`.
    pub event_type: &'static str,
    /// The payload's schema version (current for this type).
    pub schema_version: i32,
    /// The payload, serialized.
    pub data: Box<RawValue>,
}

/// A stored event that cannot be turned into an [`Event`]. The log is intact; the reader
/// (projector, loader) reports the position and stops or skips it as its policy says, and a
/// newer build of Shoal may read it (for `UnsupportedVersion`).
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// No event has this type name.
    #[error("unknown event type {event_type:?}")]
    UnknownType {
        /// The stored type.
        event_type: String,
    },
    /// The schema version is below 1 or newer than this build knows (written by a newer
    /// Shoal): upgrade the reader.
    #[error(
        "{event_type} schema version {version} is not supported (this build reads 1 to {current})"
    )]
    UnsupportedVersion {
        /// The stored type.
        event_type: &'static str,
        /// The stored version.
        version: i32,
        /// The newest version this build knows.
        current: i32,
    },
    /// The payload does not have the shape of its type and version.
    #[error("{event_type} v{version} payload is malformed: {source}")]
    Malformed {
        /// The stored type.
        event_type: &'static str,
        /// The stored version.
        version: i32,
        /// What serde found wrong.
        #[source]
        source: serde_json::Error,
    },
}

/// Every event type name, as stored.
pub const EVENT_TYPES: [&str; 24] = [
    "JobSubmitted",
    "TasksCreated",
    "JobCompleted",
    "JobFailed",
    "JobCancelled",
    "JobRetryRequested",
    "TaskEnqueued",
    "TaskStarted",
    "TaskCompleted",
    "TaskFailed",
    "TaskRetryScheduled",
    "TaskDeadLettered",
    "JobExecutionStarted",
    "JobStepStarted",
    "JobStepSucceeded",
    "JobStepRetried",
    "JobStepFailed",
    "TaskRequeued",
    "TokenCreated",
    "TokenRevoked",
    "JobPriorityChanged",
    "TaskReleased",
    "LimitSet",
    "JobConcurrencySet",
];

/// The schema version written for `JobSubmitted`. v1 is the original system's shape.
pub const JOB_SUBMITTED_VERSION: i32 = 2;

/// The current schema version of an event type, or `None` for an unknown type.
pub fn current_schema_version(event_type: &str) -> Option<i32> {
    match event_type {
        "JobSubmitted" => Some(JOB_SUBMITTED_VERSION),
        t if EVENT_TYPES.contains(&t) => Some(1),
        _ => None,
    }
}

impl Event {
    /// The stable type name stored with the event (the variant name).
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::JobSubmitted(_) => "JobSubmitted",
            Self::TasksCreated(_) => "TasksCreated",
            Self::JobCompleted(_) => "JobCompleted",
            Self::JobFailed(_) => "JobFailed",
            Self::JobCancelled(_) => "JobCancelled",
            Self::JobRetryRequested(_) => "JobRetryRequested",
            Self::TaskEnqueued(_) => "TaskEnqueued",
            Self::TaskStarted(_) => "TaskStarted",
            Self::TaskCompleted(_) => "TaskCompleted",
            Self::TaskFailed(_) => "TaskFailed",
            Self::TaskRetryScheduled(_) => "TaskRetryScheduled",
            Self::TaskDeadLettered(_) => "TaskDeadLettered",
            Self::JobExecutionStarted(_) => "JobExecutionStarted",
            Self::JobStepStarted(_) => "JobStepStarted",
            Self::JobStepSucceeded(_) => "JobStepSucceeded",
            Self::JobStepRetried(_) => "JobStepRetried",
            Self::JobStepFailed(_) => "JobStepFailed",
            Self::TaskRequeued(_) => "TaskRequeued",
            Self::TokenCreated(_) => "TokenCreated",
            Self::TokenRevoked(_) => "TokenRevoked",
            Self::JobPriorityChanged(_) => "JobPriorityChanged",
            Self::TaskReleased(_) => "TaskReleased",
            Self::LimitSet(_) => "LimitSet",
            Self::JobConcurrencySet(_) => "JobConcurrencySet",
        }
    }

    /// The schema version this build writes for the event's type.
    pub fn schema_version(&self) -> i32 {
        match self {
            Self::JobSubmitted(_) => JOB_SUBMITTED_VERSION,
            _ => 1,
        }
    }

    /// The payload as JSON (without type or version).
    pub fn to_data(&self) -> Value {
        match self {
            Self::JobSubmitted(e) => to_value(e),
            Self::TasksCreated(e) => to_value(e),
            Self::JobCompleted(e) => to_value(e),
            Self::JobFailed(e) => to_value(e),
            Self::JobCancelled(e) => to_value(e),
            Self::JobRetryRequested(e) => to_value(e),
            Self::TaskEnqueued(e) => to_value(e),
            Self::TaskStarted(e) => to_value(e),
            Self::TaskCompleted(e) => to_value(e),
            Self::TaskFailed(e) => to_value(e),
            Self::TaskRetryScheduled(e) => to_value(e),
            Self::TaskDeadLettered(e) => to_value(e),
            Self::JobExecutionStarted(e) => to_value(e),
            Self::JobStepStarted(e)
            | Self::JobStepSucceeded(e)
            | Self::JobStepRetried(e)
            | Self::JobStepFailed(e) => to_value(e),
            Self::TaskRequeued(e) => to_value(e),
            Self::TokenCreated(e) => to_value(e),
            Self::TokenRevoked(e) => to_value(e),
            Self::JobPriorityChanged(e) => to_value(e),
            Self::TaskReleased(e) => to_value(e),
            Self::LimitSet(e) => to_value(e),
            Self::JobConcurrencySet(e) => to_value(e),
        }
    }

    /// The payload serialized as JSON text (without type or version), as the log stores it.
    pub fn to_json(&self) -> Box<RawValue> {
        match self {
            Self::JobSubmitted(e) => to_raw(e),
            Self::TasksCreated(e) => to_raw(e),
            Self::JobCompleted(e) => to_raw(e),
            Self::JobFailed(e) => to_raw(e),
            Self::JobCancelled(e) => to_raw(e),
            Self::JobRetryRequested(e) => to_raw(e),
            Self::TaskEnqueued(e) => to_raw(e),
            Self::TaskStarted(e) => to_raw(e),
            Self::TaskCompleted(e) => to_raw(e),
            Self::TaskFailed(e) => to_raw(e),
            Self::TaskRetryScheduled(e) => to_raw(e),
            Self::TaskDeadLettered(e) => to_raw(e),
            Self::JobExecutionStarted(e) => to_raw(e),
            Self::JobStepStarted(e)
            | Self::JobStepSucceeded(e)
            | Self::JobStepRetried(e)
            | Self::JobStepFailed(e) => to_raw(e),
            Self::TaskRequeued(e) => to_raw(e),
            Self::TokenCreated(e) => to_raw(e),
            Self::TokenRevoked(e) => to_raw(e),
            Self::JobPriorityChanged(e) => to_raw(e),
            Self::TaskReleased(e) => to_raw(e),
            Self::LimitSet(e) => to_raw(e),
            Self::JobConcurrencySet(e) => to_raw(e),
        }
    }

    /// Type, version and payload, ready to store.
    pub fn encode(&self) -> EncodedEvent {
        EncodedEvent {
            event_type: self.event_type(),
            schema_version: self.schema_version(),
            data: self.to_json(),
        }
    }

    /// Reads a stored event (its payload as the stored JSON text), upcasting old schema
    /// versions to the current shape. The payload is parsed once, straight into the event.
    ///
    /// Unknown fields in the payload are ignored. Errors: an unknown type, a version this
    /// build does not know, or a payload that does not match its version.
    pub fn decode(event_type: &str, schema_version: i32, data: &str) -> Result<Event, DecodeError> {
        let Some(index) = EVENT_TYPES.iter().position(|t| *t == event_type) else {
            return Err(DecodeError::UnknownType {
                event_type: event_type.to_owned(),
            });
        };
        let event_type = EVENT_TYPES[index];
        let current = current_schema_version(event_type).unwrap_or(1);
        if !(1..=current).contains(&schema_version) {
            return Err(DecodeError::UnsupportedVersion {
                event_type,
                version: schema_version,
                current,
            });
        }
        let payload = Payload {
            event_type,
            version: schema_version,
            data,
        };
        Ok(match event_type {
            "JobSubmitted" if schema_version == 1 => {
                Event::JobSubmitted(payload.parse::<JobSubmittedV1>()?.upcast())
            }
            "JobSubmitted" => Event::JobSubmitted(payload.parse()?),
            "TasksCreated" => Event::TasksCreated(payload.parse()?),
            "JobCompleted" => Event::JobCompleted(payload.parse()?),
            "JobFailed" => Event::JobFailed(payload.parse()?),
            "JobCancelled" => Event::JobCancelled(payload.parse()?),
            "JobRetryRequested" => Event::JobRetryRequested(payload.parse()?),
            "TaskEnqueued" => Event::TaskEnqueued(payload.parse()?),
            "TaskStarted" => Event::TaskStarted(payload.parse()?),
            "TaskCompleted" => Event::TaskCompleted(payload.parse()?),
            "TaskFailed" => Event::TaskFailed(payload.parse()?),
            "TaskRetryScheduled" => Event::TaskRetryScheduled(payload.parse()?),
            "JobExecutionStarted" => Event::JobExecutionStarted(payload.parse()?),
            "JobStepStarted" => Event::JobStepStarted(payload.parse()?),
            "JobStepSucceeded" => Event::JobStepSucceeded(payload.parse()?),
            "JobStepRetried" => Event::JobStepRetried(payload.parse()?),
            "JobStepFailed" => Event::JobStepFailed(payload.parse()?),
            "TaskRequeued" => Event::TaskRequeued(payload.parse()?),
            "TokenCreated" => Event::TokenCreated(payload.parse()?),
            "TokenRevoked" => Event::TokenRevoked(payload.parse()?),
            "JobPriorityChanged" => Event::JobPriorityChanged(payload.parse()?),
            "TaskReleased" => Event::TaskReleased(payload.parse()?),
            "LimitSet" => Event::LimitSet(payload.parse()?),
            "JobConcurrencySet" => Event::JobConcurrencySet(payload.parse()?),
            _ => Event::TaskDeadLettered(payload.parse()?),
        })
    }
}

// As for `to_value`: serializing a payload cannot fail.
#[allow(clippy::expect_used)]
fn to_raw<T: Serialize>(payload: &T) -> Box<RawValue> {
    serde_json::value::to_raw_value(payload).expect("event payloads always serialize to JSON")
}

// Payloads are plain structs with string-keyed maps, JSON values, strings, numbers, UUIDs and
// timestamps: serializing them to a `Value` cannot fail (serde_json fails only on non-string
// map keys and on `Serialize` impls that return errors, and payloads have neither).
#[allow(clippy::expect_used)]
fn to_value<T: Serialize>(payload: &T) -> Value {
    serde_json::to_value(payload).expect("event payloads always serialize to JSON")
}

struct Payload<'a> {
    event_type: &'static str,
    version: i32,
    data: &'a str,
}

impl Payload<'_> {
    fn parse<T: DeserializeOwned>(&self) -> Result<T, DecodeError> {
        serde_json::from_str(self.data).map_err(|source| DecodeError::Malformed {
            event_type: self.event_type,
            version: self.version,
            source,
        })
    }
}

/// `JobSubmitted` v1: the original system's job, `{job_id, job_type, num_tasks, parameters,
/// submitted_at}`, with no split, attempts or timeout.
#[derive(Deserialize)]
struct JobSubmittedV1 {
    job_id: JobId,
    job_type: String,
    #[serde(alias = "total_tasks")]
    num_tasks: u32,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(deserialize_with = "lenient_utc")]
    submitted_at: DateTime<Utc>,
}

impl JobSubmittedV1 {
    fn upcast(self) -> JobSubmitted {
        JobSubmitted {
            job_id: self.job_id,
            job_type: self.job_type,
            split: Split::Total {
                total_tasks: self.num_tasks,
            },
            parameters: self.parameters.unwrap_or_default(),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            timeout_seconds: DEFAULT_TIMEOUT_SECONDS,
            total_tasks: self.num_tasks,
            submitted_at: self.submitted_at,
            // The original system's job: its workers ran `cpu_bound` without a `work_type`.
            fallback_handler: Some(crate::job::ORIGINAL_DEFAULT_HANDLER.to_owned()),
            priority: 0,
        }
    }
}

/// RFC 3339, or a naive ISO-8601 date-time (as Python's `datetime.isoformat()` writes it),
/// read as UTC.
fn lenient_utc<'de, D: Deserializer<'de>>(deserializer: D) -> Result<DateTime<Utc>, D::Error> {
    let text = String::deserialize(deserializer)?;
    if let Ok(t) = DateTime::parse_from_rfc3339(&text) {
        return Ok(t.with_timezone(&Utc));
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(&text, format).ok())
        .map(|naive| naive.and_utc())
        .ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not an ISO-8601 date-time")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{
        JobCancelled, JobCompleted, JobExecutionStarted, JobFailed, JobPriorityChanged,
        JobRetryRequested, JobStep, TaskCompleted, TaskDeadLettered, TaskEnqueued, TaskFailed,
        TaskRequeued, TaskRetryScheduled, TaskStarted, TasksCreated, TokenCreated, TokenRevoked,
    };
    use crate::events::{JobConcurrencySet, LimitKind, LimitSet, TaskReleased};
    use crate::ids::TaskId;
    use chrono::TimeZone;
    use serde_json::json;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap()
    }

    fn one_of_each() -> Vec<Event> {
        let job_id = JobId::new();
        let task_id = TaskId::for_task(job_id, 2);
        let at = t0();
        let mut params = Map::new();
        params.insert("work_type".into(), json!("io_bound"));
        vec![
            JobSubmitted {
                job_id,
                job_type: "score".into(),
                split: Split::Items {
                    items: vec![json!({"id": 1}), json!(2)],
                    batch_size: 1,
                },
                parameters: params,
                max_attempts: 4,
                timeout_seconds: 60,
                total_tasks: 2,
                submitted_at: at,
                fallback_handler: None,
                priority: 0,
            }
            .into(),
            TasksCreated {
                job_id,
                from_index: 0,
                to_index: 2,
                at,
            }
            .into(),
            JobCompleted { job_id, at }.into(),
            JobFailed {
                job_id,
                failed_tasks: 3,
                at,
            }
            .into(),
            JobCancelled {
                job_id,
                reason: Some("because".into()),
                at,
            }
            .into(),
            JobRetryRequested {
                job_id,
                tasks: 3,
                at,
            }
            .into(),
            TaskEnqueued {
                job_id,
                task_id,
                index: 2,
                job_type: "score".into(),
                input: json!({"items": [1]}),
                attempt: 1,
                max_attempts: 4,
                timeout_seconds: 60,
                at,
                fallback_handler: None,
            }
            .into(),
            TaskStarted {
                job_id,
                task_id,
                index: 2,
                attempt: 1,
                worker: "w-1".into(),
                at,
            }
            .into(),
            TaskCompleted {
                job_id,
                task_id,
                index: 2,
                attempt: 1,
                result: Some(json!({"score": 0.5})),
                duration_ms: 1234,
                at,
            }
            .into(),
            TaskFailed {
                job_id,
                task_id,
                index: 2,
                attempt: 1,
                error: "boom".into(),
                final_failure: false,
                at,
            }
            .into(),
            TaskRetryScheduled {
                job_id,
                task_id,
                index: 2,
                attempt: 2,
                not_before: at + chrono::Duration::seconds(4),
                manual: false,
                at,
            }
            .into(),
            TaskDeadLettered {
                job_id,
                task_id,
                index: 2,
                attempt: 3,
                reason: "max attempts".into(),
                at,
            }
            .into(),
            JobExecutionStarted {
                job_id,
                execution_arn: "arn:aws:states:us-east-1:123456789012:execution:shoal-job:j".into(),
                at,
            }
            .into(),
            Event::JobStepStarted(step(job_id, None)),
            Event::JobStepSucceeded(step(job_id, Some("done"))),
            Event::JobStepRetried(step(job_id, Some("States.HeartbeatTimeout"))),
            Event::JobStepFailed(step(job_id, Some("Shoal.Rejected"))),
            TaskRequeued {
                job_id,
                task_id,
                index: 2,
                attempt: 2,
                not_before: Some(at),
                reason: "the attempt had no message in the queue".into(),
                at,
            }
            .into(),
            TokenCreated {
                token_id: uuid::Uuid::from_u128(7),
                name: "ci".into(),
                scopes: vec!["read".into(), "submit".into()],
                at,
            }
            .into(),
            TokenRevoked {
                token_id: uuid::Uuid::from_u128(7),
                name: "ci".into(),
                at,
            }
            .into(),
            JobPriorityChanged {
                job_id,
                priority: 10,
                previous: 0,
                at,
            }
            .into(),
            TaskReleased {
                job_id,
                task_id,
                index: 2,
                attempt: 1,
                at,
            }
            .into(),
            LimitSet {
                kind: LimitKind::Key,
                name: "tenant-a".into(),
                max_concurrency: Some(2),
                rate_per_second: Some(0.5),
                at,
            }
            .into(),
            JobConcurrencySet {
                job_id,
                max_concurrency: Some(3),
                concurrency_key: Some("acme".into()),
                key_parameter: Some("tenant".into()),
                at,
            }
            .into(),
        ]
    }

    fn step(job_id: JobId, detail: Option<&str>) -> JobStep {
        JobStep {
            job_id,
            step: "Monitor".into(),
            retry_count: 1,
            detail: detail.map(str::to_owned),
            at: t0(),
        }
    }

    #[test]
    fn every_event_round_trips() {
        let events = one_of_each();
        let types: Vec<_> = events.iter().map(Event::event_type).collect();
        assert_eq!(
            types, EVENT_TYPES,
            "one_of_each covers every type, in order"
        );
        for event in events {
            let stored = event.encode();
            assert_eq!(
                current_schema_version(stored.event_type),
                Some(stored.schema_version)
            );
            // Through text too, as the database stores it.
            let text = serde_json::to_string(&stored.data).unwrap();
            let tree: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(
                tree,
                event.to_data(),
                "the stored text is the payload's JSON"
            );
            let back = Event::decode(stored.event_type, stored.schema_version, &text).unwrap();
            assert_eq!(back, event);
        }
    }

    #[test]
    fn stream_ids_follow_the_event_kind() {
        for event in one_of_each() {
            let expected = match (event.task_id(), event.job_id()) {
                (Some(task), _) => format!("task-{task}"),
                (None, Some(job)) => format!("job-{job}"),
                (None, None) if matches!(event, Event::LimitSet(_)) => "limits".to_owned(),
                (None, None) => "token-00000000-0000-0000-0000-000000000007".to_owned(),
            };
            assert_eq!(event.stream_id(), expected);
        }
    }

    #[test]
    fn job_submitted_payload_shape_is_stable() {
        let Event::JobSubmitted(e) = &one_of_each()[0] else {
            unreachable!()
        };
        let data = Event::JobSubmitted(e.clone()).to_data();
        assert_eq!(
            data,
            json!({
                "job_id": e.job_id.to_string(),
                "job_type": "score",
                "split": {"kind": "items", "items": [{"id": 1}, 2], "batch_size": 1},
                "parameters": {"work_type": "io_bound"},
                "max_attempts": 4,
                "timeout_seconds": 60,
                "total_tasks": 2,
                "submitted_at": "2024-05-01T12:00:00Z",
            })
        );
    }

    #[test]
    fn v1_job_submitted_is_upcast() {
        let v1 = json!({
            "job_id": "3f1c7f64-2b44-4a8e-9d5c-0c9a4f2f1a10",
            "job_type": "cpu_bound",
            "num_tasks": 12,
            "parameters": {"work_duration_seconds": 0.5},
            "submitted_at": "2023-11-02T08:15:30.123456"
        });
        let event = Event::decode("JobSubmitted", 1, &v1.to_string()).unwrap();
        let Event::JobSubmitted(e) = event else {
            panic!("not a JobSubmitted: {event:?}")
        };
        assert_eq!(
            e.job_id,
            JobId::parse("3f1c7f64-2b44-4a8e-9d5c-0c9a4f2f1a10").unwrap()
        );
        assert_eq!(e.job_type, "cpu_bound");
        assert_eq!(e.split, Split::Total { total_tasks: 12 });
        assert_eq!(e.total_tasks, 12);
        assert_eq!(e.parameters.get("work_duration_seconds"), Some(&json!(0.5)));
        assert_eq!(e.max_attempts, 3);
        assert_eq!(e.timeout_seconds, 300);
        assert_eq!(
            e.submitted_at,
            Utc.with_ymd_and_hms(2023, 11, 2, 8, 15, 30).unwrap()
                + chrono::Duration::microseconds(123_456)
        );
    }

    #[test]
    fn v1_null_parameters_and_offset_timestamps() {
        let v1 = json!({
            "job_id": "3f1c7f64-2b44-4a8e-9d5c-0c9a4f2f1a10",
            "job_type": "",
            "num_tasks": 1,
            "parameters": null,
            "submitted_at": "2023-11-02T10:15:30+02:00"
        });
        let Event::JobSubmitted(e) = Event::decode("JobSubmitted", 1, &v1.to_string()).unwrap()
        else {
            unreachable!()
        };
        assert!(e.parameters.is_empty());
        assert_eq!(
            e.submitted_at,
            Utc.with_ymd_and_hms(2023, 11, 2, 8, 15, 30).unwrap()
        );
    }

    #[test]
    fn unknown_types_and_versions_are_errors() {
        assert!(matches!(
            Event::decode("JobExploded", 1, &json!({}).to_string()),
            Err(DecodeError::UnknownType { event_type }) if event_type == "JobExploded"
        ));
        assert!(matches!(
            Event::decode("JobSubmitted", 3, &json!({}).to_string()),
            Err(DecodeError::UnsupportedVersion {
                version: 3,
                current: 2,
                ..
            })
        ));
        assert!(matches!(
            Event::decode("TaskStarted", 0, &json!({}).to_string()),
            Err(DecodeError::UnsupportedVersion { version: 0, .. })
        ));
        assert!(matches!(
            Event::decode("TaskStarted", 2, &json!({}).to_string()),
            Err(DecodeError::UnsupportedVersion { current: 1, .. })
        ));
        assert_eq!(current_schema_version("Nope"), None);
    }

    #[test]
    fn malformed_payloads_are_errors() {
        let err = Event::decode("TaskStarted", 1, &json!({"job_id": 5}).to_string()).unwrap_err();
        assert!(matches!(
            err,
            DecodeError::Malformed {
                event_type: "TaskStarted",
                version: 1,
                ..
            }
        ));
        assert!(
            err.to_string()
                .starts_with("TaskStarted v1 payload is malformed")
        );
        assert!(Event::decode("JobSubmitted", 1, &json!("text").to_string()).is_err());
        assert!(
            Event::decode(
                "JobSubmitted",
                1,
                &json!({"job_id": "3f1c7f64-2b44-4a8e-9d5c-0c9a4f2f1a10", "job_type": "x",
                        "num_tasks": 1, "submitted_at": "yesterday"})
                .to_string()
            )
            .is_err()
        );
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let started = one_of_each().swap_remove(7);
        let mut data = started.to_data();
        data["trace"] = json!("abc");
        assert_eq!(
            Event::decode("TaskStarted", 1, &data.to_string()).unwrap(),
            started
        );
    }
}
