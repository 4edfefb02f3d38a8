//! Trace propagation across a real queue: a job submitted under a span is expanded under a
//! child span (the enqueue), and each task's worker span is a child of that enqueue, in the
//! same trace, with the context carried by the queue message; a retry's span is linked to the
//! attempt before it. Spans are exported to OpenTelemetry's in-memory exporter.
//!
//! The subscriber is process-wide (roles run on many threads), so this file holds one test
//! per backend, run one after the other.

// Integration tests: helpers outside `#[test]` functions unwrap too; a failure fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde_json::json;
use shoal::roles::{self, DatabaseArgs, OrchestratorArgs, Platform, QueueArgs, WorkerArgs};
use shoal_command_api::commands::{CommandService, SubmitJobInput};
use shoal_domain::{Limits, Split};
use tokio::sync::{Mutex, watch};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

struct Tracing {
    exporter: InMemorySpanExporter,
    provider: SdkTracerProvider,
}

/// The process's OpenTelemetry layer, installed once.
fn tracing() -> &'static Tracing {
    static TRACING: OnceLock<Tracing> = OnceLock::new();
    TRACING.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("shoal-test"));
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
            .expect("the only subscriber of this test binary");
        shoal_infra::telemetry::trace::set_enabled(true);
        Tracing { exporter, provider }
    })
}

/// One test at a time: they share the exporter.
static SERIAL: Mutex<()> = Mutex::const_new(());

fn spans_of_trace(trace_id: TraceId) -> Vec<SpanData> {
    let tracing = tracing();
    let _ = tracing.provider.force_flush();
    tracing
        .exporter
        .get_finished_spans()
        .expect("finished spans")
        .into_iter()
        .filter(|s| s.span_context.trace_id() == trace_id)
        .collect()
}

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

async fn a_task_span_is_a_child_of_its_enqueue(url: &str) {
    let platform = Platform::connect(
        &DatabaseArgs {
            database_url: url.to_owned(),
            database_max_connections: 10,
            database_statement_timeout_seconds: 60,
        },
        &QueueArgs {
            queue: "sql".to_owned(),
        },
    )
    .await
    .expect("the platform");
    propagation(platform, url).await;
}

support::for_each_backend!(a_task_span_is_a_child_of_its_enqueue);

/// The same across SQS (moto): the context rides in the message body through SQS.
#[tokio::test]
async fn a_task_span_is_a_child_of_its_enqueue_across_sqs() {
    let Some(queue) = shoal_infra::testing::fresh_sqs_queue("trace-propagation", 3).await else {
        return;
    };
    let url = support::database_url(support::Backend::Sqlite)
        .await
        .unwrap();
    let database = shoal_infra::db::migrate(&url).await.expect("a database");
    let platform = Platform {
        log: database.event_log(),
        database,
        queue: std::sync::Arc::new(queue),
        // Not announced as SQS: the worker keeps its short test polls instead of 20 s ones.
        sqs: None,
    };
    propagation(platform, &url).await;
}

async fn propagation(platform: Platform, url: &str) {
    let _serial = SERIAL.lock().await;
    tracing();
    let (stop, stopped) = watch::channel(false);
    let shutdown = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    let orchestrator =
        roles::orchestrator(&platform, &OrchestratorArgs::default()).expect("an orchestrator");
    let orchestrating = tokio::spawn(orchestrator.run(shutdown()));
    let worker_args = WorkerArgs {
        visibility_timeout_seconds: 30,
        grace_period_seconds: 5,
        prefetch: None,
        prefetch_bytes: shoal_worker::DEFAULT_PREFETCH_BYTES,
        http_handler_url: None,
        http_handler_max_response_bytes: roles::DEFAULT_HTTP_MAX_RESPONSE_BYTES,
        exec: vec!["fail=false".to_owned()],
        exec_env: None,
        exec_dir: None,
        worker_id: Some("trace-test-worker".to_owned()),
        max_result_bytes: roles::DEFAULT_MAX_RESULT_BYTES,
        cpu_slots: None,
        heartbeat_seconds: 5.0,
    };
    let mut config = worker_args.config(4).expect("a worker configuration");
    config.retry_base = Duration::from_millis(100);
    config.retry_max = Duration::from_millis(200);
    let working = tokio::spawn(roles::worker(&platform, config).run(shutdown()));

    let service = CommandService::new(platform.log.clone(), Limits::default())
        .with_queue(platform.queue.clone());
    let submit = |job_type: &str, parameters, max_attempts| {
        let input = SubmitJobInput {
            job_type: job_type.to_owned(),
            split: Split::Total { total_tasks: 3 },
            parameters,
            max_attempts: Some(max_attempts),
            timeout_seconds: None,
            idempotency_key: None,
            fallback_handler: None,
            priority: None,
        };
        let span = tracing::info_span!("submit_job");
        let trace_id = {
            use tracing_opentelemetry::OpenTelemetrySpanExt;
            opentelemetry::trace::TraceContextExt::span(&span.context())
                .span_context()
                .trace_id()
        };
        let service = service.clone();
        async move {
            let submitted = service.submit_job(input).instrument(span).await;
            (submitted.expect("submitted").job.job_id, trace_id)
        }
    };
    let (ok_job, ok_trace) = submit("noop", json!({}), 3).await;
    let (failing_job, failing_trace) = submit("exec", json!({ "command": "fail" }), 2).await;

    for job in [ok_job, failing_job] {
        support::wait_until("the job ended", Duration::from_secs(60), || async move {
            let events = support::job_events(url, job).await;
            events
                .iter()
                .any(|e| e == "JobCompleted" || e == "JobFailed")
        })
        .await;
    }
    let _ = stop.send(true);
    orchestrating.await.unwrap().expect("the orchestrator ran");
    working.await.unwrap().expect("the worker ran");
    platform.database.close().await;

    // The job that completes: submit -> expand (the enqueue) -> one span per task.
    let spans = spans_of_trace(ok_trace);
    let by_name =
        |name: &str| -> Vec<&SpanData> { spans.iter().filter(|s| s.name == name).collect() };
    let submit = by_name("command.submit_job");
    assert_eq!(submit.len(), 1, "one submission span: {spans:#?}");
    assert_eq!(
        by_name("submit_job").len(),
        1,
        "the caller's span is the root"
    );
    let expands = by_name("orchestrator.expand");
    assert!(!expands.is_empty(), "an expansion in the job's trace");
    for expand in &expands {
        assert_eq!(expand.parent_span_id, submit[0].span_context.span_id());
    }
    let expand_ids: Vec<SpanId> = expands.iter().map(|s| s.span_context.span_id()).collect();
    let tasks = by_name("task");
    assert_eq!(tasks.len(), 3, "a span per task in the job's trace");
    for task in &tasks {
        assert!(
            expand_ids.contains(&task.parent_span_id),
            "a task span is a child of the enqueue: {task:#?}"
        );
        assert_eq!(attribute(task, "job_id"), Some(ok_job.to_string()));
        assert_eq!(
            attribute(task, "worker_id").as_deref(),
            Some("trace-test-worker")
        );
    }

    // The job whose tasks fail: the second attempt of each task is a child of the enqueue too,
    // and linked to the first.
    let spans = spans_of_trace(failing_trace);
    let tasks: Vec<&SpanData> = spans.iter().filter(|s| s.name == "task").collect();
    assert_eq!(tasks.len(), 6, "two attempts of three tasks: {tasks:#?}");
    let mut by_task: HashMap<String, Vec<&SpanData>> = HashMap::new();
    for task in &tasks {
        by_task
            .entry(attribute(task, "task_id").expect("a task id"))
            .or_default()
            .push(task);
    }
    assert_eq!(by_task.len(), 3);
    for attempts in by_task.values() {
        let first = attempts
            .iter()
            .find(|s| attribute(s, "attempt").as_deref() == Some("1"))
            .expect("a first attempt");
        let second = attempts
            .iter()
            .find(|s| attribute(s, "attempt").as_deref() == Some("2"))
            .expect("a second attempt");
        assert_eq!(first.parent_span_id, second.parent_span_id);
        assert!(first.links.is_empty());
        assert_eq!(
            second.links.len(),
            1,
            "a retry links to the attempt before it"
        );
        assert_eq!(
            second.links[0].span_context.span_id(),
            first.span_context.span_id()
        );
    }
    assert_ne!(failing_job, ok_job);
}
