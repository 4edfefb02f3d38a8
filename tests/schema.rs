//! The GraphQL schema served by `shoal dev` / `shoal serve` is committed as
//! `docs/schema.graphql`; this test fails when they differ.

// Integration tests: helpers outside `#[test]` functions unwrap too; a failure fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn committed_sdl_matches_the_schema() {
    let output = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .arg("schema")
        .output()
        .expect("running shoal schema");
    assert!(output.status.success(), "shoal schema failed");
    let printed = String::from_utf8(output.stdout).expect("UTF-8 SDL");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/schema.graphql");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        printed == committed,
        "docs/schema.graphql is not the schema the code serves. If the change is intended, \
         regenerate it with\n\n    cargo run --bin shoal -- schema > docs/schema.graphql\n\n\
         and commit it."
    );
}
