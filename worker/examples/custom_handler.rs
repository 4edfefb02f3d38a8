//! A worker binary of your own: Shoal's built-in handlers plus a custom `thumbnail` handler.
//!
//! ```text
//! cargo run -p shoal-worker --example custom_handler -- --database-url sqlite:shoal.db
//! ```
//!
//! Submit a job with `job_type: "thumbnail"` and parameters such as
//! `{"width": 4000, "height": 3000, "max_side": 256}`; each task's result is the thumbnail's
//! size. Ctrl-C (or SIGTERM) stops the worker gracefully: running tasks finish, the rest go
//! back to the queue.

use std::sync::Arc;

use anyhow::Context;
use serde_json::{Value, json};
use shoal_infra::db::Database;
use shoal_infra::queue::{SqlQueue, TaskQueue};
use shoal_worker::{Handler, Handlers, TaskContext, TaskError, Worker, WorkerConfig};

/// Computes the size of a thumbnail that fits in `max_side` x `max_side`.
struct Thumbnail;

fn dimension(task: &TaskContext, name: &str, default: Option<u64>) -> Result<u64, TaskError> {
    match task.param(name) {
        None | Some(Value::Null) => {
            default.ok_or_else(|| TaskError::fatal(format!("parameters.{name} is required")))
        }
        Some(value) => value
            .as_u64()
            .filter(|&n| n > 0)
            // Bad input: no retry can fix it, so fail the task at once.
            .ok_or_else(|| {
                TaskError::fatal(format!("parameters.{name} must be a positive integer"))
            }),
    }
}

#[async_trait::async_trait]
impl Handler for Thumbnail {
    async fn handle(&self, task: &TaskContext) -> Result<Option<Value>, TaskError> {
        let width = dimension(task, "width", None)?;
        let height = dimension(task, "height", None)?;
        let max_side = dimension(task, "max_side", Some(128))?;
        let scale = (max_side as f64 / width.max(height) as f64).min(1.0);
        let thumb = |side: u64| ((side as f64 * scale).round() as u64).max(1);
        Ok(Some(json!({
            "width": thumb(width),
            "height": thumb(height),
            "scale": scale,
            "task_index": task.index,
        })))
    }
}

fn usage() -> ! {
    eprintln!("usage: custom_handler --database-url URL [--concurrency N] [--worker-id ID]");
    std::process::exit(2)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut database_url = std::env::var("SHOAL_DATABASE_URL").ok();
    let mut config = WorkerConfig::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match arg.as_str() {
            "--database-url" => database_url = Some(value()),
            "--concurrency" => config.concurrency = value().parse().context("--concurrency")?,
            "--worker-id" => config.worker_id = value(),
            _ => usage(),
        }
    }
    let Some(database_url) = database_url else {
        usage()
    };

    let database = Database::connect(&database_url)
        .await
        .with_context(|| format!("cannot connect to {database_url}"))?;
    database
        .migrate()
        .await
        .context("cannot migrate the database")?;
    let log = database.event_log();
    let queue: Arc<dyn TaskQueue> = Arc::new(SqlQueue::for_database(&database));

    let mut handlers = Handlers::builtin(&config);
    handlers.register("thumbnail", Thumbnail);

    // Listen for SIGTERM before running, so that a failure to do so stops the start-up.
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    let shutdown = async move {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    };
    eprintln!("worker {} running; Ctrl-C to stop", config.worker_id);
    let stats = Worker::new(config, handlers, log, queue)
        .run(shutdown)
        .await?;
    eprintln!(
        "stopped: {} completed, {} failed, {} retried",
        stats.completed, stats.failed, stats.retried
    );
    database.close().await;
    Ok(())
}
