//! `shoal-bench e2e`: one job of N tasks through the whole platform in one process.
//!
//! Per round: a fresh database on the given Postgres server; the orchestrator and a worker
//! wired exactly as `shoal dev` wires them (`roles`), on the SQL queue; one job submitted
//! through [`CommandService::submit_job`]; the clock runs from just before the submission until
//! `JobCompleted` is read back from the job's stream. Afterwards the log is checked to hold
//! exactly N `TaskCompleted` on N distinct task streams (every transition durably in the log),
//! and `pgbench` runs single-row INSERT transactions with 16 clients on the same server, as the
//! baseline of the round.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde_json::Value;
use shoal::roles::{self, DatabaseArgs, Platform, QueueArgs, WorkerArgs};
use shoal_command_api::commands::{CommandService, SubmitJobInput};
use shoal_domain::{Limits, Split};
use tokio::sync::watch;

use crate::database::BenchDatabase;
use crate::pgstats;
use crate::rig::check_every_task_logged;
use crate::system::{
    load_average, peak_rss_kib, postgres_cpu_ms, postgres_server_cpu_ms, process_cpu_ms,
    reset_peak_rss, threads_cpu_ms,
};
use crate::{Samples, which};

#[derive(Debug, Args)]
pub(crate) struct E2eArgs {
    /// A Postgres server URL; each round creates (and drops) its own database there.
    #[arg(long, env = "SHOAL_BENCH_DATABASE_URL")]
    database_url: String,
    /// Tasks in the job.
    #[arg(long, default_value_t = 100_000)]
    tasks: u32,
    /// The job type, which selects the handler (`noop` does nothing).
    #[arg(long, default_value = "noop")]
    handler: String,
    /// Tasks the worker runs at once (its slots; a slot is busy only while a handler runs,
    /// ADR 13).
    #[arg(long, default_value_t = 1024)]
    concurrency: usize,
    /// The worker's local buffer, messages held beyond the running tasks (default: the
    /// worker's own, 32 per slot, at most 4,096).
    #[arg(long)]
    prefetch: Option<usize>,
    /// Most messages the worker takes in one receive.
    #[arg(long, default_value_t = 500)]
    receive_batch: usize,
    /// Rounds (the report gives the median and the range).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds of `pgbench` per round for the baseline.
    #[arg(long, default_value_t = 10)]
    pgbench_seconds: u64,
    /// Give up on a round after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_seconds: u64,
    /// Keep each round's database afterwards.
    #[arg(long)]
    keep: bool,
    /// Run the projector too (as `shoal dev` does): the round's figures then cover the read
    /// model, up to the moment it has caught up with `JobCompleted`.
    #[arg(long)]
    projector: bool,
    /// Run the worker on its own connection pool and Tokio runtime, as a `shoal worker`
    /// process beside `shoal dev`, and report its CPU apart from the rest of the process.
    #[arg(long)]
    separate_worker: bool,
    /// Statements listed in the per-statement breakdown (pg_stat_statements, when the server
    /// preloads it; `scripts/pg.sh` does).
    #[arg(long, default_value_t = 10)]
    top_statements: usize,
}

/// The name prefix of the separate worker's runtime threads.
const WORKER_THREADS: &str = "bench-worker";

/// One round's figures.
#[derive(Debug)]
struct Round {
    tasks_per_second: f64,
    first_start_ms: f64,
    peak_rss_mib: f64,
    shoal_cpu_ms_per_task: f64,
    postgres_cpu_ms_per_task: f64,
    load_1m: f64,
    pgbench_tps: Option<f64>,
    /// CPU per task of the separate worker's threads (`--separate-worker`).
    worker_cpu_ms_per_task: Option<f64>,
    /// What the server did: statements, WAL, rows and index entries.
    server: pgstats::Delta,
}

pub(crate) async fn run(args: E2eArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.tasks > 0, "--tasks must be at least 1");
    anyhow::ensure!(args.rounds > 0, "--rounds must be at least 1");
    let pgbench = which("pgbench");
    if !pgbench {
        eprintln!(
            "pgbench not found: the baseline is skipped (apt-get install postgresql-client-15)"
        );
    }
    eprintln!(
        "bench e2e: {} {} tasks, worker concurrency {}, receive batch {}, {} rounds",
        args.tasks, args.handler, args.concurrency, args.receive_batch, args.rounds
    );
    let mut rounds = Vec::new();
    for round in 1..=args.rounds {
        let r = one_round(&args, pgbench)
            .await
            .with_context(|| format!("round {round}"))?;
        eprintln!(
            "round {round}: {:.0} tasks/s, first start after {:.0} ms, peak RSS {:.1} MiB, \
             CPU/task {:.3} ms shoal + {:.3} ms postgres, pgbench {} tx/s, load {:.2}",
            r.tasks_per_second,
            r.first_start_ms,
            r.peak_rss_mib,
            r.shoal_cpu_ms_per_task,
            r.postgres_cpu_ms_per_task,
            r.pgbench_tps
                .map_or_else(|| "n/a".to_string(), |t| format!("{t:.0}")),
            r.load_1m,
        );
        let tasks = f64::from(args.tasks);
        eprintln!(
            "round {round}: {} statements/task, {:.0} WAL bytes/task, {:.3} rows and {:.3} index entries written/task{}",
            r.server
                .statement_calls()
                .map_or_else(|| "n/a".to_string(), |c| format!("{:.3}", c as f64 / tasks)),
            r.server.wal_bytes as f64 / tasks,
            r.server.rows_written() as f64 / tasks,
            r.server.index_entries() as f64 / tasks,
            r.worker_cpu_ms_per_task
                .map_or_else(String::new, |w| format!(", worker CPU/task {w:.3} ms")),
        );
        eprintln!(
            "{}",
            pgstats::breakdown(&r.server, tasks, args.top_statements)
        );
        rounds.push(r);
    }
    report(&args, &rounds);
    Ok(())
}

async fn one_round(args: &E2eArgs, pgbench: bool) -> anyhow::Result<Round> {
    let bench_db = BenchDatabase::create(&args.database_url, "shoal_bench_e2e")
        .await
        .context("creating the benchmark database")?;
    let load_1m = load_average();
    let database_url = with_database(&args.database_url, bench_db.name())?;
    let queue_args = QueueArgs {
        queue: "sql".into(),
    };
    let platform = Platform::connect(&DatabaseArgs::new(database_url.clone()), &queue_args).await?;

    let (stop, stopped) = watch::channel(false);
    let until_stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let orchestrating = tokio::spawn(
        roles::orchestrator(&platform, &roles::OrchestratorArgs::default())?
            .run(until_stopped(stopped.clone())),
    );
    let projecting = args.projector.then(|| {
        let projector = roles::projector(&platform, &roles::ProjectorArgs::default());
        tokio::spawn({
            let stopped = until_stopped(stopped.clone());
            async move { projector.run(stopped).await }
        })
    });
    let mut worker_args = default_worker_args();
    worker_args.prefetch = args.prefetch;
    let mut config = worker_args.config(args.concurrency)?;
    config.receive_batch = args.receive_batch;
    // The worker on its own pool and runtime (as a `shoal worker` process), or beside the
    // orchestrator on theirs (as `shoal dev` runs it).
    let worker_runtime = if args.separate_worker {
        Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name(WORKER_THREADS)
                .enable_all()
                .build()?,
        )
    } else {
        None
    };
    let working = match &worker_runtime {
        Some(runtime) => {
            let stopped = until_stopped(stopped.clone());
            let database = DatabaseArgs::new(database_url.clone());
            runtime.spawn(async move {
                let platform = Platform::connect(&database, &queue_args).await?;
                let stats = roles::worker(&platform, config).run(stopped).await?;
                platform.database.close().await;
                anyhow::Ok(stats)
            })
        }
        None => {
            let worker = roles::worker(&platform, config);
            let stopped = until_stopped(stopped.clone());
            tokio::spawn(async move { Ok(worker.run(stopped).await?) })
        }
    };
    // Start-up (leader lock, checkpoint load, the worker's first receive) is not timed.
    tokio::time::sleep(Duration::from_millis(500)).await;

    reset_peak_rss();
    let statements = pgstats::reset_statements(bench_db.pool()).await;
    let server_before = pgstats::snapshot(bench_db.pool()).await?;
    // The server's own processes when it runs here (other servers on the machine do not
    // count), else every postgres process.
    let server_pid: i32 =
        sqlx::query_scalar(&format!("{} SELECT pg_backend_pid()", pgstats::BENCH_MARK))
            .fetch_one(bench_db.pool())
            .await?;
    let server_cpu = || {
        let own = postgres_server_cpu_ms(server_pid);
        if own.is_nan() { postgres_cpu_ms() } else { own }
    };
    let cpu_before = (
        process_cpu_ms(),
        server_cpu(),
        threads_cpu_ms(WORKER_THREADS),
    );
    let service = CommandService::new(platform.log.clone(), Limits::default());
    let started = Instant::now();
    let submitted = service
        .submit_job(SubmitJobInput {
            job_type: args.handler.clone(),
            split: Split::Total {
                total_tasks: args.tasks,
            },
            parameters: Value::Null,
            max_attempts: None,
            timeout_seconds: None,
            idempotency_key: None,
            fallback_handler: None,
            priority: None,
        })
        .await?;
    let job_stream = submitted.job.job_id.stream_id();
    let deadline = started + Duration::from_secs(args.timeout_seconds);
    let completed_at = loop {
        match bench_db.job_end(&job_stream).await? {
            Some((kind, position)) if kind == "JobCompleted" => break position,
            Some((kind, _)) => anyhow::bail!("the job ended {kind}"),
            None => {}
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the job did not complete in time"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let elapsed = started.elapsed().as_secs_f64();
    if args.projector {
        while !bench_db.projections_reached(completed_at).await? {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the projections did not catch up in time"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let cpu_after = (
        process_cpu_ms(),
        server_cpu(),
        threads_cpu_ms(WORKER_THREADS),
    );
    let peak_rss_mib = peak_rss_kib() as f64 / 1024.0;

    let _ = stop.send(true);
    let stats = working.await??;
    orchestrating.await??;
    if let Some(projecting) = projecting {
        projecting.await??;
    }
    if let Some(runtime) = worker_runtime {
        runtime.shutdown_background();
    }
    platform.database.close().await;
    // Backends report their table counters when they end.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let server = pgstats::since(bench_db.pool(), &server_before, statements).await?;

    let summary = bench_db.e2e_log_summary().await?;
    check_every_task_logged(&summary, args.tasks, &stats)?;
    eprintln!(
        "log: {} events; {} TaskEnqueued, {} TaskStarted, {} TaskCompleted on {} task streams; \
         worker: {} commits for {} task appends, {} duplicates skipped",
        summary.events,
        summary.task_enqueued,
        summary.task_started,
        summary.task_completed,
        summary.task_completed_streams,
        stats.commits,
        stats.committed_batches,
        stats.skipped_duplicates,
    );

    let pgbench_tps = if pgbench {
        bench_db.create_baseline_table().await?;
        Some(
            bench_db
                .pgbench_insert_tps(16, args.pgbench_seconds)
                .await?,
        )
    } else {
        None
    };
    if !args.keep {
        bench_db.drop().await?;
    }
    let tasks = f64::from(args.tasks);
    let worker_cpu_ms_per_task = args
        .separate_worker
        .then(|| (cpu_after.2 - cpu_before.2) / tasks);
    Ok(Round {
        tasks_per_second: tasks / elapsed,
        first_start_ms: summary.submit_to_first_start_ms.unwrap_or(f64::NAN),
        peak_rss_mib,
        shoal_cpu_ms_per_task: (cpu_after.0 - cpu_before.0) / tasks,
        postgres_cpu_ms_per_task: (cpu_after.1 - cpu_before.1) / tasks,
        load_1m,
        pgbench_tps,
        worker_cpu_ms_per_task,
        server,
    })
}

fn report(args: &E2eArgs, rounds: &[Round]) {
    let samples = |f: fn(&Round) -> f64| Samples(rounds.iter().map(f).collect());
    let cell = |s: &Samples, decimals: usize| {
        let (lo, hi) = s.range();
        format!("{:.d$} [{lo:.d$}-{hi:.d$}]", s.median(), d = decimals)
    };
    let rate = samples(|r| r.tasks_per_second);
    let base = Samples(rounds.iter().filter_map(|r| r.pgbench_tps).collect());
    println!(
        "\n## shoal-bench e2e --tasks {} --handler {} ({} rounds; medians [min-max])\n",
        args.tasks,
        args.handler,
        rounds.len()
    );
    println!(
        "Worker concurrency {}, receive batch {}; SQL queue; orchestrator{} and worker in one process{}.\n",
        args.concurrency,
        args.receive_batch,
        if args.projector { ", projector" } else { "" },
        if args.separate_worker {
            ", the worker on its own pool and runtime"
        } else {
            ""
        }
    );
    println!("| measurement | value |");
    println!("|---|---|");
    println!(
        "| end to end, submit to `JobCompleted` in the log | {} tasks/s |",
        cell(&rate, 0)
    );
    if !base.0.is_empty() {
        println!(
            "| baseline: pgbench single-row INSERT, 16 clients (`pgbench_insert_tps`) | {} tx/s |",
            cell(&base, 0)
        );
        let ratios = Samples(
            rounds
                .iter()
                .filter_map(|r| r.pgbench_tps.map(|b| r.tasks_per_second / b))
                .collect(),
        );
        println!(
            "| ratio e2e tasks/s / pgbench tx/s (same round) | {}x |",
            cell(&ratios, 2)
        );
    }
    println!(
        "| submit to first `TaskStarted` | {} ms |",
        cell(&samples(|r| r.first_start_ms), 0)
    );
    println!(
        "| peak RSS of the process (VmHWM) | {} MiB |",
        cell(&samples(|r| r.peak_rss_mib), 1)
    );
    println!(
        "| CPU per task, shoal process | {} ms |",
        cell(&samples(|r| r.shoal_cpu_ms_per_task), 3)
    );
    println!(
        "| CPU per task, the server's postgres processes (ended ones included) | {} ms |",
        cell(&samples(|r| r.postgres_cpu_ms_per_task), 3)
    );
    if rounds.iter().all(|r| r.worker_cpu_ms_per_task.is_some()) {
        println!(
            "| CPU per task, of which the worker's runtime (`--separate-worker`) | {} ms |",
            cell(
                &samples(|r| r.worker_cpu_ms_per_task.unwrap_or(f64::NAN)),
                3
            )
        );
    }
    let tasks = f64::from(args.tasks);
    if rounds.iter().all(|r| r.server.statements.is_some()) {
        let per_task = Samples(
            rounds
                .iter()
                .filter_map(|r| r.server.statement_calls())
                .map(|c| c as f64 / tasks)
                .collect(),
        );
        println!(
            "| statements per task (pg_stat_statements) | {} |",
            cell(&per_task, 3)
        );
    }
    let per_task = |f: fn(&pgstats::Delta) -> i64| {
        Samples(rounds.iter().map(|r| f(&r.server) as f64 / tasks).collect())
    };
    println!(
        "| WAL bytes per task (`pg_current_wal_lsn()` before and after) | {} |",
        cell(&per_task(|d| d.wal_bytes), 0)
    );
    println!(
        "| rows written per task (inserts, updates, deletes) | {} |",
        cell(&per_task(pgstats::Delta::rows_written), 2)
    );
    println!(
        "| index entries written per task | {} |",
        cell(&per_task(pgstats::Delta::index_entries), 2)
    );
    println!(
        "| load average (1 min) at the start of a round | {} |",
        cell(&samples(|r| r.load_1m), 2)
    );
    println!(
        "\nEvery round's log held exactly {} `TaskCompleted` on {} distinct task streams, and as many \
         `TaskStarted` and `TaskEnqueued`.",
        args.tasks, args.tasks
    );
    if let Some(last) = rounds.last() {
        println!(
            "\nThe server's work in the last round, per task:\n\n{}",
            pgstats::breakdown(&last.server, tasks, args.top_statements)
        );
    }
}

/// `url` (a server URL) naming database `name` instead of its own.
pub(crate) fn with_database(url: &str, name: &str) -> anyhow::Result<String> {
    let scheme_end = url.find("://").context("not a postgres:// URL")? + 3;
    let (base, query) = match url.find('?') {
        Some(q) => (&url[..q], &url[q..]),
        None => (url, ""),
    };
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    Ok(format!("{}/{name}{query}", &base[..host_end]))
}

/// The worker settings `shoal worker` runs with when given no flag (its clap defaults), with
/// the id `bench-worker`.
pub(crate) fn default_worker_args() -> WorkerArgs {
    #[derive(clap::Parser)]
    struct Defaults {
        #[command(flatten)]
        worker: WorkerArgs,
    }
    let mut args = <Defaults as clap::Parser>::parse_from(["shoal-bench"]).worker;
    args.worker_id = Some("bench-worker".into());
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_database() {
        assert_eq!(
            with_database("postgres://u@h:5/postgres", "x").unwrap(),
            "postgres://u@h:5/x"
        );
        assert_eq!(
            with_database("postgres://u@h:5", "x").unwrap(),
            "postgres://u@h:5/x"
        );
        assert_eq!(
            with_database("postgres://u@h:5/db?sslmode=disable", "x").unwrap(),
            "postgres://u@h:5/x?sslmode=disable"
        );
    }
}
