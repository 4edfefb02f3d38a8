//! The commands the Kubernetes manifests run (infra/deploy/k8s), as the pods run them: the
//! migration Job, `shoal projector status` with a pool of one connection (what an operator runs
//! in a pod to check it), and the pool-size option every role takes.

// Integration tests: helpers outside `#[test]` functions unwrap too; a failure fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::{Backend, database_url, shoal};

/// The migration Job's command, then the workers' readiness probe: both need one connection.
async fn probe_commands_work_with_one_connection(backend: Backend) {
    let Some(url) = database_url(backend).await else {
        return;
    };
    for args in [
        vec![
            "migrate",
            "--database-url",
            &url,
            "--database-max-connections",
            "1",
        ],
        vec![
            "projector",
            "status",
            "--database-url",
            &url,
            "--database-max-connections",
            "1",
        ],
    ] {
        let output = shoal(&args, None).output().expect("running shoal");
        assert!(
            output.status.success(),
            "shoal {args:?} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // The same through the environment, as the manifests set it.
    let output = shoal(&["projector", "status"], None)
        .env("SHOAL_DATABASE_URL", &url)
        .env("SHOAL_DATABASE_MAX_CONNECTIONS", "1")
        .output()
        .expect("running shoal");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        table.contains("jobs") && table.contains("analytics"),
        "{table}"
    );
}

#[tokio::test]
async fn sqlite_probe_commands_work_with_one_connection() {
    probe_commands_work_with_one_connection(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_probe_commands_work_with_one_connection() {
    probe_commands_work_with_one_connection(Backend::Postgres).await;
}

#[test]
fn a_pool_of_zero_connections_is_refused_with_the_option_named() {
    for role in [
        &["worker"][..],
        &["orchestrator"],
        &["serve"],
        &["projector", "run"],
        &["migrate"],
    ] {
        let mut args = role.to_vec();
        args.extend(["--database-max-connections", "0"]);
        let output = shoal(&args, None).output().expect("running shoal");
        assert!(
            !output.status.success(),
            "shoal {args:?} accepted a pool of 0"
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("--database-max-connections"), "{stderr}");
    }
}
