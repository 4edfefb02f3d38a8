//! The operator's endpoints of a role: `GET /metrics` (Prometheus: OpenMetrics text when the
//! scraper asks for it, as Prometheus does, else the text format 0.0.4),
//! `GET /health/live` (the process answers) and `GET /health/ready` (it can do its work: the
//! database answers with every migration applied, and for a worker the queue answers). Served
//! on the API port by `shoal serve` and `shoal dev`, and on a small admin port by the worker,
//! the projector and the orchestrator. The original REST API's `/health` is left as it is.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;
use shoal_infra::db::Database;
use shoal_infra::queue::TaskQueue;
use shoal_infra::telemetry::health::{NotReady, database_ready};
use shoal_infra::telemetry::metrics::{self, ScrapeSource};

/// How long `/health/ready` waits for the database and the queue.
pub const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// What the endpoints read.
#[derive(Debug, Clone)]
pub struct Admin {
    database: Database,
    /// Checked by readiness when the role needs the queue (a worker).
    queue: Option<Arc<dyn TaskQueue>>,
    sources: Vec<Arc<dyn ScrapeSource>>,
}

impl Admin {
    /// Readiness on `database`; `/metrics` with the process's metrics only.
    pub fn new(database: Database) -> Self {
        Admin {
            database,
            queue: None,
            sources: Vec::new(),
        }
    }

    /// Readiness also asks `queue` (a worker cannot work without it).
    pub fn needs_queue(mut self, queue: Arc<dyn TaskQueue>) -> Self {
        self.queue = Some(queue);
        self
    }

    /// `/metrics` also shows what `source` reads at each scrape.
    pub fn source(mut self, source: Arc<dyn ScrapeSource>) -> Self {
        self.sources.push(source);
        self
    }

    /// `/metrics`, `/health/live` and `/health/ready`.
    pub fn router(self) -> Router {
        Router::new()
            .route("/metrics", get(scrape))
            .route("/health/live", get(live))
            .route("/health/ready", get(ready))
            .with_state(Arc::new(self))
    }

    /// Ready or not within [`READY_TIMEOUT`]: a probe must get an answer before its own
    /// timeout, even while the pool keeps retrying a database that is gone.
    async fn readiness(&self) -> Result<(), NotReady> {
        let check = async {
            database_ready(&self.database).await?;
            if let Some(queue) = &self.queue {
                queue
                    .depth()
                    .await
                    .map_err(|error| NotReady::Queue(error.to_string()))?;
            }
            Ok(())
        };
        tokio::time::timeout(READY_TIMEOUT, check)
            .await
            .unwrap_or(Err(NotReady::TimedOut(READY_TIMEOUT)))
    }
}

async fn scrape(State(admin): State<Arc<Admin>>, headers: HeaderMap) -> impl IntoResponse {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let (content_type, body) = metrics::render_for(accept, &admin.sources).await;
    (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body)
}

async fn live() -> impl IntoResponse {
    axum::Json(json!({ "status": "ok" }))
}

async fn ready(State(admin): State<Arc<Admin>>) -> impl IntoResponse {
    match admin.readiness().await {
        Ok(()) => (StatusCode::OK, axum::Json(json!({ "status": "ready" }))),
        Err(error) => {
            tracing::warn!(%error, "not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({ "status": "not ready", "reason": error.to_string() })),
            )
        }
    }
}

/// Serves `admin` at `listen` until `shutdown`, in the background. A port that cannot be
/// bound (another role on the host has it) is logged, not fatal: the role's work matters more
/// than its endpoints.
pub fn spawn(
    listen: std::net::SocketAddr,
    admin: Admin,
    shutdown: crate::roles::Shutdown,
) -> tokio::task::JoinHandle<()> {
    tracing::info!("metrics and health at http://{listen}/metrics, /health/live, /health/ready");
    tokio::spawn(async move {
        if let Err(error) = crate::roles::serve(listen, admin.router(), shutdown).await {
            tracing::warn!("no metrics or health endpoints at {listen}: {error:#}");
        }
    })
}
