//! The orchestrator's metrics for Prometheus (with `prometheus-client`; see
//! `shoal_infra::telemetry::metrics`), for scraping and for autoscaling workers on the queue
//! depth (KEDA's `prometheus` scaler on `shoal_queue_messages`; see `docs/sqs.md`).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use shoal_infra::queue::QueueDepth;
use shoal_infra::telemetry::metrics::{self, ScrapeSource, counter, gauge};
use shoal_infra::telemetry::prometheus_client::registry::Registry;
use shoal_infra::telemetry::queue::{QueueSource, register_queue};

use super::OrchestratorMetrics;

/// The content type of the exposition in OpenMetrics text (what Prometheus asks for; others get
/// the text format 0.0.4).
pub const CONTENT_TYPE: &str = metrics::CONTENT_TYPE;

/// The orchestrator's own figures at scrape time (leadership, events folded, messages
/// relayed, tasks created, jobs ended).
#[derive(Debug, Clone)]
pub struct OrchestratorSource(pub OrchestratorMetrics);

#[async_trait::async_trait]
impl ScrapeSource for OrchestratorSource {
    async fn collect(&self, registry: &mut Registry) {
        register_orchestrator(registry, &self.0);
    }
}

/// What `/metrics` of an orchestrator shows: its figures and the queue's.
pub fn sources(metrics: &OrchestratorMetrics) -> Vec<Arc<dyn ScrapeSource>> {
    vec![
        Arc::new(QueueSource::new(metrics.queue.clone())),
        Arc::new(OrchestratorSource(metrics.clone())),
    ]
}

/// `GET /metrics` with the process's metrics, the queue's and the orchestrator's.
pub fn router(metrics: OrchestratorMetrics) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(Arc::new(sources(&metrics)))
}

async fn scrape(
    State(sources): State<Arc<Vec<Arc<dyn ScrapeSource>>>>,
    headers: HeaderMap,
) -> impl IntoResponse {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let (content_type, body) = metrics::render_for(accept, &sources).await;
    (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body)
}

fn register_orchestrator(registry: &mut Registry, metrics: &OrchestratorMetrics) {
    registry.register(
        "shoal_orchestrator_leader",
        "Whether this orchestrator leads now",
        gauge(i64::from(metrics.is_leader())),
    );
    let counters = [
        (
            "shoal_orchestrator_events_processed",
            "Log events folded by this orchestrator",
            metrics.events_processed(),
        ),
        (
            "shoal_orchestrator_messages_relayed",
            "Messages handed to the task queue (resends included)",
            metrics.messages_relayed(),
        ),
        (
            "shoal_orchestrator_tasks_created",
            "Tasks created by expansion",
            metrics.tasks_created(),
        ),
        (
            "shoal_orchestrator_jobs_completed",
            "Jobs this orchestrator completed",
            metrics.jobs_completed(),
        ),
        (
            "shoal_orchestrator_jobs_failed",
            "Jobs this orchestrator failed",
            metrics.jobs_failed(),
        ),
        (
            "shoal_orchestrator_reconcile_passes",
            "Passes of the reconciler over waiting and running tasks",
            metrics.reconcile_passes(),
        ),
        (
            "shoal_orchestrator_tasks_requeued",
            "Tasks the reconciler sent again because their message was lost (TaskRequeued)",
            metrics.tasks_requeued(),
        ),
        (
            "shoal_orchestrator_tasks_timed_out",
            "Running attempts the reconciler timed out past their deadline (TaskFailed)",
            metrics.tasks_timed_out(),
        ),
    ];
    for (name, help, value) in counters {
        registry.register(name, help, counter(value));
    }
}

/// The orchestrator's figures and the given queue depth alone, as text. Without a depth (the
/// queue could not be read), `shoal_queue_up` is 0 and the queue gauges are left out, so a
/// scaler sees no value rather than a wrong one.
pub fn render(metrics: &OrchestratorMetrics, depth: Option<QueueDepth>) -> String {
    let mut registry = Registry::default();
    register_queue(&mut registry, depth, None);
    register_orchestrator(&mut registry, metrics);
    metrics::render_registry(&registry)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use shoal_infra::db::Database;
    use shoal_infra::queue::{SqlQueue, TaskQueue};

    use super::*;
    use crate::orchestrator::{Orchestrator, OrchestratorConfig};

    #[tokio::test]
    async fn renders_the_queue_depth_in_the_text_format() {
        let db = Database::Sqlite(shoal_infra::testing::fresh_sqlite().await);
        let queue: Arc<dyn TaskQueue> = Arc::new(SqlQueue::for_database(&db));
        let orchestrator =
            Orchestrator::new(OrchestratorConfig::default(), db.event_log(), queue, db)
                .expect("valid configuration");
        let depth = QueueDepth {
            visible: 3,
            in_flight: 2,
            delayed: 1,
            dead_lettered: 4,
        };
        let text = render(&orchestrator.metrics(), Some(depth));
        for line in [
            "# TYPE shoal_queue_depth gauge",
            "shoal_queue_depth{state=\"visible\"} 3",
            "shoal_queue_depth{state=\"in_flight\"} 2",
            "shoal_queue_depth{state=\"delayed\"} 1",
            "shoal_queue_depth{state=\"dead_lettered\"} 4",
            "shoal_queue_messages 5",
            "shoal_queue_up 1",
            "shoal_orchestrator_leader 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
        let down = render(&orchestrator.metrics(), None);
        assert!(down.contains("shoal_queue_up 0"));
        assert!(!down.contains("shoal_queue_messages "));
    }

    #[tokio::test]
    async fn a_scrape_reads_the_queue_and_the_oldest_message() {
        let db = Database::Sqlite(shoal_infra::testing::fresh_sqlite().await);
        let queue: Arc<dyn TaskQueue> = Arc::new(SqlQueue::for_database(&db));
        let orchestrator =
            Orchestrator::new(OrchestratorConfig::default(), db.event_log(), queue, db)
                .expect("valid configuration");
        let text = metrics::render(&sources(&orchestrator.metrics())).await;
        for line in [
            "shoal_queue_up 1",
            "shoal_queue_messages 0",
            "shoal_queue_oldest_message_age_seconds 0.0",
            "shoal_orchestrator_events_processed_total 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
    }
}
