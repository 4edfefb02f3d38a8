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
        }
    }
}

impl Limits {
    /// Every way `command` breaks these limits or is malformed, in field order (`job_type`,
    /// split, `parameters`, `max_attempts`, `timeout_seconds`); empty when it is acceptable.
    /// `decide_job` rejects with the first; an API that reports all errors at once (REST 422)
    /// can use the whole list.
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

        out
    }
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
        }
    }

    fn first(cmd: &SubmitJob) -> Option<String> {
        Limits::default()
            .violations(cmd)
            .first()
            .map(ToString::to_string)
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
