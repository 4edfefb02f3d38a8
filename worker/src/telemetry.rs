//! What a worker shows an operator: its live counters ([`WorkerMetrics`]) as Prometheus
//! metrics at scrape time ([`WorkerSource`]), and each task's span in the job's trace
//! ([`follow_trace`]). The per-job-type task counters and durations are counted where tasks
//! start and end (`runtime/delivery.rs`) into the process's metrics.

use std::sync::Arc;

use shoal_infra::queue::TaskMessage;
use shoal_infra::telemetry::metrics::{ScrapeSource, counter, gauge};
use shoal_infra::telemetry::prometheus_client::registry::Registry;
use shoal_infra::telemetry::trace;

use crate::metrics::WorkerMetrics;

/// Makes a task's span a child of the enqueue that sent its message, and links a retry to the
/// attempt before it.
pub fn follow_trace(span: &tracing::Span, message: &TaskMessage) {
    if !trace::enabled() {
        // No OpenTelemetry layer here: nothing would carry the context.
        return;
    }
    trace::set_parent(span, message.traceparent.as_deref());
    trace::add_link(span, message.previous_attempt_traceparent.as_deref());
}

/// A worker's counters at scrape time, as `shoal_worker_*` metrics.
#[derive(Debug, Clone)]
pub struct WorkerSource {
    metrics: Arc<WorkerMetrics>,
}

impl WorkerSource {
    /// The counters of the worker whose [`crate::Worker::metrics`] these are.
    pub fn new(metrics: Arc<WorkerMetrics>) -> Self {
        WorkerSource { metrics }
    }
}

#[async_trait::async_trait]
impl ScrapeSource for WorkerSource {
    async fn collect(&self, registry: &mut Registry) {
        let s = self.metrics.snapshot();
        let counters: [(&str, &str, u64); 13] = [
            (
                "shoal_worker_messages_received",
                "Messages received (poison ones included)",
                s.received,
            ),
            (
                "shoal_worker_tasks_completed",
                "Tasks this worker completed",
                s.completed,
            ),
            (
                "shoal_worker_tasks_failed",
                "Tasks that failed for good here",
                s.failed,
            ),
            (
                "shoal_worker_tasks_retried",
                "Attempts that failed here with a retry scheduled",
                s.retried,
            ),
            (
                "shoal_worker_skipped_duplicates",
                "Deliveries skipped because the log showed them handled already",
                s.skipped_duplicates,
            ),
            (
                "shoal_worker_skipped_cancelled",
                "Deliveries skipped because their job was cancelled",
                s.skipped_cancelled,
            ),
            (
                "shoal_worker_dead_lettered",
                "Messages this worker moved to the dead-letter queue",
                s.dead_lettered,
            ),
            (
                "shoal_worker_poison_messages",
                "Messages that could not be parsed",
                s.poison,
            ),
            (
                "shoal_worker_messages_released",
                "Messages released back to the queue",
                s.released,
            ),
            (
                "shoal_worker_taken_over",
                "Attempts taken over from a worker presumed dead",
                s.taken_over,
            ),
            (
                "shoal_worker_timed_out",
                "Attempts that ran out of time",
                s.timed_out,
            ),
            (
                "shoal_worker_group_commits",
                "Group commits made",
                s.commits,
            ),
            (
                "shoal_worker_committed_appends",
                "Task appends carried by those group commits",
                s.committed_batches,
            ),
        ];
        for (name, help, value) in counters {
            registry.register(name, help, counter(value));
        }
        registry.register(
            "shoal_worker_tasks_in_flight",
            "Messages held right now: buffered, running, or being recorded",
            gauge(i64::try_from(s.in_flight).unwrap_or(i64::MAX)),
        );
        registry.register(
            "shoal_worker_held_bytes",
            "Bytes of the message bodies held right now (--prefetch-bytes bounds them beyond the slots)",
            gauge(i64::try_from(s.held_bytes).unwrap_or(i64::MAX)),
        );
        registry.register(
            "shoal_worker_handlers_running",
            "Handlers running right now (at most the concurrency)",
            gauge(i64::try_from(s.running).unwrap_or(i64::MAX)),
        );
    }
}
