//! Postgres over TLS: `sslmode=require` encrypts, `sslmode=verify-full` with `sslrootcert`
//! also checks the server's certificate and name, and a certificate from another CA is
//! refused with an error that says so.
//!
//! Starts its own TLS-enabled cluster (`scripts/pg.sh start DIR --ssl`, with a CA and server
//! certificate made by the openssl CLI at test time). Runs where Postgres tests run
//! (`SHOAL_TEST_DATABASE_URL` set, or `SHOAL_REQUIRE_POSTGRES=1`); skipped elsewhere.

// Integration tests: helpers outside `#[test]` functions unwrap too; a failure fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use shoal_infra::db::Database;
use shoal_infra::testing::{REQUIRE_POSTGRES_ENV, TEST_DATABASE_URL_ENV};

/// A cluster with TLS on, stopped when dropped.
struct TlsCluster {
    dir: PathBuf,
    url: String,
}

impl TlsCluster {
    fn start() -> Option<TlsCluster> {
        let required = std::env::var(REQUIRE_POSTGRES_ENV).is_ok_and(|v| v == "1");
        if !required && std::env::var(TEST_DATABASE_URL_ENV).is_err() {
            eprintln!("skipped: Postgres test ({TEST_DATABASE_URL_ENV} is not set)");
            return None;
        }
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "test-pg-tls-{}-{}",
            std::process::id(),
            uuid::Uuid::now_v7().simple()
        ));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/pg.sh");
        let output = Command::new(&script)
            .arg("start")
            .arg(&dir)
            .arg("--ssl")
            .output()
            .expect("running scripts/pg.sh");
        let cluster = TlsCluster {
            dir,
            url: String::from_utf8_lossy(&output.stdout).trim().to_owned(),
        };
        assert!(
            output.status.success() && cluster.url.starts_with("postgres://"),
            "scripts/pg.sh start --ssl failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Some(cluster)
    }

    fn ca(&self, name: &str) -> String {
        self.dir.join("tls").join(name).display().to_string()
    }
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/pg.sh");
        let _ = Command::new(script).arg("stop").arg(&self.dir).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether the database's session is encrypted, and with which protocol.
async fn tls_of(db: &Database) -> (bool, Option<String>) {
    let Database::Postgres(pool) = db else {
        panic!("a Postgres URL gives a Postgres pool")
    };
    sqlx::query_as("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn postgres_over_tls_require_and_verify_full() {
    let Some(cluster) = TlsCluster::start() else {
        return;
    };
    let url = &cluster.url;

    // require: encrypted, the certificate is not checked.
    let db = Database::connect(&format!("{url}?sslmode=require"))
        .await
        .expect("sslmode=require connects");
    let (ssl, version) = tls_of(&db).await;
    assert!(ssl, "sslmode=require gave a plain connection");
    assert!(version.is_some_and(|v| v.starts_with("TLSv1.")));
    db.close().await;

    // verify-full: encrypted, the certificate checked against our CA and for the host name;
    // migrations run over it as a role would.
    let verified = format!(
        "{url}?sslmode=verify-full&sslrootcert={}",
        cluster.ca("ca.pem")
    );
    let db = shoal_infra::db::migrate(&verified)
        .await
        .expect("sslmode=verify-full with the right CA connects");
    assert!(tls_of(&db).await.0);
    db.close().await;

    // The same server by a name its certificate has (localhost) also verifies.
    let by_name = verified.replacen("127.0.0.1", "localhost", 1);
    let db = Database::connect(&by_name)
        .await
        .expect("localhost verifies");
    assert!(tls_of(&db).await.0);
    db.close().await;

    // A CA that did not sign the server's certificate: refused, and the error says why.
    let wrong = format!(
        "{url}?sslmode=verify-full&sslrootcert={}",
        cluster.ca("other-ca.pem")
    );
    let error = Database::connect(&wrong)
        .await
        .expect_err("verify-full with another CA must fail")
        .to_string();
    assert!(
        error.contains("certificate") && error.contains("sslrootcert"),
        "unclear error: {error}"
    );

    // disable: the same server, unencrypted (what the checks above are not).
    let db = Database::connect(&format!("{url}?sslmode=disable"))
        .await
        .unwrap();
    assert!(!tls_of(&db).await.0);
    db.close().await;
}

#[tokio::test]
async fn require_refuses_a_server_without_tls() {
    let Ok(server) = std::env::var(TEST_DATABASE_URL_ENV) else {
        if std::env::var(REQUIRE_POSTGRES_ENV).is_ok_and(|v| v == "1") {
            panic!("{REQUIRE_POSTGRES_ENV}=1 but {TEST_DATABASE_URL_ENV} is not set");
        }
        eprintln!("skipped: Postgres test ({TEST_DATABASE_URL_ENV} is not set)");
        return;
    };
    // The shared test server (scripts/pg.sh without --ssl) has no TLS.
    let separator = if server.contains('?') { '&' } else { '?' };
    let error = Database::connect(&format!("{server}{separator}sslmode=require"))
        .await
        .expect_err("sslmode=require must not fall back to plain text")
        .to_string();
    assert!(error.to_lowercase().contains("tls"), "{error}");
}
