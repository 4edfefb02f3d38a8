//! Prometheus metrics with the official client (`prometheus-client`, OpenMetrics text).
//!
//! Two kinds of figures make up a scrape:
//!
//! - **Event-driven** ones (tasks started and ended, durations, log appends, GraphQL requests,
//!   open subscriptions) are counted where they happen, in one process-wide [`Metrics`]
//!   ([`metrics()`]): `shoal dev` runs every role in one process and serves them all on one
//!   `/metrics`.
//! - **State** read at scrape time (queue depth, projector lag, a worker's live counters, the
//!   orchestrator's leadership) comes from [`ScrapeSource`]s that the endpoint of each role
//!   lists; a source that cannot read its state leaves its figures out (and says so in a
//!   `*_up` gauge where a scaler depends on it) rather than report a wrong value.

use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// The content type of [`render`]'s output (OpenMetrics 1.0 text, which Prometheus scrapes).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// One label.
pub type Label = (&'static str, String);

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// The process-wide, event-driven metrics. Cheap to update from any task (atomics).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    tasks_started: Family<[Label; 1], Counter>,
    tasks_completed: Family<[Label; 1], Counter>,
    tasks_failed: Family<[Label; 1], Counter>,
    tasks_retried: Family<[Label; 1], Counter>,
    task_duration: Histograms<[Label; 2]>,
    log_append_duration: Histograms<[Label; 1]>,
    log_append_events: Histograms<[Label; 1]>,
    log_append_errors: Family<[Label; 1], Counter>,
    graphql_request_duration: Histograms<[Label; 2]>,
    subscriptions_open: Gauge,
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

fn seconds_buckets() -> Histogram {
    // 1 ms to ~65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

fn append_seconds_buckets() -> Histogram {
    // 0.25 ms to ~4 s: a commit costs milliseconds.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 15))
}

fn batch_size_buckets() -> Histogram {
    // 1 to 8192 events per append.
    Histogram::new(exponential_buckets(1.0, 2.0, 14))
}

/// The job type as a label value. Job types are chosen by whoever submits, so an unbounded
/// variety of them would grow every family without end: beyond 64 characters, or with
/// characters other than letters, digits, `_`, `-` and `.`, they count as `other`.
pub fn job_type_label(job_type: &str) -> String {
    bounded_label(job_type)
}

fn bounded_label(value: &str) -> String {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        value.to_owned()
    } else {
        "other".to_owned()
    }
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        let metrics = Metrics {
            registry: Registry::default(),
            tasks_started: Family::default(),
            tasks_completed: Family::default(),
            tasks_failed: Family::default(),
            tasks_retried: Family::default(),
            task_duration: Family::new_with_constructor(seconds_buckets),
            log_append_duration: Family::new_with_constructor(append_seconds_buckets),
            log_append_events: Family::new_with_constructor(batch_size_buckets),
            log_append_errors: Family::default(),
            graphql_request_duration: Family::new_with_constructor(seconds_buckets),
            subscriptions_open: Gauge::default(),
        };
        registry.register(
            "shoal_tasks_started",
            "Task attempts started by workers of this process (TaskStarted appended, or a takeover)",
            metrics.tasks_started.clone(),
        );
        registry.register(
            "shoal_tasks_completed",
            "Tasks completed by workers of this process",
            metrics.tasks_completed.clone(),
        );
        registry.register(
            "shoal_tasks_failed",
            "Tasks that failed for good on workers of this process (no attempt left, or not retryable)",
            metrics.tasks_failed.clone(),
        );
        registry.register(
            "shoal_tasks_retried",
            "Task attempts that failed with a retry scheduled",
            metrics.tasks_retried.clone(),
        );
        registry.register_with_unit(
            "shoal_task_duration",
            "How long task handlers ran, by job type and outcome (completed, failed)",
            Unit::Seconds,
            metrics.task_duration.clone(),
        );
        registry.register_with_unit(
            "shoal_eventlog_append_duration",
            "Event-log appends (one commit each) by caller: worker group commits, commands, orchestrator",
            Unit::Seconds,
            metrics.log_append_duration.clone(),
        );
        registry.register(
            "shoal_eventlog_append_events",
            "Events written per event-log commit",
            metrics.log_append_events.clone(),
        );
        registry.register(
            "shoal_eventlog_append_errors",
            "Event-log appends that failed (conflicts included) by caller",
            metrics.log_append_errors.clone(),
        );
        registry.register_with_unit(
            "shoal_graphql_request_duration",
            "GraphQL requests by operation name and type",
            Unit::Seconds,
            metrics.graphql_request_duration.clone(),
        );
        registry.register(
            "shoal_graphql_subscriptions_open",
            "GraphQL subscriptions open now",
            metrics.subscriptions_open.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// A task attempt of `job_type` started.
    pub fn task_started(&self, job_type: &str) {
        self.tasks_started
            .get_or_create(&[("job_type", job_type_label(job_type))])
            .inc();
    }

    /// A task of `job_type` completed after its handler ran for `duration`.
    pub fn task_completed(&self, job_type: &str, duration: Duration) {
        let job_type = job_type_label(job_type);
        self.tasks_completed
            .get_or_create(&[("job_type", job_type.clone())])
            .inc();
        self.task_duration
            .get_or_create(&[("job_type", job_type), ("outcome", "completed".into())])
            .observe(duration.as_secs_f64());
    }

    /// An attempt of `job_type` failed after `duration`; `retried` when another attempt follows.
    pub fn task_failed(&self, job_type: &str, duration: Duration, retried: bool) {
        let job_type = job_type_label(job_type);
        let family = if retried {
            &self.tasks_retried
        } else {
            &self.tasks_failed
        };
        family
            .get_or_create(&[("job_type", job_type.clone())])
            .inc();
        self.task_duration
            .get_or_create(&[("job_type", job_type), ("outcome", "failed".into())])
            .observe(duration.as_secs_f64());
    }

    /// An event-log append by `caller` of `events` events took `duration`; `ok` if it committed.
    pub fn log_append(&self, caller: &'static str, events: usize, duration: Duration, ok: bool) {
        let labels = [("caller", caller.to_owned())];
        self.log_append_duration
            .get_or_create(&labels)
            .observe(duration.as_secs_f64());
        if ok {
            self.log_append_events
                .get_or_create(&labels)
                .observe(events as f64);
        } else {
            self.log_append_errors.get_or_create(&labels).inc();
        }
    }

    /// A GraphQL request ran for `duration`. `operation` is the client's operation name (or
    /// `anonymous`), bounded like job types.
    pub fn graphql_request(&self, operation: Option<&str>, kind: &str, duration: Duration) {
        let operation = operation.map_or_else(|| "anonymous".to_owned(), bounded_label);
        self.graphql_request_duration
            .get_or_create(&[("operation", operation), ("type", kind.to_owned())])
            .observe(duration.as_secs_f64());
    }

    /// A subscription opened; dropping the guard closes it.
    pub fn subscription_opened(&'static self) -> SubscriptionGuard {
        self.subscriptions_open.inc();
        SubscriptionGuard(&self.subscriptions_open)
    }

    /// Tasks of `job_type` started so far (for tests and logs).
    pub fn tasks_started_count(&self, job_type: &str) -> u64 {
        self.tasks_started
            .get_or_create(&[("job_type", job_type_label(job_type))])
            .get()
    }

    /// Tasks of `job_type` completed so far.
    pub fn tasks_completed_count(&self, job_type: &str) -> u64 {
        self.tasks_completed
            .get_or_create(&[("job_type", job_type_label(job_type))])
            .get()
    }
}

/// Keeps [`Metrics`]' open-subscription gauge up while it lives.
#[derive(Debug)]
pub struct SubscriptionGuard(&'static Gauge);

impl Drop for SubscriptionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// State read when `/metrics` is scraped: it registers freshly read metrics into `registry`
/// (which lives for this one scrape). A source that cannot read its state logs why and leaves
/// its figures out.
#[async_trait::async_trait]
pub trait ScrapeSource: Send + Sync + std::fmt::Debug {
    async fn collect(&self, registry: &mut Registry);
}

/// A gauge with a value, for a scrape-time registry.
pub fn gauge(value: i64) -> Gauge {
    let gauge = Gauge::default();
    gauge.set(value);
    gauge
}

/// A gauge with a float value (seconds), for a scrape-time registry.
pub fn gauge_f64(value: f64) -> Gauge<f64, std::sync::atomic::AtomicU64> {
    let gauge = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    gauge.set(value);
    gauge
}

/// A counter with a value read elsewhere (an atomic of a role), for a scrape-time registry.
pub fn counter(value: u64) -> Counter {
    let counter = Counter::default();
    counter.inc_by(value);
    counter
}

/// The content type of the Prometheus text format (0.0.4), served to scrapers that do not ask
/// for OpenMetrics.
pub const TEXT_CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The exposition in the format the scraper's `Accept` header prefers: OpenMetrics when it
/// names `application/openmetrics-text` (as Prometheus does), else the Prometheus text format
/// 0.0.4 (curl, older scrapers). Returns the content type and the body.
pub async fn render_for(
    accept: Option<&str>,
    sources: &[Arc<dyn ScrapeSource>],
) -> (&'static str, String) {
    if accept.is_some_and(|a| a.contains("application/openmetrics-text")) {
        return (CONTENT_TYPE, render(sources).await);
    }
    let scraped = collect(sources).await;
    let mut out = String::new();
    let encoded =
        prometheus_client::encoding::prometheus_text::encode(&mut out, &metrics().registry)
            .and_then(|()| {
                prometheus_client::encoding::prometheus_text::encode(&mut out, &scraped)
            });
    if let Err(error) = encoded {
        let _ = writeln!(out, "# encoding failed: {error}");
    }
    (TEXT_CONTENT_TYPE, out)
}

async fn collect(sources: &[Arc<dyn ScrapeSource>]) -> Registry {
    let mut scraped = Registry::default();
    for source in sources {
        source.collect(&mut scraped).await;
    }
    scraped
}

/// The whole exposition in OpenMetrics text: the process-wide metrics, then each source's.
pub async fn render(sources: &[Arc<dyn ScrapeSource>]) -> String {
    let scraped = collect(sources).await;
    let mut out = String::new();
    let encoded = encode_registry(&mut out, &metrics().registry)
        .and_then(|()| encode_registry(&mut out, &scraped))
        .and_then(|()| encode_eof(&mut out));
    if let Err(error) = encoded {
        // Only a writer error can fail, and a String never does.
        let _ = writeln!(out, "# encoding failed: {error}");
    }
    out
}

/// Only `registry`, in the text format (for tests of one source).
pub fn render_registry(registry: &Registry) -> String {
    let mut out = String::new();
    let _ = encode_registry(&mut out, registry).and_then(|()| encode_eof(&mut out));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_types_outside_the_bounded_alphabet_count_as_other() {
        assert_eq!(job_type_label("cpu_bound"), "cpu_bound");
        assert_eq!(job_type_label("thumbnails-v2.1"), "thumbnails-v2.1");
        assert_eq!(job_type_label(""), "other");
        assert_eq!(job_type_label("a b"), "other");
        assert_eq!(job_type_label(&"x".repeat(65)), "other");
    }

    #[tokio::test]
    async fn counts_appear_in_the_exposition_with_their_labels() {
        let m = metrics();
        m.task_started("metrics_unit_test");
        m.task_completed("metrics_unit_test", Duration::from_millis(5));
        m.log_append("metrics_unit_test", 7, Duration::from_millis(2), true);
        let text = render(&[]).await;
        for line in [
            "# TYPE shoal_tasks_started counter",
            "# TYPE shoal_task_duration_seconds histogram",
            "# TYPE shoal_eventlog_append_events histogram",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert!(text.contains("shoal_tasks_started_total{job_type=\"metrics_unit_test\"} "));
        assert!(text.contains(
            "shoal_task_duration_seconds_count{job_type=\"metrics_unit_test\",outcome=\"completed\"} 1"
        ));
        assert!(
            text.contains("shoal_eventlog_append_events_sum{caller=\"metrics_unit_test\"} 7.0")
        );
        assert!(text.ends_with("# EOF\n"));
        let (content_type, classic) = render_for(None, &[]).await;
        assert!(content_type.starts_with("text/plain; version=0.0.4"));
        assert!(classic.contains("# TYPE shoal_tasks_started_total counter"));
        assert!(!classic.contains("# EOF"));
        let prometheus = "application/openmetrics-text;version=1.0.0,text/plain;q=0.5";
        let (content_type, _) = render_for(Some(prometheus), &[]).await;
        assert_eq!(content_type, CONTENT_TYPE);
    }
}
