//! What several of this crate's test files share.

use serde_json::Value;

/// The response's single error: (code, field, message).
pub fn the_error(response: &Value) -> (String, Option<String>, String) {
    let errors = response["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors in {response:#}"));
    assert_eq!(errors.len(), 1, "{response:#}");
    let error = &errors[0];
    (
        error["extensions"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        error["extensions"]["field"].as_str().map(str::to_owned),
        error["message"].as_str().unwrap_or_default().to_owned(),
    )
}
