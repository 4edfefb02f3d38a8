//! Wiring of the roles: each `shoal <role>` subcommand builds its parts from the command line
//! and runs them until Ctrl-C or SIGTERM. No logic of its own lives here.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::cors::AllowedOrigins;
use anyhow::Context;
use clap::Args;
use shoal_command_api::commands::CommandService;
use shoal_command_api::orchestrator::{Orchestrator, OrchestratorConfig};
use shoal_domain::Limits;
use shoal_infra::db::{Database, DatabaseUrl, PoolSettings};
use shoal_infra::eventlog::EventLog;
use shoal_infra::queue::{SqlQueue, SqsQueue, TaskQueue};
use shoal_infra::readmodel::ReadModelStore;
use shoal_infra::telemetry::InstrumentedLog;
use shoal_infra::tokens::TokenStore;
use shoal_infra::workers::SqlWorkerRegistry;
use shoal_worker::{ExecHandlerConfig, Handlers, HttpHandlerConfig, Worker, WorkerConfig};
use tokio::sync::watch;

/// Where the event log lives.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// `postgres://user@host:port/db`, or `sqlite:path` for the embedded mode. Over TLS:
    /// `?sslmode=require`, or `?sslmode=verify-full&sslrootcert=/path/to/ca.pem` (see the
    /// guide). It may hold a password: `--help` never shows its value.
    #[arg(
        long,
        env = "SHOAL_DATABASE_URL",
        default_value = "sqlite:shoal-dev.db",
        hide_env_values = true
    )]
    pub database_url: String,
    /// Most connections this process's pool opens to the database (a LISTEN for the log or the
    /// SQL queue holds one of them). On Postgres a process may open up to two more outside the
    /// pool, each only once it has something to announce (NOTIFY after its appends, after its
    /// SQL-queue sends), and the orchestrator one for its leader lock. Keep the sum over every
    /// process under the server's `max_connections`: see docs/deploy.md.
    #[arg(
        long,
        env = "SHOAL_DATABASE_MAX_CONNECTIONS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub database_max_connections: u32,
    /// Postgres: the `statement_timeout` of every pooled connection, in seconds (a statement
    /// running longer, lock waits included, is cancelled and its transaction rolled back; the
    /// caller retries or reports it). 0: the server's own setting.
    #[arg(
        long,
        env = "SHOAL_DATABASE_STATEMENT_TIMEOUT_SECONDS",
        default_value_t = shoal_infra::db::DEFAULT_STATEMENT_TIMEOUT.as_secs()
    )]
    pub database_statement_timeout_seconds: u64,
}

impl DatabaseArgs {
    /// `--database-url` with the default pool size.
    pub fn new(database_url: String) -> Self {
        DatabaseArgs {
            database_url,
            database_max_connections: PoolSettings::default().max_connections,
            database_statement_timeout_seconds: shoal_infra::db::DEFAULT_STATEMENT_TIMEOUT
                .as_secs(),
        }
    }

    /// Connects with the configured pool size and applies the migrations.
    pub async fn open(&self) -> anyhow::Result<Database> {
        self.open_with(PoolSettings::default()).await
    }

    async fn open_with(&self, defaults: PoolSettings) -> anyhow::Result<Database> {
        let url = DatabaseUrl::parse(&self.database_url)?;
        let settings = PoolSettings {
            max_connections: self.database_max_connections,
            statement_timeout: (self.database_statement_timeout_seconds > 0)
                .then(|| Duration::from_secs(self.database_statement_timeout_seconds)),
            ..defaults
        };
        let open = async {
            let database = Database::connect_with(&url, &settings).await?;
            database.migrate().await?;
            Ok::<_, shoal_infra::db::DbError>(database)
        };
        open.await
            .with_context(|| format!("opening the database at {url}"))
    }
}

/// How the projector batches.
#[derive(Debug, Clone, Default, Args)]
pub struct ProjectorArgs {
    /// Shortest time between two reads of the log by a live projection while events keep
    /// coming, in milliseconds (ADR 21): larger batches write each task's row fewer times, and
    /// the read tables and subscriptions run up to this much behind under load. Default: 100
    /// on SQLite, 0 on Postgres.
    #[arg(long, env = "SHOAL_PROJECTOR_LINGER_MS")]
    pub projector_linger_ms: Option<u64>,
}

impl ProjectorArgs {
    /// The projector's configuration for `database` with these settings.
    pub fn config(&self, database: &Database) -> shoal_projector::ProjectorConfig {
        let mut config = shoal_projector::ProjectorConfig::for_database(database);
        if let Some(ms) = self.projector_linger_ms {
            config.linger = Duration::from_millis(ms);
        }
        config
    }
}

/// Which task queue to use.
#[derive(Debug, Clone, Args)]
pub struct QueueArgs {
    /// `sql`: a table in the same database (the default); or an AWS SQS queue URL
    /// (`https://sqs.<region>.amazonaws.com/<account>/<name>`, see `shoal sqs init`), with its
    /// dead-letter queue from its redrive policy. AWS endpoint, region and credentials come
    /// from the standard AWS chain (`AWS_ENDPOINT_URL` points it at an emulator).
    #[arg(long, env = "SHOAL_QUEUE", default_value = "sql")]
    pub queue: String,
}

/// Long polling of workers on SQS, where each receive is a billed request.
pub const SQS_LONG_POLL: Duration = Duration::from_secs(20);

/// The default of `--http-handler-max-response-bytes`.
pub use shoal_worker::DEFAULT_HTTP_MAX_RESPONSE_BYTES;

/// The default of `--max-result-bytes`.
pub use shoal_worker::DEFAULT_MAX_RESULT_BYTES;

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
    /// The local buffer: messages a worker may hold beyond its running tasks (received ahead,
    /// or finished and being recorded), hidden from other workers meanwhile and released at
    /// once on SIGTERM. Filled only as far as the tasks consume it. Default: 2,048, or 32 per
    /// slot beyond 64 slots, at most 4,096; 0 to receive no more than the free slots; at most
    /// 100,000.
    #[arg(long, env = "SHOAL_PREFETCH")]
    pub prefetch: Option<usize>,
    /// The local buffer's bound in bytes of message bodies: beyond its slots, the worker
    /// receives no more while what it holds adds up to this (large messages fill the buffer
    /// by bytes before `--prefetch` counts them).
    #[arg(long, env = "SHOAL_PREFETCH_BYTES", default_value_t = shoal_worker::DEFAULT_PREFETCH_BYTES)]
    pub prefetch_bytes: usize,
    /// Enables the `http` handler: tasks are POSTed as JSON to this URL (redirects are not
    /// followed). It may hold credentials: `--help` and task errors never show them.
    #[arg(long, env = "SHOAL_HTTP_HANDLER_URL", hide_env_values = true)]
    pub http_handler_url: Option<String>,
    /// The largest response body the `http` handler reads, in bytes; a larger one fails the
    /// task.
    #[arg(long, env = "SHOAL_HTTP_HANDLER_MAX_RESPONSE_BYTES", default_value_t = DEFAULT_HTTP_MAX_RESPONSE_BYTES)]
    pub http_handler_max_response_bytes: usize,
    /// Enables the `exec` handler for one allow-listed program: `NAME=PROGRAM [ARGS...]`
    /// (repeat for more). A task names it in `parameters.command`; no shell is involved.
    #[arg(long = "exec", value_name = "NAME=PROGRAM [ARGS...]")]
    pub exec: Vec<String>,
    /// The environment variables `exec` programs get from the worker's environment (all
    /// others are cleared). Default: PATH, LANG, LC_ALL, LC_CTYPE, TZ.
    #[arg(
        long,
        env = "SHOAL_EXEC_ENV",
        value_delimiter = ',',
        value_name = "NAME,..."
    )]
    pub exec_env: Option<Vec<String>>,
    /// The working directory of `exec` programs. Default: a fresh, empty temporary directory
    /// per attempt, removed when it ends.
    #[arg(long, env = "SHOAL_EXEC_DIR")]
    pub exec_dir: Option<std::path::PathBuf>,
    /// The largest result a handler may return, serialized as JSON, in bytes; a larger one
    /// fails its task with a clear error.
    #[arg(long, env = "SHOAL_MAX_RESULT_BYTES", default_value_t = DEFAULT_MAX_RESULT_BYTES)]
    pub max_result_bytes: usize,
    /// Worker id recorded in `TaskStarted` (default `<hostname>-<pid>`).
    #[arg(long, env = "SHOAL_WORKER_ID")]
    pub worker_id: Option<String>,
    /// Most CPU-bound built-in tasks (`cpu_bound`, `matrix_multiply`) computing at once;
    /// tasks beyond it wait for a core in their slot. Default: the cores this process may use.
    #[arg(long, env = "SHOAL_CPU_SLOTS", value_parser = clap::value_parser!(u32).range(1..))]
    pub cpu_slots: Option<u32>,
    /// Seconds between two heartbeats of the worker to the `workers` table (the dashboard's
    /// workers page); a worker is shown silent after three missed ones.
    #[arg(long, env = "SHOAL_WORKER_HEARTBEAT_SECONDS", default_value_t = 5.0)]
    pub heartbeat_seconds: f64,
}

impl WorkerArgs {
    pub fn config(&self, concurrency: usize) -> anyhow::Result<WorkerConfig> {
        let mut config = WorkerConfig {
            concurrency,
            visibility_timeout: Duration::from_secs(self.visibility_timeout_seconds),
            grace_period: Duration::from_secs(self.grace_period_seconds),
            prefetch: self
                .prefetch
                .unwrap_or_else(|| shoal_worker::default_prefetch(concurrency)),
            prefetch_bytes: self.prefetch_bytes,
            max_result_bytes: self.max_result_bytes,
            ..WorkerConfig::default()
        };
        if let Some(id) = &self.worker_id {
            config.worker_id = id.clone();
        }
        if let Some(cpu_slots) = self.cpu_slots {
            config.cpu_slots = cpu_slots as usize;
        }
        anyhow::ensure!(
            self.heartbeat_seconds.is_finite() && (0.1..=3600.0).contains(&self.heartbeat_seconds),
            "--heartbeat-seconds must be between 0.1 and 3600, not {}",
            self.heartbeat_seconds
        );
        config.heartbeat_interval = Duration::from_secs_f64(self.heartbeat_seconds);
        if let Some(url) = &self.http_handler_url {
            config.http = Some(HttpHandlerConfig {
                max_response_bytes: self.http_handler_max_response_bytes,
                ..HttpHandlerConfig::new(url.clone(), Duration::from_secs(60))
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
            let defaults = ExecHandlerConfig::default();
            config.exec = Some(ExecHandlerConfig {
                commands,
                env_allow: self.exec_env.clone().unwrap_or(defaults.env_allow),
                working_dir: self.exec_dir.clone(),
                ..ExecHandlerConfig::default()
            });
        }
        config.validate().context("worker configuration")?;
        Ok(config)
    }
}

/// The parts every role shares: the database, its event log, and the task queue.
#[derive(Debug)]
pub struct Platform {
    pub database: Database,
    pub log: Arc<dyn EventLog>,
    pub queue: Arc<dyn TaskQueue>,
    /// The same queue when it is SQS (for its call counts).
    pub sqs: Option<SqsQueue>,
}

impl Platform {
    /// Connects, applies migrations, and opens the queue.
    pub async fn connect(db: &DatabaseArgs, queue: &QueueArgs) -> anyhow::Result<Self> {
        Self::connected(db.open().await?, queue).await
    }

    /// [`Self::connect`] for a process whose workers claim from the queue: its connections
    /// plan without bitmap scans (ADR 26).
    pub async fn connect_for_workers(db: &DatabaseArgs, queue: &QueueArgs) -> anyhow::Result<Self> {
        let settings = PoolSettings {
            bitmap_scans: false,
            ..PoolSettings::default()
        };
        Self::connected(db.open_with(settings).await?, queue).await
    }

    async fn connected(database: Database, queue: &QueueArgs) -> anyhow::Result<Self> {
        let log = database.event_log();
        let (queue, sqs): (Arc<dyn TaskQueue>, _) = match queue.queue.as_str() {
            "sql" => (Arc::new(SqlQueue::for_database(&database)), None),
            url if url.starts_with("https://") || url.starts_with("http://") => {
                let sqs = SqsQueue::from_env(url)
                    .await
                    .with_context(|| format!("opening the SQS queue {url}"))?;
                if sqs.dlq_url().is_none() {
                    tracing::warn!(
                        queue = url,
                        "the SQS queue has no redrive policy: dead letters cannot be kept \
                         (create it with `shoal sqs init`)"
                    );
                }
                (Arc::new(sqs.clone()), Some(sqs))
            }
            other => {
                anyhow::bail!("--queue {other:?}: expected `sql` or an SQS queue URL (https://...)")
            }
        };
        Ok(Platform {
            database,
            log,
            queue,
            sqs,
        })
    }
}

/// A shutdown signal shared by every part of a process: Ctrl-C or SIGTERM.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// Installs the Ctrl-C (SIGINT) and SIGTERM handlers, then watches for either in the
    /// background. `Err` when a handler cannot be installed: a process that cannot be stopped
    /// cleanly should not start.
    pub fn on_signals() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt =
            signal(SignalKind::interrupt()).context("installing the SIGINT (Ctrl-C) handler")?;
        let mut terminate =
            signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            tracing::info!("shutting down");
            let _ = tx.send(true);
        });
        Ok(Shutdown(rx))
    }

    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

/// How the orchestrator runs.
#[derive(Debug, Clone, Args)]
pub struct OrchestratorArgs {
    /// Hours an idempotency key is remembered: a `submitJob` repeated with the same key within
    /// them returns the first job; after them it submits a new one.
    #[arg(
        long,
        env = "SHOAL_IDEMPOTENCY_KEY_RETENTION_HOURS",
        default_value_t = 168
    )]
    pub idempotency_key_retention_hours: u64,
    /// Fair share on SQS, which cannot reorder its messages: at most this many of a job's
    /// tasks wait in the queue unstarted, and the others are admitted as they start, by job
    /// priority and then in turn across jobs, so a new job waits behind one window of each
    /// running job at most. Default 64 on SQS; 0 turns it off. Ignored on the SQL queue, whose
    /// workers take tasks fairly by themselves.
    #[arg(long, env = "SHOAL_FAIR_SHARE_WINDOW")]
    pub fair_share_window: Option<u32>,
}

impl Default for OrchestratorArgs {
    fn default() -> Self {
        OrchestratorArgs {
            idempotency_key_retention_hours: 168,
            fair_share_window: None,
        }
    }
}

/// The default of `--fair-share-window` on SQS.
pub const DEFAULT_SQS_FAIR_SHARE_WINDOW: u32 = 64;

pub fn orchestrator(platform: &Platform, args: &OrchestratorArgs) -> anyhow::Result<Orchestrator> {
    let config = OrchestratorConfig {
        idempotency_key_retention: Duration::from_secs(
            args.idempotency_key_retention_hours.saturating_mul(3600),
        ),
        // Fair share by admission on queues that cannot reorder (all but the SQL queue).
        fair_share_window: match (!platform.queue.is_log_table(), args.fair_share_window) {
            (false, _) | (true, Some(0)) => None,
            (true, window) => Some(window.unwrap_or(DEFAULT_SQS_FAIR_SHARE_WINDOW)),
        },
        // On SQLite with the SQL queue, a chunk's tasks are queued in the chunk's own
        // transaction; otherwise by the relay (ADR 14).
        ..OrchestratorConfig::for_database(&platform.database, platform.queue.is_log_table())
    };
    Ok(Orchestrator::new(
        config,
        InstrumentedLog::wrap(platform.log.clone(), "orchestrator"),
        platform.queue.clone(),
        platform.database.clone(),
    )?)
}

/// The projector that keeps the read tables (`jobs`, `tasks`, analytics) up to date.
pub fn projector(platform: &Platform, args: &ProjectorArgs) -> shoal_projector::Projector {
    shoal_projector::Projector::new(
        args.config(&platform.database),
        platform.log.clone(),
        platform.database.clone(),
    )
}

/// A worker on the platform's queue, reporting itself to the `workers` table; on SQS it
/// long-polls for [`SQS_LONG_POLL`] and uses a visibility timeout of whole seconds (SQS's
/// unit).
pub fn worker(platform: &Platform, mut config: WorkerConfig) -> Worker {
    if platform.sqs.is_some() {
        config.long_poll = SQS_LONG_POLL;
        config.visibility_timeout =
            Duration::from_secs(config.visibility_timeout.as_secs_f64().ceil() as u64);
    }
    // The SQL queue is a table of the log's database: a completed task's message is deleted in
    // the commit of its end (ADR 31).
    config.acks_in_commit = platform.queue.is_log_table();
    // SQLite has one writer: a second commit would only wait for the first (ADR 34).
    if matches!(platform.database, Database::Sqlite(_)) {
        config.max_concurrent_commits = 1;
    }
    let handlers = Handlers::builtin(&config);
    let queue = match &platform.sqs {
        Some(sqs) => {
            let url = sqs.queue_url();
            format!("sqs:{}", url.rsplit('/').next().unwrap_or(url))
        }
        None => "sql".to_owned(),
    };
    Worker::new(
        config,
        handlers,
        InstrumentedLog::wrap(platform.log.clone(), "worker"),
        platform.queue.clone(),
    )
    .reporting_to(
        Arc::new(SqlWorkerRegistry::new(platform.database.clone())),
        queue,
    )
}

/// How the HTTP APIs are served.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// An origin whose web pages may call the APIs (CORS), as the browser sends it:
    /// `scheme://host[:port]`, e.g. `http://localhost:3000`. Repeat for more (the environment
    /// variable takes them comma-separated). None by default; no wildcard. Pages from other
    /// origins can neither read nor write.
    #[arg(
        long = "cors-allow-origin",
        alias = "cors-origins",
        value_name = "ORIGIN",
        env = "SHOAL_CORS_ALLOW_ORIGINS",
        value_delimiter = ','
    )]
    pub cors_allow_origin: Vec<String>,
    /// Most tasks one job may have (REST `num_tasks`, GraphQL `totalTasks` or `items` split);
    /// `/openapi.json` announces it.
    #[arg(long, env = "SHOAL_MAX_TASKS_PER_JOB", default_value_t = Limits::default().max_tasks_per_job,
        value_parser = clap::value_parser!(u32).range(1..))]
    pub max_tasks_per_job: u32,
    /// Most task input one job may carry in all, in bytes: its parameters once per task, plus
    /// its items. A larger job is refused at submission (`LIMIT_EXCEEDED`).
    #[arg(long, env = "SHOAL_MAX_JOB_BYTES", default_value_t = shoal_domain::limits::DEFAULT_MAX_JOB_BYTES)]
    pub max_job_bytes: u64,
    /// The largest queue message of one task, in bytes, checked at submission. SQS refuses
    /// messages over 256 KiB (the default); with the SQL queue it may be raised.
    #[arg(long, env = "SHOAL_MAX_MESSAGE_BYTES", default_value_t = shoal_domain::limits::DEFAULT_MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,
    /// Most tasks one REST `GET /api/v1/jobs/{id}/tasks` returns.
    #[arg(long, env = "SHOAL_REST_MAX_TASKS", default_value_t = shoal_query_api::rest::DEFAULT_MAX_TASKS_PER_RESPONSE)]
    pub rest_max_tasks: u32,
    /// Most messages per second one GraphQL subscription sends (changes in between are
    /// coalesced into the latest state).
    #[arg(long, env = "SHOAL_SUBSCRIPTION_MAX_RATE", default_value_t = shoal_query_api::graphql::DEFAULT_MAX_MESSAGES_PER_SECOND)]
    pub subscription_max_rate: u32,
    /// The largest request body (GraphQL and REST), in bytes: a larger one is refused with
    /// 413. The default fits a submission with the largest `items` allowed.
    #[arg(long, env = "SHOAL_MAX_REQUEST_BYTES", default_value_t = crate::http_limits::DEFAULT_MAX_REQUEST_BYTES)]
    pub max_request_bytes: usize,
    /// Most operations in one batched GraphQL request (a JSON array): more are refused.
    #[arg(long, env = "SHOAL_GRAPHQL_MAX_BATCH", default_value_t = crate::http_limits::DEFAULT_MAX_BATCH)]
    pub graphql_max_batch: usize,
    /// Seconds an HTTP request may take before it is answered 503 (WebSocket connections are
    /// not cut by it).
    #[arg(long, env = "SHOAL_REQUEST_TIMEOUT_SECONDS", default_value_t = crate::http_limits::DEFAULT_REQUEST_TIMEOUT.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout_seconds: u64,
    /// Most WebSocket (subscription) connections at once; one more is refused with 503.
    #[arg(long, env = "SHOAL_WS_MAX_CONNECTIONS", default_value_t = crate::ws::WsLimits::default().max_connections)]
    pub ws_max_connections: usize,
    /// Most subscriptions one WebSocket connection may have at once.
    #[arg(long, env = "SHOAL_WS_MAX_SUBSCRIPTIONS", default_value_t = crate::ws::WsLimits::default().max_subscriptions)]
    pub ws_max_subscriptions: usize,
    /// The largest WebSocket message a client may send, in bytes (closed with 1009 above).
    #[arg(long, env = "SHOAL_WS_MAX_MESSAGE_BYTES", default_value_t = crate::ws::WsLimits::default().max_message_bytes)]
    pub ws_max_message_bytes: usize,
    /// Seconds a WebSocket client has to send `connection_init` (closed with 4408 after).
    #[arg(long, env = "SHOAL_WS_INIT_TIMEOUT_SECONDS", default_value_t = crate::ws::WsLimits::default().init_timeout.as_secs())]
    pub ws_init_timeout_seconds: u64,
    /// Seconds one message to a WebSocket client may take to be sent: a client that stops
    /// reading is disconnected after it, not buffered for.
    #[arg(long, env = "SHOAL_WS_SEND_TIMEOUT_SECONDS", default_value_t = crate::ws::WsLimits::default().send_timeout.as_secs())]
    pub ws_send_timeout_seconds: u64,
    /// The dashboard's build (`npm --prefix web run build`), served at `/` to browsers.
    #[arg(long, env = "SHOAL_WEB_DIR", default_value = "web/dist")]
    pub web_dir: std::path::PathBuf,
    #[command(flatten)]
    pub auth: crate::auth::AuthArgs,
    /// A host name this server answers to in `Host`, besides its listen address (and, on
    /// loopback, `localhost`): e.g. the name of its Service or ingress. Repeat for more (the
    /// environment variable takes them comma-separated); `*` accepts any (behind a proxy that
    /// checks `Host` itself). Other names get 421: a DNS-rebinding page cannot reach Shoal.
    #[arg(
        long = "allowed-host",
        value_name = "HOST",
        env = "SHOAL_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    pub allowed_host: Vec<String>,
    /// A second listener that serves only the REST task transitions
    /// (`POST /api/v1/tasks/{id}/running|complete|failed`) and `/health`, without tokens: for
    /// the old system's workers, which send none, behind a cluster-internal Service and a
    /// NetworkPolicy. Never expose it.
    #[arg(long, env = "SHOAL_INTERNAL_LISTEN", value_name = "ADDR")]
    pub internal_listen: Option<SocketAddr>,
}

impl ApiArgs {
    /// The HTTP and WebSocket limits set on the command line.
    pub fn http_limits(&self) -> crate::http_limits::HttpLimits {
        crate::http_limits::HttpLimits {
            max_request_bytes: self.max_request_bytes,
            max_batch: self.graphql_max_batch,
            request_timeout: Duration::from_secs(self.request_timeout_seconds),
            ws: crate::ws::WsLimits {
                max_connections: self.ws_max_connections,
                max_message_bytes: self.ws_max_message_bytes,
                max_subscriptions: self.ws_max_subscriptions,
                init_timeout: Duration::from_secs(self.ws_init_timeout_seconds),
                send_timeout: Duration::from_secs(self.ws_send_timeout_seconds),
            },
        }
    }

    /// The domain's limits, with those set on the command line.
    pub fn limits(&self) -> Limits {
        Limits {
            max_tasks_per_job: self.max_tasks_per_job,
            max_job_bytes: self.max_job_bytes,
            max_message_bytes: self.max_message_bytes,
            ..Limits::default()
        }
    }

    /// [`ApiArgs::limits`] on the platform's queue: on SQS, a task's timeout is at most
    /// [`SqsQueue::MAX_TASK_TIMEOUT_SECONDS`] (SQS hides a message 12 hours at most), so a job
    /// asking for more is refused at submit.
    pub fn limits_for(&self, platform: &Platform) -> Limits {
        let limits = self.limits();
        sqs_limits(limits, platform.sqs.is_some())
    }
}

/// The HTTP APIs on one router: GraphQL (with GraphiQL) at `/graphql`, and the original's REST
/// API (`/`, `/health`, `/api/v1/...`, `/openapi.json`, `/docs`), with CORS as configured,
/// tokens as `--auth` says, and the browser rules of `crate::browser_guard` for a server on
/// `listen`. GraphQL subscriptions are fed by `projector`'s commits. `extra` (the dashboard,
/// the admin routes) is served behind the same checks.
pub fn api_router(
    platform: &Platform,
    api: &ApiArgs,
    projector: &shoal_projector::Projector,
    listen: SocketAddr,
    extra: impl FnOnce(axum::Router) -> axum::Router,
) -> anyhow::Result<axum::Router> {
    api.auth.check(listen)?;
    let allowed = AllowedOrigins::parse(&api.cors_allow_origin)?;
    let service = command_service(platform, api);
    let rest = crate::rest::router(
        service.clone(),
        ReadModelStore::new(platform.database.clone()),
        shoal_query_api::rest::RestConfig {
            max_tasks_per_response: api.rest_max_tasks,
        },
    );
    let authenticator = (api.auth.auth == crate::auth::AuthMode::Tokens).then(|| {
        Arc::new(crate::auth::Authenticator::new(TokenStore::new(
            platform.database.clone(),
        )))
    });
    let schema = crate::graphql::schema(
        service,
        ReadModelStore::new(platform.database.clone()),
        platform.log.clone(),
        shoal_query_api::graphql::LiveConfig::new(
            shoal_query_api::graphql::ChangeFeed::from_projector(projector),
            api.subscription_max_rate,
        ),
    );
    let limits = api.http_limits();
    let mut router =
        extra(crate::graphql::router_with(schema, &limits, authenticator.clone()).merge(rest))
            .layer(axum::extract::DefaultBodyLimit::max(
                limits.max_request_bytes,
            ))
            .layer(axum::middleware::from_fn_with_state(
                limits.request_timeout,
                crate::http_limits::time_limit,
            ));
    if let Some(authenticator) = authenticator {
        router = crate::auth::apply(router, authenticator);
    }
    let router = crate::browser_guard::apply(
        router,
        crate::browser_guard::Guard {
            hosts: crate::browser_guard::AllowedHosts::new(listen, &api.allowed_host),
            origins: allowed.clone(),
        },
    );
    Ok(crate::cors::apply(router, allowed))
}

/// The router of `--internal-listen`: the REST task transitions and `/health` only, without
/// tokens (the old system's workers send none), behind the browser rules.
pub fn internal_router(
    platform: &Platform,
    api: &ApiArgs,
    listen: SocketAddr,
) -> anyhow::Result<axum::Router> {
    let allowed = AllowedOrigins::parse(&api.cors_allow_origin)?;
    let service = command_service(platform, api);
    let router = shoal_command_api::rest::task_router(service)
        .route(
            "/health",
            axum::routing::get(|| async { axum::Json(serde_json::json!({"status": "healthy"})) }),
        )
        .fallback(shoal_api::rest::not_found);
    Ok(crate::browser_guard::apply(
        router,
        crate::browser_guard::Guard {
            hosts: crate::browser_guard::AllowedHosts::new(listen, &api.allowed_host),
            origins: allowed,
        },
    ))
}

fn command_service(platform: &Platform, api: &ApiArgs) -> CommandService {
    CommandService::new(
        InstrumentedLog::wrap(platform.log.clone(), "command"),
        api.limits_for(platform),
    )
    .with_queue(platform.queue.clone())
}

pub async fn serve(
    listen: SocketAddr,
    router: axum::Router,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    serve_on(bind(listen).await?, router, shutdown).await
}

/// Listens on `listen` (port 0: a free port the system picks; `local_addr` says which).
pub async fn bind(listen: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))
}

/// Serves `router` on `listener` until `shutdown`.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.wait())
        .await?;
    Ok(())
}

/// `limits` for a platform on SQS (`sqs`) or not.
fn sqs_limits(limits: Limits, sqs: bool) -> Limits {
    if !sqs {
        return limits;
    }
    Limits {
        max_timeout_seconds: limits
            .max_timeout_seconds
            .min(SqsQueue::MAX_TASK_TIMEOUT_SECONDS),
        ..limits
    }
}

#[cfg(test)]
mod sqs_limit_tests {
    use super::*;
    use shoal_domain::Rejection;

    #[test]
    fn on_sqs_a_timeout_beyond_the_twelve_hour_cap_is_refused() {
        let limits = sqs_limits(Limits::default(), true);
        assert_eq!(limits.max_timeout_seconds, 42_900);
        assert_eq!(sqs_limits(Limits::default(), false), Limits::default());
        let rejection = Rejection::TimeoutOutOfRange {
            got: 86_400,
            max: limits.max_timeout_seconds,
        };
        assert_eq!(
            rejection.to_string(),
            "timeout_seconds must be between 1 and 42900, got 86400"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        projector: ProjectorArgs,
    }

    #[tokio::test]
    async fn the_linger_defaults_by_database_and_the_flag_overrides_it() {
        let sqlite = Database::Sqlite(shoal_infra::testing::fresh_sqlite().await);
        let default = Cli::try_parse_from(["shoal"]).unwrap().projector;
        assert_eq!(
            default.config(&sqlite).linger,
            shoal_projector::ProjectorConfig::SQLITE_LINGER
        );
        let off = Cli::try_parse_from(["shoal", "--projector-linger-ms", "0"])
            .unwrap()
            .projector;
        assert_eq!(off.config(&sqlite).linger, Duration::ZERO);
        assert!(Cli::try_parse_from(["shoal", "--projector-linger-ms", "-5"]).is_err());
        if let Some(pool) = shoal_infra::testing::fresh_postgres().await {
            let postgres = Database::Postgres(pool);
            assert_eq!(default.config(&postgres).linger, Duration::ZERO);
            let on = Cli::try_parse_from(["shoal", "--projector-linger-ms", "100"])
                .unwrap()
                .projector;
            assert_eq!(on.config(&postgres).linger, Duration::from_millis(100));
        }
    }

    /// The processes whose workers claim from the SQL queue (`shoal worker`, `shoal dev` with
    /// workers) open their Postgres pool without bitmap scans; the others keep the planner's
    /// default (ADR 26).
    #[tokio::test]
    async fn only_the_processes_that_claim_plan_without_bitmap_scans() {
        let Some(url) = shoal_infra::testing::fresh_postgres_url().await else {
            return;
        };
        let db = DatabaseArgs::new(url);
        let queue = QueueArgs {
            queue: "sql".into(),
        };
        let workers = Platform::connect_for_workers(&db, &queue).await.unwrap();
        let others = Platform::connect(&db, &queue).await.unwrap();
        for (platform, expected) in [(&workers, "off"), (&others, "on")] {
            let Database::Postgres(pool) = &platform.database else {
                unreachable!("a Postgres URL")
            };
            let setting: String = sqlx::query_scalar("SHOW enable_bitmapscan")
                .fetch_one(pool)
                .await
                .unwrap();
            assert_eq!(setting, expected);
        }
    }
}
