//! What several of this crate's test files share.

// Each test file uses a part of this module.
#![allow(dead_code)]

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

/// Declares each test once per backend: `sqlite::<name>` always, and `postgres::<name>` when
/// `SHOAL_TEST_DATABASE_URL` is set (see `shoal_infra::testing`). The file's `Harness` has
/// `sqlite(..)` and `postgres(..) -> Option<Harness>`; `name: arg` passes `arg` to both.
#[macro_export]
macro_rules! for_each_backend {
    ($($name:ident $(: $arg:expr)?),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Harness::sqlite($($arg)?).await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(harness) = super::Harness::postgres($($arg)?).await {
                        super::$name(harness).await;
                    }
                }
            )*
        }
    };
}
