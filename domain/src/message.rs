//! The task queue's message body: what the orchestrator sends and a worker receives.
//!
//! It keeps the original system's fields (`task_id`, `job_id`, `task_index`, `parameters`) so
//! an existing worker of that system can still consume it, and adds Shoal's own. The body comes
//! from outside the process (a queue anyone with access may write to), so reading it never
//! panics: a body that is not a message is a [`MessageError`], which a worker dead-letters.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// The message body, as JSON. Unknown fields are ignored when parsing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskMessage {
    /// The task.
    pub task_id: Uuid,
    /// Its job.
    pub job_id: Uuid,
    /// The task's position in the job, from 0.
    pub task_index: u32,
    /// The task's input: the job's parameters, plus `items` for item splits.
    pub parameters: Value,
    /// The job's type (which handler runs the task).
    pub job_type: String,
    /// The attempt this message is for (1 for the first run).
    pub attempt: u32,
    /// The task stream's version after the event that enqueued this attempt
    /// (`TaskEnqueued` or `TaskRetryScheduled`): the worker appends `TaskStarted` expecting it.
    pub stream_version: i64,
    /// How many attempts the task gets.
    pub max_attempts: u32,
    /// How long one attempt may run (0: the default).
    pub timeout_seconds: u32,
    /// Do not run before this time (retry backoff).
    #[serde(default)]
    pub not_before: Option<DateTime<Utc>>,
    /// W3C trace context of the job's submission, when known.
    #[serde(default)]
    pub traceparent: Option<String>,
    /// W3C trace context of the attempt before this one (a retry): the new attempt's span is
    /// linked to it. Left out of the body when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_attempt_traceparent: Option<String>,
}

/// A message body that is not a [`TaskMessage`] (a poison message): dead-letter it, retrying
/// cannot help.
#[derive(Debug, thiserror::Error)]
#[error("not a task message: {0}")]
pub struct MessageError(#[from] serde_json::Error);

impl TaskMessage {
    /// Reads a message body.
    pub fn decode(raw: &str) -> Result<TaskMessage, MessageError> {
        Ok(serde_json::from_str(raw)?)
    }

    /// The body to send.
    #[allow(clippy::expect_used)] // cannot fail: see the comment inside
    pub fn encode(&self) -> String {
        // A struct of strings, numbers, UUIDs, a timestamp and a JSON value: serializing it
        // cannot fail.
        serde_json::to_string(self).expect("task messages always serialize to JSON")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message() -> TaskMessage {
        TaskMessage {
            task_id: Uuid::now_v7(),
            job_id: Uuid::now_v7(),
            task_index: 7,
            parameters: json!({"items": [1, 2], "work_type": "io_bound"}),
            job_type: "score".into(),
            attempt: 2,
            stream_version: 4,
            max_attempts: 3,
            timeout_seconds: 60,
            not_before: Some(Utc::now()),
            traceparent: None,
            previous_attempt_traceparent: None,
        }
    }

    #[test]
    fn a_message_reads_back_as_sent() {
        let m = message();
        assert_eq!(TaskMessage::decode(&m.encode()).unwrap(), m);
    }

    #[test]
    fn numbers_in_parameters_read_back_exactly() {
        // Found by the task_message fuzzer: without exact float parsing a parameter such as
        // 2.6666666666666662e38 came back one unit in the last place off after a queue trip.
        let mut m = message();
        for x in [
            2.6666666666666662e38,
            0.1 + 0.2,
            f64::MAX,
            f64::MIN_POSITIVE,
            5e-324,
        ] {
            m.parameters = json!({ "items": [1, x, 3] });
            let read = TaskMessage::decode(&m.encode()).unwrap();
            assert_eq!(read, m, "{x:e}");
        }
    }

    #[test]
    fn the_original_fields_are_there_and_extra_fields_are_ignored() {
        let m = message();
        let mut value: Value = serde_json::from_str(&m.encode()).unwrap();
        for field in ["task_id", "job_id", "task_index", "parameters"] {
            assert!(value.get(field).is_some(), "{field}");
        }
        value["added_by_a_newer_shoal"] = json!(true);
        value.as_object_mut().unwrap().remove("not_before");
        let read = TaskMessage::decode(&value.to_string()).unwrap();
        assert_eq!(read.not_before, None);
        assert_eq!(read.task_id, m.task_id);
    }

    #[test]
    fn what_is_not_a_message_is_an_error() {
        for raw in [
            "",
            "null",
            "[]",
            "{}",
            r#"{"task_id": "x"}"#,
            "\u{0}",
            r#"{"task_id":"0190a8d2-0000-7000-8000-000000000000","job_id":"0190a8d2-0000-7000-8000-000000000000","task_index":-1,"parameters":{},"job_type":"t","attempt":1,"stream_version":1,"max_attempts":3,"timeout_seconds":1}"#,
        ] {
            let error = TaskMessage::decode(raw).unwrap_err();
            assert!(
                error.to_string().starts_with("not a task message"),
                "{error}"
            );
        }
    }
}
