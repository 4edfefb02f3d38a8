//! What a handler hands back must fit in the event log: a result holding a NUL character
//! (Postgres stores neither `\u0000` in `jsonb` nor NUL in `text`) or larger than the worker's
//! limit fails its own task with a clear error. Checked before the append, because appends from
//! every task in flight share one group commit: one event the database refuses would fail the
//! commit for all of them.

use serde_json::Value;

use crate::TaskError;

/// The default of [`crate::WorkerConfig::max_result_bytes`]: 1 MiB, as for a result reported
/// through the REST API.
pub const DEFAULT_MAX_RESULT_BYTES: usize = 1024 * 1024;

/// Longest error message stored for a failed attempt, in characters; a longer one is cut.
pub const MAX_ERROR_CHARS: usize = 10_000;

/// `result` if the log can store it; else the fatal error that fails the task.
pub(crate) fn check_result(
    result: Option<Value>,
    max_bytes: usize,
) -> Result<Option<Value>, TaskError> {
    let Some(value) = result else {
        return Ok(None);
    };
    if contains_nul(&value) {
        return Err(TaskError::fatal(
            "the handler's result holds a NUL character (\\u0000), which the event log cannot \
             store; the task fails",
        ));
    }
    let bytes = serde_json::to_vec(&value).map_or(usize::MAX, |v| v.len());
    if bytes > max_bytes {
        return Err(TaskError::fatal(format!(
            "the handler's result is {bytes} bytes, more than the limit of {max_bytes} \
             (--max-result-bytes); the task fails"
        )));
    }
    Ok(Some(value))
}

/// An error message the log can store: NUL characters replaced by U+FFFD, cut at
/// [`MAX_ERROR_CHARS`].
pub(crate) fn storable_error(message: &str) -> String {
    let mut out: String = message
        .chars()
        .take(MAX_ERROR_CHARS)
        .map(|c| if c == '\0' { '\u{FFFD}' } else { c })
        .collect();
    if message.chars().nth(MAX_ERROR_CHARS).is_some() {
        out.push_str(" […]");
    }
    out
}

fn contains_nul(value: &Value) -> bool {
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
    fn nul_anywhere_in_a_result_fails_the_task_for_good() {
        for bad in [
            json!({"text": "a\u{0}b"}),
            json!({"a\u{0}": 1}),
            json!({"list": [1, {"deep": "\u{0}"}]}),
        ] {
            let error = check_result(Some(bad.clone()), 1024).unwrap_err();
            assert!(!error.retryable, "{bad}");
            assert!(error.message.contains("NUL"), "{}", error.message);
        }
        assert_eq!(
            check_result(Some(json!({"ok": "ü"})), 1024).unwrap(),
            Some(json!({"ok": "ü"}))
        );
        assert_eq!(check_result(None, 0).unwrap(), None);
    }

    #[test]
    fn a_result_over_the_limit_fails_the_task_and_says_by_how_much() {
        let big = json!({"x": "y".repeat(100)});
        let error = check_result(Some(big.clone()), 50).unwrap_err();
        assert!(!error.retryable);
        assert!(
            error
                .message
                .contains("108 bytes, more than the limit of 50"),
            "{}",
            error.message
        );
        assert!(check_result(Some(big), 108).is_ok());
    }

    #[test]
    fn error_messages_are_made_storable() {
        assert_eq!(storable_error("a\u{0}b"), "a\u{FFFD}b");
        let long = "x".repeat(MAX_ERROR_CHARS + 5);
        let stored = storable_error(&long);
        assert!(stored.ends_with(" […]"));
        assert_eq!(stored.chars().count(), MAX_ERROR_CHARS + 4);
    }
}
