//! The orchestrator's metrics in the Prometheus text format (version 0.0.4), for scraping and
//! for autoscaling workers on the queue depth (KEDA's `prometheus` scaler on
//! `shoal_queue_messages`; see `docs/sqs.md`).

use std::fmt::Write;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use shoal_infra::queue::QueueDepth;

use super::OrchestratorMetrics;

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `GET /metrics`.
pub fn router(metrics: OrchestratorMetrics) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(metrics)
}

async fn scrape(State(metrics): State<OrchestratorMetrics>) -> impl IntoResponse {
    let depth = match metrics.queue_depth().await {
        Ok(depth) => Some(depth),
        Err(error) => {
            tracing::warn!(%error, "cannot read the queue depth for /metrics");
            None
        }
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        render(&metrics, depth),
    )
}

/// The metrics as text. Without a depth (the queue could not be read), `shoal_queue_up` is 0
/// and the queue gauges are left out, so a scaler sees no value rather than a wrong one.
pub fn render(metrics: &OrchestratorMetrics, depth: Option<QueueDepth>) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    metric(
        "shoal_queue_up",
        "gauge",
        "Whether the task queue's depth could be read (1) or not (0).",
        &[("", u64::from(depth.is_some()))],
    );
    if let Some(depth) = depth {
        metric(
            "shoal_queue_depth",
            "gauge",
            "Messages in the task queue by state (approximate on SQS).",
            &[
                ("{state=\"visible\"}", depth.visible),
                ("{state=\"in_flight\"}", depth.in_flight),
                ("{state=\"delayed\"}", depth.delayed),
                ("{state=\"dead_lettered\"}", depth.dead_lettered),
            ],
        );
        metric(
            "shoal_queue_messages",
            "gauge",
            "Messages waiting or being worked on (visible + in flight): scale workers on this.",
            &[("", depth.visible + depth.in_flight)],
        );
    }
    metric(
        "shoal_orchestrator_leader",
        "gauge",
        "Whether this orchestrator leads now.",
        &[("", u64::from(metrics.is_leader()))],
    );
    metric(
        "shoal_orchestrator_events_processed_total",
        "counter",
        "Log events folded by this orchestrator.",
        &[("", metrics.events_processed())],
    );
    metric(
        "shoal_orchestrator_messages_relayed_total",
        "counter",
        "Messages handed to the task queue (resends included).",
        &[("", metrics.messages_relayed())],
    );
    metric(
        "shoal_orchestrator_tasks_created_total",
        "counter",
        "Tasks created by expansion.",
        &[("", metrics.tasks_created())],
    );
    metric(
        "shoal_orchestrator_jobs_completed_total",
        "counter",
        "Jobs this orchestrator completed.",
        &[("", metrics.jobs_completed())],
    );
    metric(
        "shoal_orchestrator_jobs_failed_total",
        "counter",
        "Jobs this orchestrator failed.",
        &[("", metrics.jobs_failed())],
    );
    out
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
}
