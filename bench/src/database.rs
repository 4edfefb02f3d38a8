//! Databases for benchmarks: a fresh, migrated Postgres database per run, and the `pgbench`
//! baseline that every benchmark is reported against. The statements here only set up, count
//! and clean up a benchmark's own database; the product's SQL stays in `shoal-infra`.

use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};

/// A database created for one benchmark run on a Postgres server, dropped by [`Self::drop`].
#[derive(Debug)]
pub struct BenchDatabase {
    server: PgConnectOptions,
    name: String,
    pool: PgPool,
}

/// See [`BenchDatabase::e2e_log_summary`].
#[derive(Debug, Clone, Copy)]
pub struct E2eLogSummary {
    pub task_completed: i64,
    /// Distinct task streams with a `TaskCompleted`.
    pub task_completed_streams: i64,
    pub task_started: i64,
    pub task_enqueued: i64,
    /// Every event in the log.
    pub events: i64,
    /// From `JobSubmitted` to the first `TaskStarted`, by their `recorded_at`.
    pub submit_to_first_start_ms: Option<f64>,
}

impl BenchDatabase {
    /// Creates `<prefix>_<unix time>` on the server at `server_url` and migrates it.
    pub async fn create(server_url: &str, prefix: &str) -> anyhow::Result<Self> {
        let server =
            PgConnectOptions::from_str(server_url)?.log_statements(tracing::log::LevelFilter::Off);
        let name = format!(
            "{prefix}_{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis()
        );
        let mut admin = sqlx::PgConnection::connect_with(&server).await?;
        // Identifiers cannot be bound; the name is built above from a fixed prefix and digits.
        debug_assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut admin)
            .await?;
        admin.close().await?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(server.clone().database(&name))
            .await?;
        shoal_infra::db::POSTGRES_MIGRATOR.run(&pool).await?;
        Ok(Self { server, name, pool })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The table of the baseline: single-row inserts of a JSON payload with a sequence key,
    /// the shape of one event without any of the log's guarantees.
    pub async fn create_baseline_table(&self) -> anyhow::Result<()> {
        sqlx::query(
            "CREATE TABLE pgbench_baseline (id BIGSERIAL PRIMARY KEY, payload JSONB NOT NULL)",
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Runs `pgbench` with `clients` clients for `seconds`, each transaction one single-row
    /// INSERT into the baseline table; returns transactions per second.
    pub async fn pgbench_insert_tps(&self, clients: usize, seconds: u64) -> anyhow::Result<f64> {
        let script = std::env::temp_dir().join(format!("{}_insert.sql", self.name));
        std::fs::write(
            &script,
            // pgbench reads `:name` as a variable, hence the space after each colon.
            "INSERT INTO pgbench_baseline (payload) VALUES ('{\"type\": \"TaskCompleted\", \"attempt\": 1, \"result\": {\"ok\": true}, \"duration_ms\": 12}');\n",
        )
        .context("writing the pgbench script")?;
        let output = tokio::process::Command::new("pgbench")
            .arg("-n")
            .args(["-M", "prepared"])
            .args(["-c", &clients.to_string()])
            .args(["-j", &clients.min(2).to_string()])
            .args(["-T", &seconds.to_string()])
            .arg("-f")
            .arg(&script)
            .args(["-h", self.server.get_host()])
            .args(["-p", &self.server.get_port().to_string()])
            .args(["-U", self.server.get_username()])
            .arg(&self.name)
            .output()
            .await
            .context("running pgbench")?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            bail!(
                "pgbench failed: {stdout}{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        stdout
            .lines()
            .find_map(|l| {
                l.strip_prefix("tps = ")
                    .and_then(|rest| rest.split_whitespace().next())
                    .and_then(|n| n.parse::<f64>().ok())
            })
            .with_context(|| format!("pgbench printed no tps line: {stdout}"))
    }

    /// What the log of an end-to-end run holds: the counts that show every transition was
    /// recorded, and the latency from the submission to the first start (server clock: each
    /// event's `recorded_at`, its transaction's start).
    pub async fn e2e_log_summary(&self) -> anyhow::Result<E2eLogSummary> {
        let row: (i64, i64, i64, i64, i64, Option<f64>) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE event_type = 'TaskCompleted'),
                    count(DISTINCT stream_id) FILTER (WHERE event_type = 'TaskCompleted'),
                    count(*) FILTER (WHERE event_type = 'TaskStarted'),
                    count(*) FILTER (WHERE event_type = 'TaskEnqueued'),
                    count(*),
                    (EXTRACT(EPOCH FROM
                        min(recorded_at) FILTER (WHERE event_type = 'TaskStarted')
                        - min(recorded_at) FILTER (WHERE event_type = 'JobSubmitted')
                    ) * 1000)::float8
             FROM events",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(E2eLogSummary {
            task_completed: row.0,
            task_completed_streams: row.1,
            task_started: row.2,
            task_enqueued: row.3,
            events: row.4,
            submit_to_first_start_ms: row.5,
        })
    }

    /// `TaskReleased` events in the log.
    pub async fn task_released(&self) -> anyhow::Result<i64> {
        let (n,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM events WHERE event_type = 'TaskReleased'")
                .fetch_one(&self.pool)
                .await?;
        Ok(n)
    }

    /// For the tasks of these jobs, in log order (the order the orchestrator folds): +1 for
    /// each admission (`TaskReleased`), -1 for each attempt's end (`TaskCompleted`,
    /// `TaskFailed`): their running sum is the count in flight that a limit bounds.
    pub async fn in_flight_deltas(&self, jobs: &[String]) -> anyhow::Result<Vec<i32>> {
        let rows: Vec<(i32,)> = sqlx::query_as(
            "SELECT CASE WHEN event_type = 'TaskReleased' THEN 1 ELSE -1 END
             FROM events
             WHERE event_type IN ('TaskReleased', 'TaskCompleted', 'TaskFailed')
               AND data->>'job_id' = ANY($1)
             ORDER BY transaction_id, position",
        )
        .bind(jobs)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(d,)| d).collect())
    }

    /// How the job of stream `job_stream` ended, and the end's log position: `None` while it
    /// has not ended. (The benchmark's own poll, left out of the statement counts.)
    pub async fn job_end(&self, job_stream: &str) -> anyhow::Result<Option<(String, i64)>> {
        Ok(sqlx::query_as(&format!(
            "{} SELECT event_type, position FROM events WHERE stream_id = $1
             AND event_type IN ('JobCompleted', 'JobFailed', 'JobCancelled') LIMIT 1",
            crate::pgstats::BENCH_MARK
        ))
        .bind(job_stream)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Whether every projection's checkpoint has reached log position `position`.
    pub async fn projections_reached(&self, position: i64) -> anyhow::Result<bool> {
        let (reached,): (i64,) = sqlx::query_as(&format!(
            "{} SELECT count(*) FROM checkpoints WHERE name LIKE 'projection.%' AND name NOT LIKE '%.rebuild' AND position >= $1",
            crate::pgstats::BENCH_MARK
        ))
        .bind(position)
        .fetch_one(&self.pool)
        .await?;
        Ok(usize::try_from(reached).unwrap_or(0) >= shoal_projector::ProjectionName::ALL.len())
    }

    /// The server's current WAL position, in bytes.
    pub async fn wal_lsn(&self) -> anyhow::Result<i64> {
        let (lsn,): (i64,) =
            sqlx::query_as("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint")
                .fetch_one(&self.pool)
                .await?;
        Ok(lsn)
    }

    /// `TaskEnqueued` events in the log, and rows in the task queue.
    pub async fn enqueue_summary(&self) -> anyhow::Result<(i64, i64)> {
        Ok(sqlx::query_as(
            "SELECT (SELECT count(*) FROM events WHERE event_type = 'TaskEnqueued'),                     (SELECT count(*) FROM task_queue)",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Empties every read table (`jobs`, `tasks`, `analytics_*`) and the projections'
    /// checkpoints, so that a fresh projector starts from the beginning of the log (which
    /// stays), then `VACUUM ANALYZE`s the database.
    pub async fn reset_read_model(&self) -> anyhow::Result<()> {
        let tables: Vec<(String,)> = sqlx::query_as(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema() \
             AND (tablename IN ('jobs', 'tasks') OR tablename LIKE 'analytics\\_%')",
        )
        .fetch_all(&self.pool)
        .await?;
        let names: Vec<String> = tables.into_iter().map(|(t,)| format!("\"{t}\"")).collect();
        if !names.is_empty() {
            sqlx::query(&format!("TRUNCATE {}", names.join(", ")))
                .execute(&self.pool)
                .await?;
        }
        sqlx::query("DELETE FROM checkpoints WHERE name LIKE 'projection.%'")
            .execute(&self.pool)
            .await?;
        sqlx::query("VACUUM ANALYZE").execute(&self.pool).await?;
        Ok(())
    }

    /// Rows in the read model's `jobs` and `tasks` tables.
    pub async fn read_model_counts(&self) -> anyhow::Result<(i64, i64)> {
        Ok(
            sqlx::query_as("SELECT (SELECT count(*) FROM jobs), (SELECT count(*) FROM tasks)")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Drops the database.
    pub async fn drop(self) -> anyhow::Result<()> {
        self.pool.close().await;
        let mut admin = sqlx::PgConnection::connect_with(&self.server).await?;
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.name
        ))
        .execute(&mut admin)
        .await?;
        Ok(())
    }
}
