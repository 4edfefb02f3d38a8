//! What the end-to-end benchmarks (`e2e`, `fairness`) share: a fresh database on the given
//! Postgres server with the orchestrator and a worker running on it, wired as `shoal dev`
//! wires them (`shoal::roles`) on the SQL queue; following jobs in the log until they end; and
//! the check that the log holds every task's transitions.

use std::time::{Duration, Instant};

use anyhow::Context;
use shoal::roles::{self, DatabaseArgs, Platform, QueueArgs};
use shoal_command_api::orchestrator::OrchestratorError;
use shoal_domain::JobId;
use shoal_infra::eventlog::EventLog;
use shoal_worker::{WorkerConfig, WorkerError, WorkerStats};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::database::{BenchDatabase, E2eLogSummary};
use crate::e2e::with_database;
use crate::system::load_average;

/// A fresh database with the orchestrator and a worker running on it, until [`Rig::stop`].
pub(crate) struct Rig {
    pub(crate) db: BenchDatabase,
    pub(crate) platform: Platform,
    /// The 1-minute load average when the rig was started.
    pub(crate) load_1m: f64,
    stop: watch::Sender<bool>,
    orchestrating: JoinHandle<Result<(), OrchestratorError>>,
    working: JoinHandle<Result<WorkerStats, WorkerError>>,
}

impl Rig {
    /// Creates a database `<prefix>_<time>` on the server at `server_url`, starts the
    /// orchestrator (default settings) and a worker with `worker`, and waits 0.5 s for their
    /// start-up (leader lock, checkpoint load, the worker's first receive), which is not timed.
    pub(crate) async fn start(
        server_url: &str,
        prefix: &str,
        worker: WorkerConfig,
    ) -> anyhow::Result<Self> {
        let db = BenchDatabase::create(server_url, prefix)
            .await
            .context("creating the benchmark database")?;
        let load_1m = load_average();
        let database_url = with_database(server_url, db.name())?;
        let platform = Platform::connect(
            &DatabaseArgs::new(database_url),
            &QueueArgs {
                queue: "sql".into(),
            },
        )
        .await?;
        let (stop, stopped) = watch::channel(false);
        let until_stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let orchestrating = tokio::spawn(
            roles::orchestrator(&platform, &roles::OrchestratorArgs::default())?
                .run(until_stopped(stopped.clone())),
        );
        let working =
            tokio::spawn(roles::worker(&platform, worker).run(until_stopped(stopped.clone())));
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok(Self {
            db,
            platform,
            load_1m,
            stop,
            orchestrating,
            working,
        })
    }

    /// Stops the worker and the orchestrator and closes the platform's pool; returns the
    /// database (to check and drop) and what the worker did.
    pub(crate) async fn stop(self) -> anyhow::Result<(BenchDatabase, WorkerStats)> {
        let _ = self.stop.send(true);
        let stats = self.working.await??;
        self.orchestrating.await??;
        self.platform.database.close().await;
        Ok((self.db, stats))
    }
}

/// Jobs followed in the log (each job's own stream, polled) until they end.
pub(crate) struct JobEnds {
    jobs: Vec<(String, i64, bool)>,
}

impl JobEnds {
    pub(crate) fn new(jobs: &[JobId]) -> Self {
        Self {
            jobs: jobs.iter().map(|j| (j.stream_id(), 0, false)).collect(),
        }
    }

    /// Reads what the jobs' streams gained since the last call; returns the indexes (in the
    /// order given to [`JobEnds::new`]) of the jobs whose `JobCompleted` it read. A job that
    /// failed or was cancelled is an error.
    pub(crate) async fn poll(&mut self, log: &dyn EventLog) -> anyhow::Result<Vec<usize>> {
        let mut completed = Vec::new();
        for (i, (stream, version, done)) in self.jobs.iter_mut().enumerate() {
            if *done {
                continue;
            }
            for event in log.read_stream(stream, *version).await? {
                *version = event.stream_version;
                match event.event_type.as_str() {
                    "JobCompleted" => {
                        *done = true;
                        completed.push(i);
                    }
                    "JobFailed" | "JobCancelled" => {
                        anyhow::bail!("job {i} ended {}", event.event_type)
                    }
                    _ => {}
                }
            }
        }
        Ok(completed)
    }

    pub(crate) fn all_done(&self) -> bool {
        self.jobs.iter().all(|(_, _, done)| *done)
    }

    /// Waits 2 ms before the next poll, or fails once `deadline` has passed with jobs still
    /// running.
    pub(crate) async fn sleep_before(&self, deadline: Instant) -> anyhow::Result<()> {
        if self.all_done() {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the jobs did not complete in time"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
        Ok(())
    }
}

/// Fails unless the log holds exactly `tasks` `TaskCompleted` on as many distinct task
/// streams, and as many `TaskStarted` and `TaskEnqueued` (every transition durably in the log).
pub(crate) fn check_every_task_logged(
    summary: &E2eLogSummary,
    tasks: u32,
    stats: &WorkerStats,
) -> anyhow::Result<()> {
    let n = i64::from(tasks);
    anyhow::ensure!(
        summary.task_completed == n && summary.task_completed_streams == n,
        "the log holds {} TaskCompleted on {} task streams, not {n} (worker: {stats:?})",
        summary.task_completed,
        summary.task_completed_streams
    );
    anyhow::ensure!(
        summary.task_started == n && summary.task_enqueued == n,
        "the log holds {} TaskStarted and {} TaskEnqueued, not {n}",
        summary.task_started,
        summary.task_enqueued
    );
    Ok(())
}
