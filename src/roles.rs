//! Wiring of the roles: each `shoal <role>` subcommand builds its parts from the command line
//! and runs them until Ctrl-C or SIGTERM. No logic of its own lives here.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use shoal_command_api::commands::CommandService;
use shoal_command_api::graphql;
use shoal_command_api::orchestrator::{Orchestrator, OrchestratorConfig};
use shoal_domain::Limits;
use shoal_infra::db::{Database, DatabaseUrl};
use shoal_infra::eventlog::EventLog;
use shoal_infra::queue::{SqlQueue, TaskQueue};
use shoal_worker::{ExecHandlerConfig, Handlers, HttpHandlerConfig, Worker, WorkerConfig};
use tokio::sync::watch;

/// Where the event log lives.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// `postgres://user@host:port/db`, or `sqlite:path` for the embedded mode.
    #[arg(
        long,
        env = "SHOAL_DATABASE_URL",
        default_value = "sqlite:shoal-dev.db"
    )]
    pub database_url: String,
}

/// Which task queue to use.
#[derive(Debug, Clone, Args)]
pub struct QueueArgs {
    /// `sql`: a table in the same database (the default).
    #[arg(long, env = "SHOAL_QUEUE", default_value = "sql")]
    pub queue: String,
}

/// How workers run tasks.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// Seconds a received task stays hidden from other workers; a heartbeat extends it while
    /// the task runs.
    #[arg(long, env = "SHOAL_VISIBILITY_TIMEOUT_SECONDS", default_value_t = 30)]
    pub visibility_timeout_seconds: u64,
    /// On SIGTERM, seconds running tasks get to finish before they are released.
    #[arg(long, env = "SHOAL_GRACE_PERIOD_SECONDS", default_value_t = 30)]
    pub grace_period_seconds: u64,
    /// Enables the `http` handler: tasks are POSTed as JSON to this URL.
    #[arg(long, env = "SHOAL_HTTP_HANDLER_URL")]
    pub http_handler_url: Option<String>,
    /// Enables the `exec` handler for one allow-listed program: `NAME=PROGRAM [ARGS...]`
    /// (repeat for more). A task names it in `parameters.command`; no shell is involved.
    #[arg(long = "exec", value_name = "NAME=PROGRAM [ARGS...]")]
    pub exec: Vec<String>,
    /// Worker id recorded in `TaskStarted` (default `<hostname>-<pid>`).
    #[arg(long, env = "SHOAL_WORKER_ID")]
    pub worker_id: Option<String>,
}

impl WorkerArgs {
    pub fn config(&self, concurrency: usize) -> anyhow::Result<WorkerConfig> {
        let mut config = WorkerConfig {
            concurrency,
            visibility_timeout: Duration::from_secs(self.visibility_timeout_seconds),
            grace_period: Duration::from_secs(self.grace_period_seconds),
            ..WorkerConfig::default()
        };
        if let Some(id) = &self.worker_id {
            config.worker_id = id.clone();
        }
        if let Some(url) = &self.http_handler_url {
            config.http = Some(HttpHandlerConfig {
                url: url.clone(),
                timeout: Duration::from_secs(60),
            });
        }
        if !self.exec.is_empty() {
            let mut commands = BTreeMap::new();
            for spec in &self.exec {
                let (name, command) = spec
                    .split_once('=')
                    .with_context(|| format!("--exec {spec:?}: expected NAME=PROGRAM [ARGS...]"))?;
                let argv: Vec<String> = command.split_whitespace().map(str::to_owned).collect();
                anyhow::ensure!(
                    !name.is_empty() && !argv.is_empty(),
                    "--exec {spec:?}: expected NAME=PROGRAM [ARGS...]"
                );
                commands.insert(name.to_owned(), argv);
            }
            config.exec = Some(ExecHandlerConfig {
                commands,
                ..ExecHandlerConfig::default()
            });
        }
        config
            .validate()
            .map_err(|e| anyhow::anyhow!("worker configuration: {e}"))?;
        Ok(config)
    }
}

/// The parts every role shares: the database, its event log, and the task queue.
pub struct Platform {
    pub database: Database,
    pub log: Arc<dyn EventLog>,
    pub queue: Arc<dyn TaskQueue>,
}

impl Platform {
    /// Connects, applies migrations, and opens the queue.
    pub async fn connect(db: &DatabaseArgs, queue: &QueueArgs) -> anyhow::Result<Self> {
        let url = DatabaseUrl::parse(&db.database_url)?;
        let database = shoal_infra::db::migrate(url.as_str())
            .await
            .with_context(|| format!("opening the database at {url}"))?;
        let log = database.event_log();
        let queue: Arc<dyn TaskQueue> = match queue.queue.as_str() {
            "sql" => Arc::new(SqlQueue::for_database(&database)),
            other => anyhow::bail!("--queue {other:?}: the supported queue is `sql`"),
        };
        Ok(Platform {
            database,
            log,
            queue,
        })
    }
}

/// A shutdown signal shared by every part of a process: Ctrl-C or SIGTERM.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    pub fn on_signals() -> Self {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            let ctrl_c = tokio::signal::ctrl_c();
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("installing the SIGTERM handler");
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
            tracing::info!("shutting down");
            let _ = tx.send(true);
        });
        Shutdown(rx)
    }

    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

pub fn orchestrator(platform: &Platform) -> anyhow::Result<Orchestrator> {
    Ok(Orchestrator::new(
        OrchestratorConfig::default(),
        platform.log.clone(),
        platform.queue.clone(),
        platform.database.clone(),
    )?)
}

pub fn worker(platform: &Platform, config: WorkerConfig) -> Worker {
    let handlers = Handlers::builtin(&config);
    Worker::new(
        config,
        handlers,
        platform.log.clone(),
        platform.queue.clone(),
    )
}

/// The HTTP APIs on one router: GraphQL (with GraphiQL) at `/graphql`.
pub fn api_router(platform: &Platform) -> axum::Router {
    let service = CommandService::new(platform.log.clone(), Limits::default());
    graphql::router(graphql::schema(service))
}

pub async fn serve(
    listen: SocketAddr,
    router: axum::Router,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.wait())
        .await?;
    Ok(())
}
