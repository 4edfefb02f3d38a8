//! REST input, parsed the way the original (FastAPI) did: JSON bodies whatever their content
//! type, unknown fields ignored, numbers given as strings accepted, and each problem reported
//! as a FastAPI validation entry ([`FieldError`]) at its location.

use std::collections::HashMap;

use serde_json::{Map, Value, json};
use shoal_domain::TaskId;

use super::error::{ApiError, FieldError, query_loc};

/// Parses a request body as JSON, whatever its content type. `Ok(None)` for an empty body
/// (or one of only whitespace); a syntax error is 422 `json_invalid` at its character.
pub fn parse_body(bytes: &[u8]) -> Result<Option<Value>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(bytes).map(Some).map_err(|error| {
        // Python's position: the offending character, or the end for a truncated document.
        let position = if error.is_eof() {
            String::from_utf8_lossy(bytes).chars().count()
        } else {
            char_position(bytes, error.line(), error.column())
        };
        ApiError::invalid(
            FieldError::new(
                "json_invalid",
                vec![json!("body"), json!(position)],
                "JSON decode error",
                json!({}),
            )
            .with_ctx(json!({ "error": error.to_string() })),
        )
    })
}

/// The 0-based character offset of serde_json's 1-based line and column.
fn char_position(bytes: &[u8], line: usize, column: usize) -> usize {
    let text = String::from_utf8_lossy(bytes);
    let before: usize = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(|l| l.chars().count())
        .sum();
    before + column.saturating_sub(1)
}

/// A body that must be a JSON object: `missing` when absent, `model_attributes_type` when it
/// is something else.
pub fn object_body(body: Option<Value>) -> Result<Map<String, Value>, ApiError> {
    match body {
        None | Some(Value::Null) => Err(ApiError::invalid(FieldError::new(
            "missing",
            vec![json!("body")],
            "Field required",
            Value::Null,
        ))),
        Some(Value::Object(map)) => Ok(map),
        Some(other) => Err(ApiError::invalid(FieldError::new(
            "model_attributes_type",
            vec![json!("body")],
            "Input should be a valid dictionary or object to extract fields from",
            other,
        ))),
    }
}

/// An integer the way the original accepted it: a JSON integer, a float without a
/// fractional part, or a string holding an integer; then checked against `ge..=le`.
pub fn parse_int(
    value: &Value,
    loc: Vec<Value>,
    ge: i64,
    le: Option<i64>,
) -> Result<i64, FieldError> {
    let parsed = match value {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(i)
            } else if n.as_u64().is_some() {
                Ok(i64::MAX)
            } else {
                match n.as_f64() {
                    Some(f) if f.fract() == 0.0 && f.is_finite() => Ok(f as i64),
                    _ => Err(FieldError::new(
                        "int_from_float",
                        loc.clone(),
                        "Input should be a valid integer, got a number with a fractional part",
                        value.clone(),
                    )),
                }
            }
        }
        Value::String(s) => s.trim().parse::<i64>().map_err(|_| {
            FieldError::new(
                "int_parsing",
                loc.clone(),
                "Input should be a valid integer, unable to parse string as an integer",
                value.clone(),
            )
        }),
        _ => Err(FieldError::new(
            "int_type",
            loc.clone(),
            "Input should be a valid integer",
            value.clone(),
        )),
    }?;
    if parsed < ge {
        return Err(FieldError::new(
            "greater_than_equal",
            loc,
            format!("Input should be greater than or equal to {ge}"),
            value.clone(),
        )
        .with_ctx(json!({ "ge": ge })));
    }
    if let Some(le) = le
        && parsed > le
    {
        return Err(FieldError::new(
            "less_than_equal",
            loc,
            format!("Input should be less than or equal to {le}"),
            value.clone(),
        )
        .with_ctx(json!({ "le": le })));
    }
    Ok(parsed)
}

/// A query parameter as an integer in `ge..=le`, `default` when absent.
pub fn query_int(
    params: &HashMap<String, String>,
    name: &str,
    default: i64,
    ge: i64,
    le: Option<i64>,
) -> Result<i64, FieldError> {
    match params.get(name) {
        None => Ok(default),
        Some(raw) => parse_int(&Value::String(raw.clone()), query_loc(name), ge, le),
    }
}

/// A float or null (a numeric string is accepted, as the original did).
pub fn parse_optional_float(value: &Value, loc: Vec<Value>) -> Result<Option<f64>, FieldError> {
    let number = match value {
        Value::Null => return Ok(None),
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.trim().parse::<f64>() {
            Ok(f) => Some(f),
            Err(_) => {
                return Err(FieldError::new(
                    "float_parsing",
                    loc,
                    "Input should be a valid number, unable to parse string as a number",
                    value.clone(),
                ));
            }
        },
        _ => None,
    };
    match number {
        Some(f) if f.is_finite() && f >= 0.0 => Ok(Some(f)),
        Some(f) if f.is_finite() => Err(FieldError::new(
            "greater_than_equal",
            loc,
            "Input should be greater than or equal to 0",
            value.clone(),
        )
        .with_ctx(json!({ "ge": 0 }))),
        Some(_) => Err(FieldError::new(
            "finite_number",
            loc,
            "Input should be a finite number",
            value.clone(),
        )),
        None => Err(FieldError::new(
            "float_type",
            loc,
            "Input should be a valid number",
            value.clone(),
        )),
    }
}

/// A JSON object or null.
pub fn parse_optional_object(value: &Value, loc: Vec<Value>) -> Result<Option<Value>, FieldError> {
    match value {
        Value::Null => Ok(None),
        Value::Object(_) => Ok(Some(value.clone())),
        _ => Err(FieldError::new(
            "dict_type",
            loc,
            "Input should be a valid dictionary",
            value.clone(),
        )),
    }
}

/// A string or null.
pub fn parse_optional_string(value: &Value, loc: Vec<Value>) -> Result<Option<String>, FieldError> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        _ => Err(FieldError::new(
            "string_type",
            loc,
            "Input should be a valid string",
            value.clone(),
        )),
    }
}

/// A task id from a path; an id that is not a UUID names no task (404, as the original).
pub fn parse_task_id(raw: &str) -> Result<TaskId, ApiError> {
    TaskId::parse(raw).map_err(|_| ApiError::NotFound(format!("Task {raw} not found")))
}

#[cfg(test)]
mod tests {
    use super::super::error::body_loc;
    use super::*;

    fn loc(field: &str) -> Vec<Value> {
        body_loc(field)
    }

    #[test]
    fn integers_are_parsed_as_the_original_did() {
        let ok = |v: Value| parse_int(&v, loc("n"), 1, Some(10));
        assert_eq!(ok(json!(3)).unwrap(), 3);
        assert_eq!(ok(json!("3")).unwrap(), 3);
        assert_eq!(ok(json!(3.0)).unwrap(), 3);
        assert_eq!(ok(json!(2.5)).unwrap_err().kind, "int_from_float");
        assert_eq!(ok(json!("x")).unwrap_err().kind, "int_parsing");
        assert_eq!(ok(json!(true)).unwrap_err().kind, "int_type");
        assert_eq!(ok(json!(null)).unwrap_err().kind, "int_type");
        let low = ok(json!(0)).unwrap_err();
        assert_eq!(low.kind, "greater_than_equal");
        assert_eq!(low.ctx.as_deref(), Some(&json!({"ge": 1})));
        let high = ok(json!(11)).unwrap_err();
        assert_eq!(high.kind, "less_than_equal");
        assert_eq!(ok(json!(u64::MAX)).unwrap_err().kind, "less_than_equal");
    }

    #[test]
    fn malformed_json_is_located() {
        let Err(ApiError::Validation(errors)) = parse_body(b"{\"a\": }") else {
            panic!("expected a validation error");
        };
        assert_eq!(errors[0].kind, "json_invalid");
        assert_eq!(errors[0].loc, vec![json!("body"), json!(6)]);
        assert!(matches!(parse_body(b"  \n"), Ok(None)));
    }
}
