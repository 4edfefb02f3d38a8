//! The task queue's state at scrape time: its depth (the workers' autoscaling metric) and how
//! long the oldest deliverable message has waited.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use super::metrics::{ScrapeSource, gauge, gauge_f64};
use crate::queue::{QueueDepth, TaskQueue};

/// Registers the queue's figures. Without a depth (the queue could not be read),
/// `shoal_queue_up` is 0 and the depth gauges are left out, so a scaler sees no value rather
/// than a wrong one.
pub fn register_queue(
    registry: &mut Registry,
    depth: Option<QueueDepth>,
    oldest: Option<Duration>,
) {
    registry.register(
        "shoal_queue_up",
        "Whether the task queue's depth could be read (1) or not (0)",
        gauge(i64::from(depth.is_some())),
    );
    if let Some(depth) = depth {
        let by_state = Family::<[(&'static str, &'static str); 1], Gauge>::default();
        let as_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        for (state, n) in [
            ("visible", depth.visible),
            ("in_flight", depth.in_flight),
            ("delayed", depth.delayed),
            ("dead_lettered", depth.dead_lettered),
        ] {
            by_state.get_or_create(&[("state", state)]).set(as_i64(n));
        }
        registry.register(
            "shoal_queue_depth",
            "Messages in the task queue by state (approximate on SQS)",
            by_state,
        );
        registry.register(
            "shoal_queue_messages",
            "Messages waiting or being worked on (visible + in flight): scale workers on this",
            gauge(as_i64(depth.visible + depth.in_flight)),
        );
    }
    if let Some(oldest) = oldest {
        registry.register_with_unit(
            "shoal_queue_oldest_message_age",
            "How long the oldest deliverable message has waited to be received (SQL queue)",
            Unit::Seconds,
            gauge_f64(oldest.as_secs_f64()),
        );
    }
}

/// The queue's depth and oldest message, read at each scrape.
#[derive(Debug, Clone)]
pub struct QueueSource {
    queue: Arc<dyn TaskQueue>,
}

impl QueueSource {
    pub fn new(queue: Arc<dyn TaskQueue>) -> Self {
        QueueSource { queue }
    }
}

#[async_trait::async_trait]
impl ScrapeSource for QueueSource {
    async fn collect(&self, registry: &mut Registry) {
        let depth = match self.queue.depth().await {
            Ok(depth) => Some(depth),
            Err(error) => {
                tracing::warn!(%error, "cannot read the queue depth for /metrics");
                None
            }
        };
        let oldest = match self.queue.oldest_message_age().await {
            Ok(oldest) => oldest,
            Err(error) => {
                tracing::warn!(%error, "cannot read the queue's oldest message for /metrics");
                None
            }
        };
        register_queue(registry, depth, oldest);
    }
}
