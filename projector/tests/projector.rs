//! The projector against real databases: SQLite always, Postgres when
//! `SHOAL_TEST_DATABASE_URL` is set (required with `SHOAL_REQUIRE_POSTGRES=1`).
//!
//! The reference for every table is the pure fold of the whole log in one batch, in memory
//! ([`support::expected_dump`]); the databases must hold exactly that, however the log was cut
//! into batches, interrupted or rebuilt.

// Integration tests: helpers outside `#[test]` functions unwrap too; a failure fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use proptest::prelude::*;
use serde_json::json;
use shoal_domain::events::{
    JobCompleted, JobSubmitted, TaskCompleted, TaskEnqueued, TaskFailed, TaskStarted, TasksCreated,
};
use shoal_domain::{Event, JobId, JobStatus, Split, TaskId, TaskStatus};
use shoal_infra::eventlog::{LogPosition, RecordedEvent};
use shoal_infra::readmodel::{JobCursor, JobFilter, JobSort, Target};
use shoal_projector::{ProjectionName, Projector, ProjectorConfig};
use support::{Backend, Op, append, dump, expected_dump, write_log};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

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

fn ops(max: usize) -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec((any::<u8>(), any::<u8>(), any::<u8>()), 1..max)
}

// ---------------------------------------------------------------------------------------------
// Any split into batches gives the same tables.

/// Applies the whole log to projection `name` through the projectors (taking turns, as
/// processes sharing a database may), cut at `cuts` (batch lengths, cycled), and checks that the
/// checkpoint ends at the log's head.
async fn apply_in_batches(
    backend: &Backend,
    projectors: &[&Projector],
    recorded: &[RecordedEvent],
    name: ProjectionName,
    cuts: &[usize],
) {
    let mut from = LogPosition::START;
    let mut rest = recorded;
    for (len, projector) in cuts.iter().cycle().zip(projectors.iter().cycle()) {
        if rest.is_empty() {
            break;
        }
        let (batch, tail) = rest.split_at((*len).clamp(1, rest.len()));
        let change = projector
            .apply_batch(name, from, batch)
            .await
            .expect("apply");
        from = change.position;
        rest = tail;
    }
    assert_eq!(
        backend
            .store()
            .checkpoint(name, Target::Live)
            .await
            .unwrap(),
        recorded
            .last()
            .map_or(LogPosition::START, |e| e.log_position)
    );
}

/// Applies the whole log cut at `cuts` (batch lengths, cycled) for each projection and checks
/// the tables against the one-batch fold.
async fn split_gives_the_same_tables(backend: Backend, ops: Vec<Op>, cuts: [Vec<usize>; 2]) {
    let events = write_log(backend.log.as_ref(), &ops).await;
    let recorded = backend.read_everything().await;
    assert_eq!(recorded.len(), events.len());
    let projector = projector(&backend, 1000);
    for (name, cuts) in ProjectionName::ALL.into_iter().zip(cuts) {
        apply_in_batches(&backend, &[&projector], &recorded, name, &cuts).await;
    }
    support::assert_dumps_eq(&dump(&backend.store()).await, &expected_dump(&events));
}

/// The same with two projectors taking turns: what one keeps in memory between its batches
/// (the rows of running tasks) is stale once the other has written, and must not be used.
async fn two_projectors_give_the_same_tables(backend: Backend, ops: Vec<Op>, cuts: Vec<usize>) {
    let events = write_log(backend.log.as_ref(), &ops).await;
    let recorded = backend.read_everything().await;
    let (one, two) = (projector(&backend, 1000), projector(&backend, 1000));
    for name in ProjectionName::ALL {
        apply_in_batches(&backend, &[&one, &one, &two], &recorded, name, &cuts).await;
    }
    support::assert_dumps_eq(&dump(&backend.store()).await, &expected_dump(&events));
}

fn cuts() -> impl Strategy<Value = [Vec<usize>; 2]> {
    let one = || prop::collection::vec(1usize..12, 1..8);
    [one(), one()]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn any_split_gives_the_same_tables_sqlite(ops in ops(80), cuts in cuts()) {
        runtime().block_on(async {
            split_gives_the_same_tables(Backend::sqlite().await, ops, cuts).await;
        });
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 5, ..ProptestConfig::default() })]

    #[test]
    fn any_split_gives_the_same_tables_postgres(ops in ops(80), cuts in cuts()) {
        runtime().block_on(async {
            if let Some(backend) = Backend::postgres().await {
                split_gives_the_same_tables(backend, ops, cuts).await;
            }
        });
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn projectors_taking_turns_give_the_same_tables_sqlite(
        ops in ops(80),
        cuts in prop::collection::vec(1usize..6, 1..6),
    ) {
        runtime().block_on(async {
            two_projectors_give_the_same_tables(Backend::sqlite().await, ops, cuts).await;
        });
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 5, ..ProptestConfig::default() })]

    #[test]
    fn projectors_taking_turns_give_the_same_tables_postgres(
        ops in ops(80),
        cuts in prop::collection::vec(1usize..6, 1..6),
    ) {
        runtime().block_on(async {
            if let Some(backend) = Backend::postgres().await {
                two_projectors_give_the_same_tables(backend, ops, cuts).await;
            }
        });
    }
}

// ---------------------------------------------------------------------------------------------
// The projection is the domain's fold: whatever the batches, the stored jobs and tasks rows
// (and the analytics counts of jobs and tasks) are `shoal_domain::Views` of the log, field by
// field.

async fn projection_is_the_domain_fold(backend: Backend, ops: Vec<Op>, cuts: [Vec<usize>; 2]) {
    write_log(backend.log.as_ref(), &ops).await;
    let recorded = backend.read_everything().await;
    let projector = projector(&backend, 1000);
    for (name, cuts) in ProjectionName::ALL.into_iter().zip(cuts) {
        apply_in_batches(&backend, &[&projector], &recorded, name, &cuts).await;
    }
    // The log as the projector read it, in its order.
    let log: Vec<Event> = recorded
        .iter()
        .map(|r| Event::decode(&r.event_type, r.schema_version, r.data.get()).expect("decode"))
        .collect();
    support::assert_domain_tables_eq(&dump(&backend.store()).await, &support::domain_tables(&log));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn projection_equals_the_domain_fold_sqlite(ops in ops(80), cuts in cuts()) {
        runtime().block_on(async {
            projection_is_the_domain_fold(Backend::sqlite().await, ops, cuts).await;
        });
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 5, ..ProptestConfig::default() })]

    #[test]
    fn projection_equals_the_domain_fold_postgres(ops in ops(80), cuts in cuts()) {
        runtime().block_on(async {
            if let Some(backend) = Backend::postgres().await {
                projection_is_the_domain_fold(backend, ops, cuts).await;
            }
        });
    }
}

// ---------------------------------------------------------------------------------------------
// A projector killed between batches, or in the middle of one, resumes to the same tables.

async fn killed_and_restarted(backend: Backend, ops: Vec<Op>, batches_before: usize, size: usize) {
    let events = write_log(backend.log.as_ref(), &ops).await;
    backend.settle().await;
    {
        let first = projector(&backend, size);
        for _ in 0..batches_before {
            first.step(ProjectionName::Jobs).await.expect("step");
            first.step(ProjectionName::Analytics).await.expect("step");
        }
        // Dropped here: whatever it did not apply is left to the next one.
    }
    let second = projector(&backend, size * 3 + 1);
    second.catch_up().await.expect("catch up");
    support::assert_dumps_eq(&dump(&backend.store()).await, &expected_dump(&events));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn killed_between_batches_then_restarted_sqlite(
        ops in ops(80), before in 0usize..12, size in 1usize..9
    ) {
        runtime().block_on(async {
            killed_and_restarted(Backend::sqlite().await, ops, before, size).await;
        });
    }

    #[test]
    fn killed_between_batches_then_restarted_postgres(
        ops in ops(60), before in 0usize..8, size in 1usize..9
    ) {
        runtime().block_on(async {
            if let Some(backend) = Backend::postgres().await {
                killed_and_restarted(backend, ops, before, size).await;
            }
        });
    }
}

/// `run` killed at arbitrary moments (a batch transaction may be cut in the middle: it rolls
/// back), restarted each time, ends equal to a full replay.
async fn aborted_runs(backend: Backend) {
    let ops: Vec<Op> = (0..400u32)
        .map(|i| ((i * 7 % 10) as u8, (i * 13 % 7) as u8, (i * 31 % 251) as u8))
        .collect();
    let events = write_log(backend.log.as_ref(), &ops).await;
    backend.settle().await;
    for delay_ms in [0u64, 3, 7, 15, 30] {
        // A "process" of its own: its connections die with it, which rolls back whatever
        // transaction it had open (as a crash would).
        let process = backend.reopen().await;
        let projector = projector(&process, 5);
        let handle = tokio::spawn(async move { projector.run(std::future::pending()).await });
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        handle.abort();
        let _ = handle.await;
        process.database.close().await;
    }
    projector(&backend, 64).catch_up().await.expect("catch up");
    support::assert_dumps_eq(&dump(&backend.store()).await, &expected_dump(&events));
}

#[tokio::test]
async fn aborted_runs_resume_to_a_full_replay_sqlite() {
    aborted_runs(Backend::sqlite().await).await;
}

#[tokio::test]
async fn aborted_runs_resume_to_a_full_replay_postgres() {
    if let Some(backend) = Backend::postgres().await {
        aborted_runs(backend).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Rebuild while jobs keep running.

async fn rebuild_while_appending(backend: Backend) {
    let store = backend.store();
    let schema_before = store.schema_fingerprint().await.expect("schema");
    let mut sim = support::Sim::new(12);
    let mut versions = HashMap::new();
    let mut events = Vec::new();
    for i in 0..300u32 {
        let step = sim.step(((i * 3 % 10) as u8, (i % 11) as u8, (i * 17 % 253) as u8));
        append(backend.log.as_ref(), &mut versions, &step).await;
        events.extend(step);
    }
    let live = projector(&backend, 16);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let runner = {
        let live = live.clone();
        tokio::spawn(async move {
            live.run(async {
                let _ = stopped.await;
            })
            .await
        })
    };
    let mut notices = live.subscribe();

    // Jobs keep running during both rebuilds.
    let writer = {
        let log = backend.log.clone();
        tokio::spawn(async move {
            let mut more = Vec::new();
            for i in 300..900u32 {
                let step = sim.step(((i * 3 % 10) as u8, (i % 11) as u8, (i * 17 % 253) as u8));
                append(log.as_ref(), &mut versions, &step).await;
                more.extend(step);
                if i % 20 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            more
        })
    };
    let rebuilder = projector(&backend, 7);
    let mut swaps = rebuilder.subscribe();
    let mut reports = Vec::new();
    for name in ProjectionName::ALL {
        let mut calls = 0;
        let report = rebuilder
            .rebuild(name, |p| {
                calls += 1;
                assert!(p.events > 0);
            })
            .await
            .expect("rebuild");
        assert!(calls > 0 && report.events > 0);
        reports.push(report);
    }
    events.extend(writer.await.expect("writer"));
    backend.settle().await;

    // The live projector continues from the swapped-in tables until it is caught up.
    let head = backend.log.head().await.expect("head");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for name in ProjectionName::ALL {
        while store.checkpoint(name, Target::Live).await.unwrap() != head {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} never caught up"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let _ = stop.send(());
    runner.await.expect("runner").expect("run");

    let mut rebuilt = Vec::new();
    while let Ok(notice) = swaps.try_recv() {
        if notice.rebuilt {
            rebuilt.push(notice.projection);
        }
    }
    assert_eq!(
        rebuilt,
        ProjectionName::ALL,
        "subscribers hear of the swaps"
    );
    // The live projector's subscribers saw its own commits (and, if it was fenced by a swap,
    // a `rebuilt` notice of its own).
    assert!(notices.try_recv().is_ok());
    support::assert_dumps_eq(&dump(&store).await, &expected_dump(&events));
    assert_eq!(store.schema_fingerprint().await.unwrap(), schema_before);
    for status in live.status().await.unwrap() {
        assert_eq!(status.lag_events, 0);
        assert_eq!(status.rebuild, None);
        assert_eq!(status.checkpoint, head);
    }

    // And a second rebuild works on the swapped-in tables (names of indexes, constraints).
    rebuilder
        .rebuild(ProjectionName::Jobs, |_| {})
        .await
        .expect("second rebuild");
    support::assert_dumps_eq(&dump(&store).await, &expected_dump(&events));
    assert_eq!(store.schema_fingerprint().await.unwrap(), schema_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_while_jobs_run_ends_equal_to_a_fresh_replay_sqlite() {
    rebuild_while_appending(Backend::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_while_jobs_run_ends_equal_to_a_fresh_replay_postgres() {
    if let Some(backend) = Backend::postgres().await {
        rebuild_while_appending(backend).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Analytics, by hand.

async fn analytics_by_hand(backend: Backend) {
    let t0 = Utc.with_ymd_and_hms(2026, 11, 26, 23, 59, 0).unwrap();
    let at = |s: i64| t0 + chrono::Duration::seconds(s);
    let job_a = JobId::new();
    let job_b = JobId::new();
    let submitted = |job_id, job_type: &str, total_tasks, s| {
        Event::JobSubmitted(JobSubmitted {
            job_id,
            job_type: job_type.into(),
            split: Split::Total { total_tasks },
            parameters: serde_json::Map::new(),
            max_attempts: 1,
            timeout_seconds: 60,
            total_tasks,
            submitted_at: at(s),
            fallback_handler: None,
            priority: 0,
        })
    };
    let mut log = vec![
        submitted(job_a, "cpu_bound", 3, 0),
        submitted(job_b, "io_bound", 1, 90),
    ];
    for (job_id, n) in [(job_a, 3u32), (job_b, 1)] {
        log.push(Event::TasksCreated(TasksCreated {
            job_id,
            from_index: 0,
            to_index: n,
            at: at(100),
        }));
        for index in 0..n {
            log.push(Event::TaskEnqueued(TaskEnqueued {
                job_id,
                task_id: TaskId::for_task(job_id, index),
                index,
                job_type: "t".into(),
                input: json!({}),
                attempt: 1,
                max_attempts: 1,
                timeout_seconds: 60,
                at: at(100),
                fallback_handler: None,
            }));
        }
    }
    let start = |job_id, index, s| {
        Event::TaskStarted(TaskStarted {
            job_id,
            task_id: TaskId::for_task(job_id, index),
            index,
            attempt: 1,
            worker: "w".into(),
            at: at(s),
        })
    };
    let complete = |job_id, index, duration_ms, s| {
        Event::TaskCompleted(TaskCompleted {
            job_id,
            task_id: TaskId::for_task(job_id, index),
            index,
            attempt: 1,
            result: None,
            duration_ms,
            at: at(s),
        })
    };
    log.extend([
        start(job_a, 0, 110),
        start(job_a, 1, 110),
        start(job_a, 2, 110),
        start(job_b, 0, 110),
        complete(job_a, 0, 100, 120),
        complete(job_a, 1, 200, 121),
        complete(job_a, 2, 300, 190),
        Event::JobCompleted(JobCompleted {
            job_id: job_a,
            at: at(191),
        }),
        Event::TaskFailed(TaskFailed {
            job_id: job_b,
            task_id: TaskId::for_task(job_b, 0),
            index: 0,
            attempt: 1,
            error: "boom".into(),
            final_failure: true,
            at: at(200),
        }),
    ]);
    let mut versions = HashMap::new();
    for event in &log {
        append(
            backend.log.as_ref(),
            &mut versions,
            std::slice::from_ref(event),
        )
        .await;
    }
    backend.settle().await;
    projector(&backend, 3).catch_up().await.expect("catch up");
    let store = backend.store();

    let overview = store.overview().await.unwrap();
    assert_eq!(overview.total_jobs, 2);
    assert_eq!(overview.completed_jobs, 1);
    assert_eq!(overview.running_jobs, 1, "job b is RUNNING until JobFailed");
    assert_eq!(overview.success_rate, 50.0);
    assert_eq!(overview.total_tasks, 4);
    assert_eq!(overview.completed_tasks, 3);
    assert_eq!(overview.failed_tasks, 1);
    assert_eq!(overview.pending_tasks, 0);
    assert!((overview.avg_processing_time_seconds - 0.2).abs() < 1e-9);
    assert!((overview.total_processing_time_seconds - 0.6).abs() < 1e-9);

    assert_eq!(
        store.jobs_by_type().await.unwrap(),
        vec![("cpu_bound".to_owned(), 1), ("io_bound".to_owned(), 1)]
    );
    assert_eq!(
        store.jobs_by_status().await.unwrap(),
        vec![(JobStatus::Completed, 1), (JobStatus::Running, 1)]
    );
    assert_eq!(
        store.tasks_by_status().await.unwrap(),
        vec![(TaskStatus::Completed, 3), (TaskStatus::Failed, 1)]
    );

    let stats = store.processing_time().await.unwrap();
    assert_eq!(stats.count, 3);
    assert_eq!(stats.min_seconds, Some(0.1));
    assert_eq!(stats.max_seconds, Some(0.3));
    assert!((stats.avg_seconds.unwrap() - 0.2).abs() < 1e-9);
    let within = |got: Option<f64>, want: f64| (got.unwrap() - want).abs() / want < 0.07;
    assert!(within(stats.p50_seconds, 0.2), "{stats:?}");
    assert!(within(stats.p95_seconds, 0.3), "{stats:?}");
    assert!(within(stats.p99_seconds, 0.3), "{stats:?}");

    // Job a on the 26th, job b (90 s later) and every task event on the 27th.
    let timeline = store.timeline(3, at(300)).await.unwrap();
    let days: Vec<(String, i64, i64, i64)> = timeline
        .iter()
        .map(|d| {
            (
                d.date.to_string(),
                d.jobs_submitted,
                d.tasks_completed,
                d.tasks_failed,
            )
        })
        .collect();
    assert_eq!(
        days,
        vec![
            ("2026-11-25".to_owned(), 0, 0, 0),
            ("2026-11-26".to_owned(), 1, 0, 0),
            ("2026-11-27".to_owned(), 1, 3, 1),
        ]
    );
    // Minutes of t0+120 s (00:01): 2 completed; of t0+190 s and t0+200 s (00:02): 1 + 1 failed.
    let minutes = store.throughput(4, at(200)).await.unwrap();
    let counts: Vec<(i64, i64)> = minutes
        .iter()
        .map(|m| (m.tasks_completed, m.tasks_failed))
        .collect();
    assert_eq!(counts, vec![(0, 0), (0, 0), (2, 0), (1, 1)]);

    // The jobs table agrees.
    let a = store.get_job(job_a).await.unwrap().unwrap();
    assert_eq!(a.status, JobStatus::Completed);
    assert_eq!(
        (a.progress.completed, a.progress.failed, a.total_tasks()),
        (3, 0, 3)
    );
    assert_eq!(a.started_at, Some(at(110)));
    assert_eq!(a.completed_at, Some(at(191)));
    let b = store.get_job(job_b).await.unwrap().unwrap();
    assert_eq!(b.status, JobStatus::Running);
    let task = store
        .get_task(TaskId::for_task(job_a, 2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(task.processing_time_seconds(), Some(0.3));
    assert_eq!((task.retry_count(), task.max_retries()), (0, 0));
}

#[tokio::test]
async fn analytics_match_hand_computed_numbers_sqlite() {
    analytics_by_hand(Backend::sqlite().await).await;
}

#[tokio::test]
async fn analytics_match_hand_computed_numbers_postgres() {
    if let Some(backend) = Backend::postgres().await {
        analytics_by_hand(backend).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Queries.

async fn queries(backend: Backend) {
    let ops: Vec<Op> = (0..120u32)
        .map(|i| ((i * 7 % 10) as u8, (i * 13 % 7) as u8, (i * 31 % 251) as u8))
        .collect();
    let mut sim = support::Sim::new(9);
    let mut versions = HashMap::new();
    let mut events = Vec::new();
    for op in ops {
        let step = sim.step(op);
        append(backend.log.as_ref(), &mut versions, &step).await;
        events.extend(step);
    }
    backend.settle().await;
    projector(&backend, 50).catch_up().await.expect("catch up");
    let store = backend.store();
    let all = expected_dump(&events).jobs;
    assert!(all.len() >= 5, "{} jobs", all.len());

    // Cursor pagination visits every job once, newest first.
    let mut seen = Vec::new();
    let mut after: Option<JobCursor> = None;
    loop {
        let page = store
            .list_jobs(&JobFilter::default(), JobSort::Newest, after, 2)
            .await
            .unwrap();
        seen.extend(page.jobs.iter().map(|j| (j.created_at, j.id)));
        match page.next {
            Some(cursor) => after = Some(cursor.to_string().parse().unwrap()),
            None => break,
        }
    }
    let mut want: Vec<_> = all.iter().map(|j| (j.created_at, j.id)).collect();
    want.sort();
    want.reverse();
    assert_eq!(seen, want);
    let oldest = store
        .list_jobs(&JobFilter::default(), JobSort::Oldest, None, 1000)
        .await
        .unwrap();
    assert_eq!(oldest.jobs.first().map(|j| j.id), want.last().map(|w| w.1));

    // Filters: status, type, time range, search (id or type, case-insensitive).
    let status = all[0].status;
    let by_status = store
        .list_jobs(
            &JobFilter {
                statuses: vec![status],
                ..JobFilter::default()
            },
            JobSort::Newest,
            None,
            1000,
        )
        .await
        .unwrap();
    assert_eq!(
        by_status.jobs.len(),
        all.iter().filter(|j| j.status == status).count()
    );
    let search = |text: &str| JobFilter {
        search: Some(text.into()),
        ..JobFilter::default()
    };
    let matrix = store
        .page_jobs(&search(" matrix_MULT "), JobSort::Newest, 1, 100)
        .await
        .unwrap();
    let want_matrix = all
        .iter()
        .filter(|j| j.job_type == "Matrix_Multiply")
        .count();
    assert_eq!(matrix.1 as usize, want_matrix);
    assert!(matrix.0.iter().all(|j| j.job_type == "Matrix_Multiply"));
    let id_part = all[1].id.to_string()[..13].to_uppercase();
    let by_id = store
        .page_jobs(&search(&id_part), JobSort::Newest, 1, 100)
        .await
        .unwrap();
    assert!(by_id.0.iter().any(|j| j.id == all[1].id));
    let wildcard = store
        .page_jobs(&search("%"), JobSort::Newest, 1, 100)
        .await
        .unwrap();
    assert_eq!(wildcard.1, 0, "a % is searched for literally");
    let by_type = store
        .page_jobs(
            &JobFilter {
                job_type: Some("io_bound".into()),
                ..JobFilter::default()
            },
            JobSort::Newest,
            1,
            100,
        )
        .await
        .unwrap();
    assert_eq!(
        by_type.1 as usize,
        all.iter().filter(|j| j.job_type == "io_bound").count()
    );
    let middle = want[want.len() / 2].0;
    let range = store
        .page_jobs(
            &JobFilter {
                created_from: Some(middle),
                ..JobFilter::default()
            },
            JobSort::Oldest,
            1,
            100,
        )
        .await
        .unwrap();
    assert_eq!(
        range.1 as usize,
        all.iter().filter(|j| j.created_at >= middle).count()
    );
    // Pages with totals, a page past the end is empty.
    let (page2, total) = store
        .page_jobs(&JobFilter::default(), JobSort::Newest, 2, 2)
        .await
        .unwrap();
    assert_eq!(total as usize, all.len());
    assert_eq!(
        page2.iter().map(|j| j.id).collect::<Vec<_>>(),
        want[2..4.min(want.len())]
            .iter()
            .map(|w| w.1)
            .collect::<Vec<_>>()
    );
    let (past, _) = store
        .page_jobs(&JobFilter::default(), JobSort::Newest, 99, 20)
        .await
        .unwrap();
    assert!(past.is_empty());
    assert_eq!(
        store
            .recent_jobs(3)
            .await
            .unwrap()
            .iter()
            .map(|j| j.id)
            .collect::<Vec<_>>(),
        want.iter().take(3).map(|w| w.1).collect::<Vec<_>>()
    );

    // Tasks of a job: index order, status filter, pages.
    let job = all
        .iter()
        .max_by_key(|j| j.progress.created)
        .expect("a job");
    let tasks = store.tasks_of_job(job.id, &[], None, 1000).await.unwrap();
    assert_eq!(tasks.len() as u32, job.progress.created);
    assert!(tasks.windows(2).all(|w| w[0].task_index < w[1].task_index));
    let after_first = store
        .tasks_of_job(job.id, &[], Some(tasks[0].task_index), 1000)
        .await
        .unwrap();
    assert_eq!(after_first.len(), tasks.len() - 1);
    let status = tasks[0].status;
    let (filtered, total) = store
        .page_tasks_of_job(job.id, &[status], 0, 1)
        .await
        .unwrap();
    assert_eq!(
        total as usize,
        tasks.iter().filter(|t| t.status == status).count()
    );
    assert_eq!(filtered.len(), 1);
    assert_eq!(
        store.get_task(tasks[0].id).await.unwrap().as_ref(),
        Some(&tasks[0])
    );
    assert_eq!(store.get_job(JobId::new()).await.unwrap(), None);
    assert!(
        store
            .tasks_of_job(JobId::new(), &[], None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn queries_page_filter_and_search_sqlite() {
    queries(Backend::sqlite().await).await;
}

#[tokio::test]
async fn queries_page_filter_and_search_postgres() {
    if let Some(backend) = Backend::postgres().await {
        queries(backend).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Status and notifications.

async fn status_and_notices(backend: Backend) {
    let events = write_log(
        backend.log.as_ref(),
        &[(0, 0, 3), (1, 0, 2), (3, 0, 0), (5, 0, 0)],
    )
    .await;
    backend.settle().await;
    let projector = projector(&backend, 2);
    let before = projector.status().await.unwrap();
    assert!(before.iter().all(|s| s.lag_events == events.len() as u64));
    let mut notices = projector.subscribe();
    projector.step(ProjectionName::Jobs).await.unwrap();
    let notice = notices.try_recv().expect("a notice per commit");
    assert_eq!(notice.projection, ProjectionName::Jobs);
    assert_eq!(notice.jobs, vec![events[0].job_id().unwrap()]);
    projector.catch_up().await.unwrap();
    let mut touched_tasks = 0;
    let mut analytics = false;
    while let Ok(notice) = notices.try_recv() {
        touched_tasks += notice.tasks.len();
        analytics |= notice.analytics;
    }
    assert!(touched_tasks > 0 && analytics);
    assert!(
        projector
            .status()
            .await
            .unwrap()
            .iter()
            .all(|s| s.lag_events == 0 && s.checkpoint == s.head)
    );
}

#[tokio::test]
async fn status_reports_lag_and_commits_are_announced_sqlite() {
    status_and_notices(Backend::sqlite().await).await;
}

#[tokio::test]
async fn status_reports_lag_and_commits_are_announced_postgres() {
    if let Some(backend) = Backend::postgres().await {
        status_and_notices(backend).await;
    }
}

/// A second writer that finds the checkpoint moved writes nothing.
#[tokio::test]
async fn a_batch_from_a_stale_checkpoint_is_fenced() {
    let backend = Backend::sqlite().await;
    write_log(backend.log.as_ref(), &[(0, 0, 3), (1, 0, 2)]).await;
    let recorded = backend.read_everything().await;
    let projector = projector(&backend, 100);
    projector
        .apply_batch(ProjectionName::Jobs, LogPosition::START, &recorded[..1])
        .await
        .unwrap();
    let stale = projector
        .apply_batch(ProjectionName::Jobs, LogPosition::START, &recorded[..1])
        .await;
    assert!(
        matches!(
            stale,
            Err(shoal_projector::ProjectorError::Store(
                shoal_infra::readmodel::ReadModelError::Fenced { .. }
            ))
        ),
        "{stale:?}"
    );
}

/// Projectors racing for the same batch from the same checkpoint (each loads its rows before
/// its write on SQLite, ADR 29): one writes it, the others are `Fenced` and write nothing, and
/// the tables are those of one replay.
async fn racing_projectors(backend: Backend) {
    let events = write_log(backend.log.as_ref(), &[(0, 0, 3), (1, 0, 2), (0, 1, 4)]).await;
    let recorded = std::sync::Arc::new(backend.read_everything().await);
    let projectors: Vec<_> = (0..3)
        .map(|_| std::sync::Arc::new(projector(&backend, 1000)))
        .collect();
    for name in ProjectionName::ALL {
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(projectors.len()));
        let racers: Vec<_> = projectors
            .iter()
            .map(|projector| {
                let (projector, recorded, barrier) =
                    (projector.clone(), recorded.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    projector
                        .apply_batch(name, LogPosition::START, &recorded)
                        .await
                })
            })
            .collect();
        let (mut applied, mut fenced) = (0, 0);
        for racer in racers {
            match racer.await.unwrap() {
                Ok(_) => applied += 1,
                Err(shoal_projector::ProjectorError::Store(
                    shoal_infra::readmodel::ReadModelError::Fenced { .. },
                )) => fenced += 1,
                Err(other) => panic!("{name:?}: {other:?}"),
            }
        }
        assert_eq!((applied, fenced), (1, 2), "{name:?}");
    }
    support::assert_dumps_eq(&dump(&backend.store()).await, &expected_dump(&events));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projectors_racing_for_one_batch_write_it_once_sqlite() {
    racing_projectors(Backend::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projectors_racing_for_one_batch_write_it_once_postgres() {
    if let Some(backend) = Backend::postgres().await {
        racing_projectors(backend).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Linger: live batches gather what keeps coming.

/// The next change the projector announces (20 s at most).
async fn next_change(
    changes: &mut tokio::sync::broadcast::Receiver<
        std::sync::Arc<shoal_projector::ProjectionChange>,
    >,
) -> std::sync::Arc<shoal_projector::ProjectionChange> {
    tokio::time::timeout(Duration::from_secs(20), changes.recv())
        .await
        .expect("a change within 20 s")
        .expect("the change")
}

/// With a linger, an event after a quiet spell is applied at once, and what keeps coming after
/// it waits for the linger to pass and is applied as one batch.
async fn linger_gathers_a_stream_of_events(backend: Backend) {
    let linger = Duration::from_secs(2);
    let projector = Projector::new(
        ProjectorConfig {
            linger,
            projections: vec![ProjectionName::Jobs],
            ..ProjectorConfig::default()
        },
        backend.log.clone(),
        backend.database.clone(),
    );
    let mut changes = projector.subscribe();
    let run = tokio::spawn(async move { projector.run(std::future::pending()).await });
    let submitted = |s: i64| {
        Event::JobSubmitted(JobSubmitted {
            job_id: JobId::new(),
            job_type: "t".into(),
            split: Split::Total { total_tasks: 1 },
            parameters: serde_json::Map::new(),
            max_attempts: 1,
            timeout_seconds: 60,
            total_tasks: 1,
            submitted_at: Utc.with_ymd_and_hms(2026, 12, 6, 0, 0, 0).unwrap()
                + chrono::Duration::seconds(s),
            fallback_handler: None,
            priority: 0,
        })
    };
    let mut versions = HashMap::new();
    // The first event, after a quiet spell: applied without waiting for the linger.
    let first = Instant::now();
    append(backend.log.as_ref(), &mut versions, &[submitted(0)]).await;
    let change = next_change(&mut changes).await;
    assert_eq!(change.jobs.len(), 1);
    assert!(
        first.elapsed() < linger,
        "the first event waited {:?}",
        first.elapsed()
    );
    // Ten more, 100 ms apart: none is read before the linger has passed, then all together.
    for s in 1..=10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        append(backend.log.as_ref(), &mut versions, &[submitted(s)]).await;
    }
    let change = next_change(&mut changes).await;
    assert!(
        first.elapsed() >= linger,
        "a batch after {:?}, before the linger",
        first.elapsed()
    );
    assert_eq!(change.jobs.len(), 10, "the ten events in one batch");
    run.abort();
}

#[tokio::test]
async fn linger_gathers_a_stream_of_events_sqlite() {
    linger_gathers_a_stream_of_events(Backend::sqlite().await).await;
}

#[tokio::test]
async fn linger_gathers_a_stream_of_events_postgres() {
    if let Some(backend) = Backend::postgres().await {
        linger_gathers_a_stream_of_events(backend).await;
    }
}
