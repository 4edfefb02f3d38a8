//! A job submission as every API gives it ([`SubmitJobInput`]), and the checks on its fields
//! that come before the domain's: exactly one way to split, no negative numbers, no NUL
//! characters, a usable idempotency key.

use serde_json::Value;
use shoal_domain::Split;

use super::CommandError;

/// Longest client idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 256;

/// Items per task when an item split gives no batch size: one task per item.
pub const DEFAULT_BATCH_SIZE: u32 = 1;

/// Idempotency keys are global in the log; a command's keys live in their own namespace so a
/// key used for one command can never replay another's result.
const SUBMIT_KEY_NAMESPACE: &str = "submit_job:";

/// A job submission, as every API gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct SubmitJobInput {
    /// Which handler runs the tasks. May be empty.
    pub job_type: String,
    /// How the job becomes tasks (see [`split_from_input`] to build it from API fields).
    pub split: Split,
    /// A JSON object, or null for none.
    pub parameters: Value,
    /// Attempts per task; `None` for the default (3, capped by the limits).
    pub max_attempts: Option<u32>,
    /// Timeout of one attempt; `None` for the default (300 s, capped by the limits).
    pub timeout_seconds: Option<u32>,
    /// A client-chosen key: submitting again with the same key returns the first job and
    /// appends nothing (whatever the rest of the input is).
    pub idempotency_key: Option<String>,
    /// The handler when no worker has one for `job_type` and `parameters.work_type` names
    /// none: `Some("cpu_bound")` from the original system's REST API, `None` from GraphQL
    /// (such a task fails with "no handler for job type ...").
    pub fallback_handler: Option<String>,
    /// Higher runs first (see `shoal_domain::priority`); `None` for the default, 0.
    pub priority: Option<i64>,
}

/// Builds a [`Split`] from an API's fields: `total_tasks`, or `items` cut into batches of
/// `batch_size` (default [`DEFAULT_BATCH_SIZE`]). Exactly one of `total_tasks` and `items` must
/// be given, and `batch_size` only with `items`. Ranges and limits are the domain's to check;
/// only negative numbers are refused here.
pub fn split_from_input(
    total_tasks: Option<i64>,
    items: Option<Vec<Value>>,
    batch_size: Option<i64>,
) -> Result<Split, CommandError> {
    match (total_tasks, items) {
        (Some(_), Some(_)) => Err(CommandError::invalid(
            "items",
            "give either total_tasks or items (with batch_size), not both",
        )),
        (None, None) => Err(CommandError::invalid(
            "total_tasks",
            "either total_tasks or items is required",
        )),
        (Some(total), None) => {
            if batch_size.is_some() {
                return Err(CommandError::invalid(
                    "batch_size",
                    "batch_size applies only to items, not to total_tasks",
                ));
            }
            Ok(Split::Total {
                total_tasks: count("total_tasks", total)?,
            })
        }
        (None, Some(items)) => Ok(Split::Items {
            items,
            batch_size: match batch_size {
                Some(size) => count("batch_size", size)?,
                None => DEFAULT_BATCH_SIZE,
            },
        }),
    }
}

/// A non-negative API integer as the domain's `u32`. Negative is invalid; above `u32::MAX`
/// saturates, so the domain reports it against its limit.
pub fn count(field: &'static str, value: i64) -> Result<u32, CommandError> {
    if value < 0 {
        return Err(CommandError::invalid(
            field,
            format!("{field} must not be negative, got {value}"),
        ));
    }
    Ok(u32::try_from(value).unwrap_or(u32::MAX))
}

/// The log's idempotency key for a client's submission key.
pub(super) fn submit_key(key: &str) -> Result<String, CommandError> {
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_BYTES {
        return Err(CommandError::invalid(
            "idempotency_key",
            format!("idempotency_key must be 1 to {MAX_IDEMPOTENCY_KEY_BYTES} bytes long"),
        ));
    }
    if key.contains('\0') {
        return Err(CommandError::invalid(
            "idempotency_key",
            "idempotency_key must not contain NUL characters",
        ));
    }
    Ok(format!("{SUBMIT_KEY_NAMESPACE}{key}"))
}

/// The log cannot store NUL characters (Postgres text); refuse them as bad input rather than
/// let the append fail as an internal error.
pub(super) fn check_no_nul(input: &SubmitJobInput) -> Result<(), CommandError> {
    let nul = |field: &'static str| {
        Err(CommandError::invalid(
            field,
            format!("{field} must not contain NUL characters"),
        ))
    };
    if input.job_type.contains('\0') {
        return nul("job_type");
    }
    if contains_nul(&input.parameters) {
        return nul("parameters");
    }
    if let Split::Items { items, .. } = &input.split
        && items.iter().any(contains_nul)
    {
        return nul("items");
    }
    Ok(())
}

pub(super) fn contains_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(contains_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || contains_nul(v)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn split_needs_exactly_one_of_total_and_items() {
        assert_eq!(
            split_from_input(Some(3), None, None).unwrap(),
            Split::Total { total_tasks: 3 }
        );
        assert_eq!(
            split_from_input(None, Some(vec![json!(1)]), None).unwrap(),
            Split::Items {
                items: vec![json!(1)],
                batch_size: 1
            }
        );
        let field = |r: Result<Split, CommandError>| r.unwrap_err().field();
        assert_eq!(
            field(split_from_input(Some(1), Some(vec![]), None)),
            Some("items")
        );
        assert_eq!(
            field(split_from_input(None, None, None)),
            Some("total_tasks")
        );
        assert_eq!(
            field(split_from_input(Some(1), None, Some(2))),
            Some("batch_size")
        );
        assert_eq!(
            field(split_from_input(Some(-1), None, None)),
            Some("total_tasks")
        );
        assert_eq!(
            split_from_input(Some(i64::MAX), None, None).unwrap(),
            Split::Total {
                total_tasks: u32::MAX
            }
        );
    }

    #[test]
    fn idempotency_keys_are_namespaced_and_checked() {
        assert_eq!(submit_key("k1").unwrap(), "submit_job:k1");
        assert!(submit_key("").is_err());
        assert!(submit_key(&"x".repeat(MAX_IDEMPOTENCY_KEY_BYTES + 1)).is_err());
        assert!(submit_key("a\0b").is_err());
    }
}
