//! Configurable limits on what a job may ask for, and the check of a submission against them.

use std::io;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::job::SubmitJob;
use crate::rejection::Rejection;
use crate::split::{ITEMS_KEY, Split};

/// `max_attempts` of a job that does not give one (the original system's value).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// `timeout_seconds` of a job that does not give one.
pub const DEFAULT_TIMEOUT_SECONDS: u32 = 300;

/// Default of [`Limits::max_job_bytes`]: 1 GiB (e.g. 16,384 tasks with 64 KiB of parameters,
/// or 1,000,000 tasks with 1 KiB).
pub const DEFAULT_MAX_JOB_BYTES: u64 = 1024 * 1024 * 1024;
/// Default of [`Limits::max_message_bytes`]: SQS's limit, 256 KiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// Upper bounds on a submission. Every bound is inclusive; sizes are of the compact JSON
/// serialization. Deserializes with every missing field at its default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Most tasks one job may have (either split).
    pub max_tasks_per_job: u32,
    /// Most items one item split may have.
    pub max_items_per_job: u32,
    /// Largest `batch_size` of an item split.
    pub max_batch_size: u32,
    /// Largest serialized size of `parameters`, in bytes.
    pub max_parameters_bytes: usize,
    /// Largest serialized size of `items`, in bytes.
    pub max_items_bytes: usize,
    /// Largest `max_attempts`.
    pub max_attempts_limit: u32,
    /// Largest `timeout_seconds`.
    pub max_timeout_seconds: u32,
    /// Longest `job_type`, in characters.
    pub max_job_type_len: usize,
    /// Most task input one job may carry in all, in bytes: `parameters` once per task, plus
    /// the items (each in one task). Every byte of it is stored in the log, the tasks table
    /// and the queue.
    pub max_job_bytes: u64,
    /// Largest queue message of one task, in bytes (SQS refuses more than 256 KiB).
    pub max_message_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_tasks_per_job: 1_000_000,
            max_items_per_job: 100_000,
            max_batch_size: 10_000,
            max_parameters_bytes: 64 * 1024,
            max_items_bytes: 8 * 1024 * 1024,
            max_attempts_limit: 25,
            max_timeout_seconds: 86_400,
            max_job_type_len: 200,
            max_job_bytes: DEFAULT_MAX_JOB_BYTES,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        }
    }
}

impl Limits {
    /// Every way `command` breaks these limits or is malformed, in field order (`job_type`,
    /// split, `parameters`, `max_attempts`, `timeout_seconds`, `priority`); empty when it is
    /// acceptable. `decide_job` rejects with the first; an API that reports all errors at once
    /// (REST 422) can use the whole list.
    pub fn violations(&self, command: &SubmitJob) -> Vec<Rejection> {
        let mut out = Vec::new();

        let len = command.job_type.chars().count();
        if len > self.max_job_type_len {
            out.push(Rejection::JobTypeTooLong {
                len,
                max: self.max_job_type_len,
            });
        }

        match &command.split {
            Split::Total { total_tasks } => {
                if *total_tasks == 0 || *total_tasks > self.max_tasks_per_job {
                    out.push(Rejection::TotalTasksOutOfRange {
                        got: *total_tasks,
                        max: self.max_tasks_per_job,
                    });
                }
            }
            Split::Items { items, batch_size } => {
                if items.is_empty() {
                    out.push(Rejection::ItemsEmpty);
                } else if items.len() > self.max_items_per_job as usize {
                    out.push(Rejection::TooManyItems {
                        got: items.len(),
                        max: self.max_items_per_job,
                    });
                } else {
                    let bytes = json_size_of_all(items);
                    if bytes > self.max_items_bytes {
                        out.push(Rejection::ItemsTooLarge {
                            bytes,
                            max: self.max_items_bytes,
                        });
                    }
                }
                if *batch_size == 0 || *batch_size > self.max_batch_size {
                    out.push(Rejection::BatchSizeOutOfRange {
                        got: *batch_size,
                        max: self.max_batch_size,
                    });
                } else if !items.is_empty() {
                    let tasks = items.len().div_ceil(*batch_size as usize);
                    if tasks > self.max_tasks_per_job as usize {
                        out.push(Rejection::TooManyTasks {
                            items: items.len(),
                            batch_size: *batch_size,
                            tasks,
                            max: self.max_tasks_per_job,
                        });
                    }
                }
            }
        }

        match &command.parameters {
            Value::Null => {}
            Value::Object(map) => {
                let bytes = json_size(&command.parameters);
                if bytes > self.max_parameters_bytes {
                    out.push(Rejection::ParametersTooLarge {
                        bytes,
                        max: self.max_parameters_bytes,
                    });
                }
                if matches!(command.split, Split::Items { .. }) && map.contains_key(ITEMS_KEY) {
                    out.push(Rejection::ParametersContainItems);
                }
            }
            _ => out.push(Rejection::ParametersNotObject),
        }

        // Budgets over the whole job and over each task's message, once the parts are valid
        // (sizes of invalid parts would only repeat their errors).
        if out.is_empty()
            && let Some(rejection) = self.size_violation(command)
        {
            out.push(rejection);
        }

        if let Some(got) = command.max_attempts
            && (got == 0 || got > self.max_attempts_limit)
        {
            out.push(Rejection::MaxAttemptsOutOfRange {
                got,
                max: self.max_attempts_limit,
            });
        }
        if let Some(got) = command.timeout_seconds
            && (got == 0 || got > self.max_timeout_seconds)
        {
            out.push(Rejection::TimeoutOutOfRange {
                got,
                max: self.max_timeout_seconds,
            });
        }
        if let Err(rejection) = crate::priority::check(command.priority) {
            out.push(rejection);
        }

        out
    }
}

impl Limits {
    /// The per-job byte budget and the per-message limit (see the fields), for a command whose
    /// parts are each within their own limits.
    fn size_violation(&self, command: &SubmitJob) -> Option<Rejection> {
        let empty = serde_json::Map::new();
        let parameters = command.parameters.as_object().unwrap_or(&empty);
        let parameters_bytes = json_size_of_map(parameters) as u64;
        let tasks = command.split.task_count();
        let items_bytes = match &command.split {
            Split::Items { items, .. } => json_size_of_all(items) as u64,
            Split::Total { .. } => 0,
        };
        let bytes = parameters_bytes
            .saturating_mul(u64::from(tasks))
            .saturating_add(items_bytes);
        if bytes > self.max_job_bytes {
            return Some(Rejection::JobTooLarge {
                bytes,
                tasks,
                max: self.max_job_bytes,
            });
        }
        // The largest task input: the parameters, with the largest batch of items.
        let (index, input_bytes) = match &command.split {
            Split::Total { .. } => (0, parameters_bytes as usize),
            Split::Items { items, batch_size } => {
                let size = (*batch_size).max(1) as usize;
                let (index, chunk_bytes) = items
                    .chunks(size)
                    .map(json_size_of_all)
                    .enumerate()
                    .max_by_key(|(i, bytes)| (*bytes, std::cmp::Reverse(*i)))
                    .unwrap_or((0, 2));
                // `{..., "items": [...]}`: the key, its quotes and colon, and a comma when the
                // parameters are not empty.
                let key = ITEMS_KEY.len() + 3 + usize::from(!parameters.is_empty());
                (index, parameters_bytes as usize + key + chunk_bytes)
            }
        };
        let bytes = message_envelope_bytes(&command.job_type).saturating_add(input_bytes);
        (bytes > self.max_message_bytes).then(|| Rejection::TaskMessageTooLarge {
            index: u32::try_from(index).unwrap_or(u32::MAX),
            bytes,
            max: self.max_message_bytes,
        })
    }
}

/// The bytes of a task message around its parameters, at their largest: every id, number,
/// time and trace context at full width (see [`crate::message::TaskMessage`]).
fn message_envelope_bytes(job_type: &str) -> usize {
    let widest = crate::message::TaskMessage {
        task_id: uuid::Uuid::max(),
        job_id: uuid::Uuid::max(),
        task_index: u32::MAX,
        parameters: Value::Object(serde_json::Map::new()),
        job_type: job_type.to_owned(),
        attempt: u32::MAX,
        stream_version: i64::MAX,
        max_attempts: u32::MAX,
        timeout_seconds: u32::MAX,
        not_before: Some(chrono::DateTime::<chrono::Utc>::MAX_UTC),
        traceparent: Some(format!("00-{:032x}-{:016x}-01", u128::MAX, u64::MAX)),
        previous_attempt_traceparent: Some(format!("00-{:032x}-{:016x}-01", u128::MAX, u64::MAX)),
        fallback_handler: Some(crate::job::ORIGINAL_DEFAULT_HANDLER.to_owned()),
    };
    // Minus the `{}` of the empty parameters, which the input's size counts.
    widest.encode().len() - 2
}

fn json_size_of_map(map: &serde_json::Map<String, Value>) -> usize {
    let mut counter = ByteCounter(0);
    let _ = serde_json::to_writer(&mut counter, map);
    counter.0
}

/// Counts bytes written to it; lets us measure JSON without building the string.
struct ByteCounter(usize);

impl io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The size in bytes of `value` serialized as compact JSON.
pub fn json_size(value: &Value) -> usize {
    let mut counter = ByteCounter(0);
    // Writing a `Value` into an infallible sink cannot fail; should it ever, the partial
    // count is still a lower bound, which is good enough for a limit check.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

fn json_size_of_all(items: &[Value]) -> usize {
    let mut counter = ByteCounter(0);
    let _ = serde_json::to_writer(&mut counter, items);
    counter.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::JobId;
    use chrono::Utc;
    use serde_json::json;

    fn submit(split: Split) -> SubmitJob {
        SubmitJob {
            job_id: JobId::new(),
            job_type: "t".into(),
            split,
            parameters: Value::Null,
            max_attempts: None,
            timeout_seconds: None,
            limits: Limits::default(),
            now: Utc::now(),
            fallback_handler: None,
            priority: 0,
        }
    }

    fn first(cmd: &SubmitJob) -> Option<String> {
        Limits::default()
            .violations(cmd)
            .first()
            .map(ToString::to_string)
    }

    fn with_parameters(split: Split, parameters: Value) -> SubmitJob {
        SubmitJob {
            parameters,
            ..submit(split)
        }
    }

    #[test]
    fn a_job_may_not_copy_its_parameters_into_a_million_tasks() {
        // 64 KiB of parameters (the largest allowed) into 1,000,000 tasks: 64 GB.
        let big = json!({"blob": "x".repeat(64 * 1024 - 20)});
        let cmd = with_parameters(
            Split::Total {
                total_tasks: 1_000_000,
            },
            big.clone(),
        );
        let violations = Limits::default().violations(&cmd);
        assert!(
            matches!(
                violations.as_slice(),
                [Rejection::JobTooLarge { tasks: 1_000_000, bytes, max: DEFAULT_MAX_JOB_BYTES }]
                    if *bytes > 60_000_000_000
            ),
            "{violations:?}"
        );
        let message = violations[0].to_string();
        assert!(
            message.starts_with("the job's 1000000 tasks would carry"),
            "{message}"
        );
        assert_eq!(violations[0].field(), "parameters");
        // The same parameters in 1,000 tasks fit; so do 1 KiB in a million.
        let cmd = with_parameters(Split::Total { total_tasks: 1_000 }, big);
        assert_eq!(Limits::default().violations(&cmd), vec![]);
        let small = json!({"k": "x".repeat(1000)});
        let cmd = with_parameters(
            Split::Total {
                total_tasks: 1_000_000,
            },
            small,
        );
        assert_eq!(Limits::default().violations(&cmd), vec![]);
    }

    #[test]
    fn each_tasks_queue_message_must_fit_in_a_queue_message() {
        // 100 items of 4 KiB in batches of 100: one message of ~400 KiB, over SQS's 256 KiB.
        let items: Vec<Value> = (0..100)
            .map(|i| json!(format!("{i}{}", "y".repeat(4096))))
            .collect();
        let cmd = submit(Split::Items {
            items: items.clone(),
            batch_size: 100,
        });
        let violations = Limits::default().violations(&cmd);
        assert!(
            matches!(
                violations.as_slice(),
                [Rejection::TaskMessageTooLarge { index: 0, bytes, max: DEFAULT_MAX_MESSAGE_BYTES }]
                    if *bytes > 400_000
            ),
            "{violations:?}"
        );
        assert!(violations[0].to_string().contains("smaller batch_size"));
        // In batches of 50, each message is ~200 KiB: it fits.
        let cmd = submit(Split::Items {
            items,
            batch_size: 50,
        });
        assert_eq!(Limits::default().violations(&cmd), vec![]);
        // The computed size is an upper bound of a real message's.
        let limits = Limits {
            max_message_bytes: 1000,
            ..Limits::default()
        };
        let fits = |n: usize| {
            let cmd = with_parameters(Split::Total { total_tasks: 1 }, json!({"p": "z".repeat(n)}));
            limits.violations(&cmd).is_empty()
        };
        let largest = (0..1000).rev().find(|n| fits(*n)).unwrap();
        let real = crate::message::TaskMessage {
            task_id: uuid::Uuid::now_v7(),
            job_id: uuid::Uuid::now_v7(),
            task_index: 0,
            parameters: json!({"p": "z".repeat(largest)}),
            job_type: "t".into(),
            attempt: 1,
            stream_version: 1,
            max_attempts: 3,
            timeout_seconds: 300,
            not_before: None,
            traceparent: None,
            previous_attempt_traceparent: None,
            fallback_handler: None,
        };
        assert!(real.encode().len() <= 1000);
    }

    #[test]
    fn json_size_is_the_compact_serialization() {
        let v = json!({"a": [1, "x"]});
        assert_eq!(json_size(&v), serde_json::to_string(&v).unwrap().len());
    }

    #[test]
    fn defaults() {
        let l = Limits::default();
        assert_eq!(l.max_tasks_per_job, 1_000_000);
        assert_eq!(l.max_parameters_bytes, 65_536);
        assert_eq!(l.max_items_bytes, 8 * 1024 * 1024);
        let partial: Limits = serde_json::from_value(json!({"max_batch_size": 5})).unwrap();
        assert_eq!(partial.max_batch_size, 5);
        assert_eq!(partial.max_attempts_limit, 25);
    }

    #[test]
    fn acceptable_submissions_have_no_violations() {
        assert!(
            Limits::default()
                .violations(&submit(Split::Total { total_tasks: 1 }))
                .is_empty()
        );
        let mut cmd = submit(Split::Items {
            items: vec![json!(1); 10],
            batch_size: 3,
        });
        cmd.parameters = json!({"k": "v"});
        cmd.max_attempts = Some(25);
        cmd.timeout_seconds = Some(86_400);
        assert!(Limits::default().violations(&cmd).is_empty());
    }

    #[test]
    fn total_tasks_bounds() {
        assert_eq!(
            first(&submit(Split::Total { total_tasks: 0 })).as_deref(),
            Some("total_tasks must be between 1 and 1000000, got 0")
        );
        assert_eq!(
            first(&submit(Split::Total {
                total_tasks: 1_000_001
            }))
            .as_deref(),
            Some("total_tasks must be between 1 and 1000000, got 1000001")
        );
    }

    #[test]
    fn item_bounds() {
        assert_eq!(
            first(&submit(Split::Items {
                items: vec![],
                batch_size: 1
            }))
            .as_deref(),
            Some("items must not be empty")
        );
        assert_eq!(
            first(&submit(Split::Items {
                items: vec![json!(1)],
                batch_size: 0
            }))
            .as_deref(),
            Some("batch_size must be between 1 and 10000, got 0")
        );
        assert_eq!(
            first(&submit(Split::Items {
                items: vec![json!(1); 100_001],
                batch_size: 10
            }))
            .as_deref(),
            Some("items has 100001 entries, the limit is 100000")
        );
        let big = json!("x".repeat(1024 * 1024));
        let r = Limits::default().violations(&submit(Split::Items {
            items: vec![big; 9],
            batch_size: 1,
        }));
        assert!(matches!(r[..], [Rejection::ItemsTooLarge { max, .. }] if max == 8 << 20));
    }

    #[test]
    fn item_split_task_count_is_limited() {
        let limits = Limits {
            max_tasks_per_job: 10,
            ..Limits::default()
        };
        let r = limits.violations(&submit(Split::Items {
            items: vec![json!(1); 50],
            batch_size: 4,
        }));
        assert_eq!(
            r.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["50 items in batches of 4 give 13 tasks, the limit is 10"]
        );
        assert_eq!(r[0].field(), "batch_size");
    }

    #[test]
    fn parameter_checks() {
        let mut cmd = submit(Split::Total { total_tasks: 1 });
        cmd.parameters = json!([1, 2]);
        assert_eq!(
            first(&cmd).as_deref(),
            Some("parameters must be a JSON object")
        );

        cmd.parameters = json!({"blob": "x".repeat(70_000)});
        let bytes = json_size(&cmd.parameters);
        assert_eq!(
            first(&cmd),
            Some(format!("parameters are {bytes} bytes, the limit is 65536"))
        );

        let mut cmd = submit(Split::Items {
            items: vec![json!(1)],
            batch_size: 1,
        });
        cmd.parameters = json!({"items": 3});
        assert_eq!(
            first(&cmd).as_deref(),
            Some("parameters must not contain \"items\" when the job is split by items")
        );
    }

    #[test]
    fn attempts_timeout_and_job_type() {
        let mut cmd = submit(Split::Total { total_tasks: 1 });
        cmd.max_attempts = Some(0);
        assert_eq!(
            first(&cmd).as_deref(),
            Some("max_attempts must be between 1 and 25, got 0")
        );
        cmd.max_attempts = Some(26);
        assert_eq!(
            first(&cmd).as_deref(),
            Some("max_attempts must be between 1 and 25, got 26")
        );
        cmd.max_attempts = None;
        cmd.timeout_seconds = Some(0);
        assert_eq!(
            first(&cmd).as_deref(),
            Some("timeout_seconds must be between 1 and 86400, got 0")
        );
        cmd.timeout_seconds = None;
        cmd.job_type = "é".repeat(201);
        assert_eq!(
            first(&cmd).as_deref(),
            Some("job_type is 201 characters, the limit is 200")
        );
        cmd.job_type = String::new();
        assert!(
            Limits::default().violations(&cmd).is_empty(),
            "empty job_type is allowed, as on the original"
        );
    }

    #[test]
    fn all_violations_are_reported() {
        let mut cmd = submit(Split::Items {
            items: vec![],
            batch_size: 0,
        });
        cmd.parameters = json!(1);
        cmd.max_attempts = Some(0);
        cmd.timeout_seconds = Some(0);
        let fields: Vec<_> = Limits::default()
            .violations(&cmd)
            .iter()
            .map(Rejection::field)
            .collect();
        assert_eq!(
            fields,
            [
                "items",
                "batch_size",
                "parameters",
                "max_attempts",
                "timeout_seconds"
            ]
        );
    }
}
