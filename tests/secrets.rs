//! Secrets given to `shoal` through the environment (database URLs with passwords, URLs with
//! tokens) never appear in its `--help`, whichever command prints it.

// Integration tests: helpers outside `#[test]` functions unwrap too; a failure fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

/// Each secret-bearing variable, with a value whose every part is recognisable.
const SECRETS: [(&str, &str); 2] = [
    (
        "SHOAL_DATABASE_URL",
        "postgres://shoal:db-pa55word@db.internal:5432/shoal?sslmode=require",
    ),
    (
        "SHOAL_HTTP_HANDLER_URL",
        "https://hook-user:hook-pa55@hooks.internal/run?token=hook-t0ken",
    ),
];

/// `shoal <path...> --help`, with the secrets in the environment.
fn help(path: &[String]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(path)
        .arg("--help")
        .envs(SECRETS)
        .output()
        .expect("running shoal --help");
    assert!(output.status.success(), "shoal {path:?} --help failed");
    String::from_utf8(output.stdout).expect("UTF-8 help")
}

/// The subcommands listed in a help text's `Commands:` section (without `help`).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|line| line.trim() != "Commands:")
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

#[test]
fn help_never_prints_a_secret_from_the_environment() {
    let mut pending = vec![Vec::<String>::new()];
    let mut checked = Vec::new();
    while let Some(path) = pending.pop() {
        let text = help(&path);
        for (var, _) in SECRETS {
            // Each flag is still documented, with its variable's name.
            if text.contains(var) {
                assert!(
                    text.contains(&format!("[env: {var}]"))
                        || text.contains(&format!("env: {var}")),
                    "shoal {path:?}: {var} shown oddly:\n{text}"
                );
            }
        }
        for word in ["pa55", "t0ken", "db.internal", "hooks.internal"] {
            assert!(
                !text.contains(word),
                "shoal {} --help shows a secret ({word}):\n{text}",
                path.join(" ")
            );
        }
        for sub in subcommands(&text) {
            let mut next = path.clone();
            next.push(sub);
            pending.push(next);
        }
        checked.push(path.join(" "));
    }
    // The roles that take a database URL or the http handler's URL were among them.
    for role in ["dev", "serve", "worker", "orchestrator", "migrate"] {
        assert!(
            checked.iter().any(|c| c == role),
            "{role} not checked: {checked:?}"
        );
    }
    let worker = help(&["worker".to_owned()]);
    assert!(worker.contains("SHOAL_DATABASE_URL") && worker.contains("SHOAL_HTTP_HANDLER_URL"));
}
