//! Command errors as the REST API answers them: the original's status codes and bodies.

use serde_json::{Value, json};
use shoal_api::rest::{ApiError, FieldError, body_loc};
use shoal_domain::Rejection;

use crate::commands::CommandError;

/// A command error as the REST API answers it. `count_field` is the REST name of the
/// domain's `total_tasks` (`num_tasks` unless the client sent `total_tasks`). An
/// infrastructure failure keeps its cause, which the response logs once and never sends.
pub fn api_error(error: CommandError, body: &Value, count_field: &str) -> ApiError {
    let field = error.field().map(|field| match field {
        "total_tasks" => count_field.to_owned(),
        other => other.to_owned(),
    });
    let input = |field: &str| body.get(field).cloned().unwrap_or(Value::Null);
    match error {
        CommandError::NotFound(message) => ApiError::NotFound(message),
        CommandError::Conflict => ApiError::Conflict(error.to_string()),
        CommandError::Infrastructure(source) => ApiError::internal(source),
        CommandError::Invalid { message, .. } => {
            let field = field.unwrap_or_default();
            ApiError::invalid(FieldError::new(
                "value_error",
                body_loc(&field),
                message,
                input(&field),
            ))
        }
        CommandError::Rejected(rejection) => {
            let field = field.unwrap_or_default();
            match rejection.code() {
                shoal_domain::rejection::code::INVALID_INPUT
                | shoal_domain::rejection::code::LIMIT_EXCEEDED => {
                    ApiError::invalid(rejection_entry(&rejection, &field, input(&field)))
                }
                shoal_domain::rejection::code::NOT_FOUND => {
                    ApiError::NotFound(rejection.to_string())
                }
                _ => ApiError::Conflict(capitalize(&rejection.to_string())),
            }
        }
    }
}

fn rejection_entry(rejection: &Rejection, field: &str, input: Value) -> FieldError {
    match rejection {
        Rejection::JobTypeTooLong { max, .. } => FieldError::new(
            "string_too_long",
            body_loc(field),
            format!("String should have at most {max} characters"),
            input,
        )
        .with_ctx(json!({ "max_length": max })),
        other => FieldError::new("value_error", body_loc(field), other.to_string(), input),
    }
}

fn capitalize(message: &str) -> String {
    let mut chars = message.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}
