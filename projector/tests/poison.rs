//! No single event stops a projection (ADR 0012): an event whose effect the database refuses
//! is parked, every other event is applied, and the parked count shows in the status. SQLite
//! always, Postgres when `SHOAL_TEST_DATABASE_URL` is set.

// Integration tests: helpers outside `#[test]` functions unwrap too; a failure fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use serde_json::json;
use shoal_domain::events::{JobSubmitted, TaskCompleted, TaskEnqueued, TaskStarted, TasksCreated};
use shoal_domain::{Event, JobId, JobStatus, Split, TaskId};
use shoal_projector::{ProjectionName, Projector, ProjectorConfig};
use support::{Backend, append};

fn projector(backend: &Backend, batch_size: usize) -> Projector {
    Projector::new(
        ProjectorConfig {
            batch_size,
            error_backoff: Duration::from_millis(20),
            ..ProjectorConfig::default()
        },
        backend.log.clone(),
        backend.database.clone(),
    )
}

/// A job of 4 tasks; task 1 reports an absurd processing time (what `processing_time_seconds:
/// 1e300` became before the REST API bounded it: `u64::MAX` ms). Its running total used to
/// overflow Postgres' bigint ("bigint out of range") and stop the analytics projection for
/// good, batch after batch, and a rebuild too.
fn log_with_an_absurd_duration(job_id: JobId) -> Vec<Event> {
    let t0 = Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap();
    let at = |s: i64| t0 + chrono::Duration::seconds(s);
    let mut log = vec![
        Event::JobSubmitted(JobSubmitted {
            job_id,
            job_type: "noop".into(),
            split: Split::Total { total_tasks: 4 },
            parameters: serde_json::Map::new(),
            max_attempts: 1,
            timeout_seconds: 60,
            total_tasks: 4,
            submitted_at: at(0),
            fallback_handler: None,
            priority: 0,
        }),
        Event::TasksCreated(TasksCreated {
            job_id,
            from_index: 0,
            to_index: 4,
            at: at(1),
        }),
    ];
    for index in 0..4 {
        log.push(Event::TaskEnqueued(TaskEnqueued {
            job_id,
            task_id: TaskId::for_task(job_id, index),
            index,
            job_type: "noop".into(),
            input: json!({}),
            attempt: 1,
            max_attempts: 1,
            timeout_seconds: 60,
            at: at(1),
            fallback_handler: None,
        }));
    }
    for (index, duration_ms) in [(0, 100), (1, u64::MAX), (2, 300), (3, 400)] {
        let task_id = TaskId::for_task(job_id, index);
        log.push(Event::TaskStarted(TaskStarted {
            job_id,
            task_id,
            index,
            attempt: 1,
            worker: "w".into(),
            at: at(2),
        }));
        log.push(Event::TaskCompleted(TaskCompleted {
            job_id,
            task_id,
            index,
            attempt: 1,
            result: None,
            duration_ms,
            at: at(3),
        }));
    }
    log
}

async fn an_event_the_database_refuses_is_parked(backend: Backend) {
    let job_id = JobId::new();
    let mut versions = HashMap::new();
    for event in log_with_an_absurd_duration(job_id) {
        append(
            backend.log.as_ref(),
            &mut versions,
            std::slice::from_ref(&event),
        )
        .await;
    }
    backend.settle().await;
    // Small batches, so that task 0's time is stored before the absurd one is added to it.
    let projector = projector(&backend, 3);
    projector
        .catch_up()
        .await
        .expect("catch up goes past the event");
    let statuses = projector.status().await.unwrap();
    for status in &statuses {
        assert_eq!(status.checkpoint, status.head, "{status:?}");
    }
    let parked = |name| {
        statuses
            .iter()
            .find(|s| s.name == name)
            .unwrap()
            .parked_events
    };
    assert_eq!(parked(ProjectionName::Jobs), 0);

    // The jobs projection has every task; it stores each task's own time, nothing summed.
    let store = backend.store();
    let job = store.get_job(job_id).await.unwrap().unwrap();
    assert_eq!(job.progress.completed, 4);
    assert_eq!(job.status, JobStatus::Running);

    if backend.is_postgres() {
        // Postgres refuses the sum: that one event is parked, the three others counted.
        assert_eq!(parked(ProjectionName::Analytics), 1);
        let analytics = statuses
            .iter()
            .find(|s| s.name == ProjectionName::Analytics)
            .unwrap();
        assert!(analytics.last_parked.is_some());
        let overview = store.overview().await.unwrap();
        assert_eq!(overview.completed_tasks, 3);
        let stats = store.processing_time().await.unwrap();
        assert_eq!(stats.count, 3);
        assert_eq!(stats.max_seconds, Some(0.4));
    }

    // Later events still flow, and a rebuild parks the same events and finishes.
    projector
        .rebuild(ProjectionName::Analytics, |_| {})
        .await
        .expect("a rebuild goes past the event too");
    let again = projector.status().await.unwrap();
    assert_eq!(
        again
            .iter()
            .find(|s| s.name == ProjectionName::Analytics)
            .unwrap()
            .parked_events,
        parked(ProjectionName::Analytics),
        "parking again keeps one record per event"
    );
}

#[tokio::test]
async fn an_event_the_database_refuses_is_parked_sqlite() {
    an_event_the_database_refuses_is_parked(Backend::sqlite().await).await;
}

#[tokio::test]
async fn an_event_the_database_refuses_is_parked_postgres() {
    if let Some(backend) = Backend::postgres().await {
        an_event_the_database_refuses_is_parked(backend).await;
    }
}

/// `Projector::run` (what `shoal projector run` does) goes past it too, without a restart.
#[tokio::test]
async fn the_running_projector_goes_past_a_refused_event() {
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    let job_id = JobId::new();
    let mut versions = HashMap::new();
    for event in log_with_an_absurd_duration(job_id) {
        append(
            backend.log.as_ref(),
            &mut versions,
            std::slice::from_ref(&event),
        )
        .await;
    }
    backend.settle().await;
    let projector = projector(&backend, 3);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn({
        let projector = projector.clone();
        async move {
            projector
                .run(async {
                    let _ = stopped.await;
                })
                .await
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let statuses = projector.status().await.unwrap();
        if statuses.iter().all(|s| s.checkpoint == s.head) {
            assert_eq!(statuses.iter().map(|s| s.parked_events).sum::<u64>(), 1);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the projector is stuck: {statuses:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop.send(());
    running.await.unwrap().unwrap();
}
