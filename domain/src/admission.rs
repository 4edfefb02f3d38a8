//! Cluster-wide concurrency and rate limits: what may be asked for, and the table of limits as
//! the stream `limits` tells it.
//!
//! A limit applies to a job type or to a concurrency key ([`LimitKind`]); a job's own
//! `max_concurrency` is part of its submission. The orchestrator enforces them at admission
//! (see `docs/adr/0016-admission-limits-and-fair-share.md`); this module only validates and
//! folds.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::events::{Event, JobConcurrencySet, JobSubmitted, LimitKind, LimitSet};
use crate::rejection::Rejection;

/// Highest concurrency limit (per job, type or key).
pub const MAX_CONCURRENCY: u32 = 1_000_000;
/// Lowest rate limit, in tasks per second (one task every 1000 s).
pub const MIN_RATE_PER_SECOND: f64 = 0.001;
/// Highest rate limit, in tasks per second.
pub const MAX_RATE_PER_SECOND: f64 = 100_000.0;
/// Longest job type or key a limit may name, in characters.
pub const MAX_LIMIT_NAME_CHARS: usize = 200;
/// The key name of a limit that applies to every key, each on its own.
pub const EVERY_KEY: &str = "*";

/// A concurrency limit as given (`None`: no limit), checked: 1 to [`MAX_CONCURRENCY`].
pub fn check_max_concurrency(value: Option<i64>) -> Result<Option<u32>, Rejection> {
    let Some(value) = value else {
        return Ok(None);
    };
    match u32::try_from(value) {
        Ok(n) if (1..=MAX_CONCURRENCY).contains(&n) => Ok(Some(n)),
        _ => Err(Rejection::InvalidLimit {
            field: "max_concurrency",
            message: format!(
                "must be between 1 and {MAX_CONCURRENCY} (or null for no limit), got {value}"
            ),
        }),
    }
}

/// A rate limit as given (`None`: no limit), checked: a finite number of tasks per second
/// between [`MIN_RATE_PER_SECOND`] and [`MAX_RATE_PER_SECOND`].
pub fn check_rate(value: Option<f64>) -> Result<Option<f64>, Rejection> {
    let Some(value) = value else {
        return Ok(None);
    };
    if value.is_finite() && (MIN_RATE_PER_SECOND..=MAX_RATE_PER_SECOND).contains(&value) {
        Ok(Some(value))
    } else {
        Err(Rejection::InvalidLimit {
            field: "rate_per_second",
            message: format!(
                "must be between {MIN_RATE_PER_SECOND} and {MAX_RATE_PER_SECOND} tasks per \
                 second (or null for no limit), got {value}"
            ),
        })
    }
}

/// The job's concurrency key: the value of its parameter `parameter` (a string, or a number
/// written as JSON), or a clear rejection when the parameter is absent or not a scalar.
pub fn concurrency_key(
    parameters: &Map<String, Value>,
    parameter: &str,
) -> Result<String, Rejection> {
    let invalid = |message: String| Rejection::InvalidLimit {
        field: "concurrency_key",
        message,
    };
    if parameter.is_empty() || parameter.chars().count() > MAX_LIMIT_NAME_CHARS {
        return Err(invalid(format!(
            "must name a parameter of the job (1 to {MAX_LIMIT_NAME_CHARS} characters)"
        )));
    }
    let key = match parameters.get(parameter) {
        None => {
            return Err(invalid(format!(
                "names the parameter {parameter:?}, which the job's parameters do not have"
            )));
        }
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(_) => {
            return Err(invalid(format!(
                "the parameter {parameter:?} must be a string, a number or a boolean to be a key"
            )));
        }
    };
    if key.is_empty() || key.chars().count() > MAX_LIMIT_NAME_CHARS || key == EVERY_KEY {
        return Err(invalid(format!(
            "the value of {parameter:?} must be 1 to {MAX_LIMIT_NAME_CHARS} characters and \
             not {EVERY_KEY:?}"
        )));
    }
    Ok(key)
}

/// A job's own concurrency settings, as a submission gives them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobConcurrency {
    /// Most of its tasks admitted and not ended at once.
    pub max_concurrency: Option<i64>,
    /// The parameter whose value is the job's concurrency key.
    pub concurrency_key: Option<String>,
}

/// The `JobConcurrencySet` that goes with a `JobSubmitted` (nothing when no setting is
/// given), or why the settings are refused.
pub fn decide_job_concurrency(
    submitted: &JobSubmitted,
    settings: JobConcurrency,
) -> Result<Vec<Event>, Rejection> {
    let max_concurrency = check_max_concurrency(settings.max_concurrency)?;
    let concurrency_key = settings
        .concurrency_key
        .as_deref()
        .map(|parameter| concurrency_key(&submitted.parameters, parameter))
        .transpose()?;
    if max_concurrency.is_none() && concurrency_key.is_none() {
        return Ok(Vec::new());
    }
    Ok(vec![Event::JobConcurrencySet(JobConcurrencySet {
        job_id: submitted.job_id,
        max_concurrency,
        concurrency_key,
        key_parameter: settings.concurrency_key,
        at: submitted.submitted_at,
    })])
}

/// Set (or remove, with both values `None`) the limit of a job type or a key.
#[derive(Debug, Clone, PartialEq)]
pub struct SetLimit {
    /// What it applies to.
    pub kind: LimitKind,
    /// The job type, or the key (`*`: every key, each on its own).
    pub name: String,
    /// Most tasks admitted and not ended at once.
    pub max_concurrency: Option<i64>,
    /// Most tasks admitted per second.
    pub rate_per_second: Option<f64>,
    /// When.
    pub now: DateTime<Utc>,
}

/// `LimitSet`, or why the input is refused.
pub fn decide_set_limit(cmd: SetLimit) -> Result<Vec<Event>, Rejection> {
    if cmd.name.is_empty()
        || cmd.name.chars().count() > MAX_LIMIT_NAME_CHARS
        || cmd.name.chars().any(char::is_control)
    {
        return Err(Rejection::InvalidLimit {
            field: "name",
            message: format!(
                "must be 1 to {MAX_LIMIT_NAME_CHARS} characters without control characters"
            ),
        });
    }
    if cmd.kind == LimitKind::JobType && cmd.name == EVERY_KEY {
        return Err(Rejection::InvalidLimit {
            field: "name",
            message: format!("{EVERY_KEY:?} means every key; a job type limit names one type"),
        });
    }
    Ok(vec![Event::LimitSet(LimitSet {
        kind: cmd.kind,
        max_concurrency: check_max_concurrency(cmd.max_concurrency)?,
        rate_per_second: check_rate(cmd.rate_per_second)?,
        name: cmd.name,
        at: cmd.now,
    })])
}

/// One limit's values.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LimitValues {
    /// Most tasks admitted and not ended at once.
    pub max_concurrency: Option<u32>,
    /// Most tasks admitted per second.
    pub rate_per_second: Option<f64>,
}

impl LimitValues {
    /// Neither a concurrency nor a rate limit.
    pub fn is_none(&self) -> bool {
        self.max_concurrency.is_none() && self.rate_per_second.is_none()
    }
}

/// Every limit in force, folded from `LimitSet` events.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LimitTable {
    limits: BTreeMap<(LimitKind, String), (LimitValues, DateTime<Utc>)>,
}

impl LimitTable {
    /// Applies a `LimitSet` (other events change nothing).
    pub fn apply(&mut self, event: &Event) {
        if let Event::LimitSet(e) = event {
            let values = LimitValues {
                max_concurrency: e.max_concurrency,
                rate_per_second: e.rate_per_second,
            };
            let key = (e.kind, e.name.clone());
            if values.is_none() {
                self.limits.remove(&key);
            } else {
                self.limits.insert(key, (values, e.at));
            }
        }
    }

    /// Whether a job's tasks wait for admission because of a limit: its own `maxConcurrency`,
    /// or a limit on its type or its key (the SQS fair-share window aside).
    pub fn limits_job(&self, job: &crate::job::JobState) -> bool {
        let own = job.concurrency.as_ref();
        own.is_some_and(|c| c.max_concurrency.is_some())
            || job
                .submitted
                .as_ref()
                .is_some_and(|s| self.job_type(&s.job_type).is_some())
            || own
                .and_then(|c| c.concurrency_key.as_deref())
                .is_some_and(|key| self.key(key).is_some())
    }

    /// The limit of a job type, if any.
    pub fn job_type(&self, job_type: &str) -> Option<LimitValues> {
        self.get(LimitKind::JobType, job_type)
    }

    /// The limit of a key: its own, else the one for every key (`*`).
    pub fn key(&self, key: &str) -> Option<LimitValues> {
        self.get(LimitKind::Key, key)
            .or_else(|| self.get(LimitKind::Key, EVERY_KEY))
    }

    fn get(&self, kind: LimitKind, name: &str) -> Option<LimitValues> {
        if self.limits.is_empty() {
            return None;
        }
        self.limits
            .get(&(kind, name.to_owned()))
            .map(|(values, _)| *values)
    }

    /// Every limit, by kind then name, with when it was last set.
    pub fn iter(&self) -> impl Iterator<Item = (LimitKind, &str, LimitValues, DateTime<Utc>)> {
        self.limits
            .iter()
            .map(|((kind, name), (values, at))| (*kind, name.as_str(), *values, *at))
    }

    /// No limit is set.
    pub fn is_empty(&self) -> bool {
        self.limits.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(kind: LimitKind, name: &str, c: Option<i64>, r: Option<f64>) -> SetLimit {
        SetLimit {
            kind,
            name: name.into(),
            max_concurrency: c,
            rate_per_second: r,
            now: DateTime::<Utc>::UNIX_EPOCH,
        }
    }

    #[test]
    fn a_valid_limit_is_set_and_folded_and_removed() {
        let mut table = LimitTable::default();
        for event in decide_set_limit(set(LimitKind::Key, "acme", Some(2), Some(5.0))).unwrap() {
            table.apply(&event);
        }
        let expected = LimitValues {
            max_concurrency: Some(2),
            rate_per_second: Some(5.0),
        };
        assert_eq!(table.key("acme"), Some(expected));
        assert_eq!(table.key("other"), None);
        assert_eq!(table.job_type("acme"), None);
        for event in decide_set_limit(set(LimitKind::Key, "*", Some(1), None)).unwrap() {
            table.apply(&event);
        }
        assert_eq!(table.key("other").unwrap().max_concurrency, Some(1));
        assert_eq!(table.key("acme"), Some(expected));
        for event in decide_set_limit(set(LimitKind::Key, "acme", None, None)).unwrap() {
            table.apply(&event);
        }
        assert_eq!(table.key("acme").unwrap().max_concurrency, Some(1));
        assert_eq!(table.iter().count(), 1);
    }

    #[test]
    fn bad_limits_are_refused_with_the_field_and_the_bounds() {
        let cases = [
            (
                set(LimitKind::JobType, "t", Some(-1), None),
                "max_concurrency",
            ),
            (
                set(LimitKind::JobType, "t", Some(0), None),
                "max_concurrency",
            ),
            (
                set(LimitKind::JobType, "t", Some(2_000_000), None),
                "max_concurrency",
            ),
            (
                set(LimitKind::JobType, "t", None, Some(0.0)),
                "rate_per_second",
            ),
            (
                set(LimitKind::JobType, "t", None, Some(-3.0)),
                "rate_per_second",
            ),
            (
                set(LimitKind::JobType, "t", None, Some(1e9)),
                "rate_per_second",
            ),
            (
                set(LimitKind::JobType, "t", None, Some(f64::NAN)),
                "rate_per_second",
            ),
            (set(LimitKind::JobType, "", Some(1), None), "name"),
            (set(LimitKind::JobType, "*", Some(1), None), "name"),
            (set(LimitKind::Key, &"k".repeat(201), Some(1), None), "name"),
        ];
        for (cmd, field) in cases {
            let rejection = decide_set_limit(cmd.clone()).unwrap_err();
            assert_eq!(rejection.field(), field, "{cmd:?}");
            assert_eq!(rejection.code(), "INVALID_INPUT");
        }
        let message = decide_set_limit(set(LimitKind::Key, "k", Some(-1), None))
            .unwrap_err()
            .to_string();
        assert!(message.contains("between 1 and 1000000"), "{message}");
    }

    #[test]
    fn the_concurrency_key_is_a_scalar_parameter() {
        let params = json!({"tenant": "acme", "account": 42, "nested": {"a": 1}, "star": "*"});
        let params = params.as_object().unwrap();
        assert_eq!(concurrency_key(params, "tenant").unwrap(), "acme");
        assert_eq!(concurrency_key(params, "account").unwrap(), "42");
        let unknown = concurrency_key(params, "customer").unwrap_err();
        assert_eq!(unknown.field(), "concurrency_key");
        assert!(unknown.to_string().contains("\"customer\""), "{unknown}");
        assert!(concurrency_key(params, "nested").is_err());
        assert!(concurrency_key(params, "star").is_err());
        assert!(concurrency_key(params, "").is_err());
    }
}
