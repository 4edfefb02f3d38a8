//! The pure folds, without a database and with many cases: folding a log in any split into
//! batches, each batch from the rows the previous ones left (jobs) or adding its deltas
//! (analytics), gives what one batch gives; the displayed job status agrees with the
//! domain's own aggregate; and the rows are the domain's views of the log.

// Integration tests: helpers outside `#[test]` functions unwrap too; a failure fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use shoal_domain::{Aggregate, Event, JobAggregate, JobId, JobState};
use shoal_infra::readmodel::{
    AnalyticsChanges, AnalyticsJobState, AttemptRow, JobRow, ReadModelDump, TaskRow,
};
use shoal_projector::{analytics, jobs};
use support::{Op, Sim};

fn log(ops: &[Op]) -> Vec<Event> {
    let mut sim = Sim::new(5);
    ops.iter().flat_map(|&op| sim.step(op)).collect()
}

/// Sums deltas as the database does (zero rows dropped by the caller's comparison).
#[derive(Debug, Default, PartialEq)]
struct Totals {
    states: BTreeMap<JobId, AnalyticsJobState>,
    counters: BTreeMap<String, i64>,
    min_max: Option<(i64, i64)>,
}

impl Totals {
    fn add(&mut self, c: AnalyticsChanges) {
        for s in c.job_states {
            self.states.insert(s.job_id, s);
        }
        let mut bump = |key: String, n: i64| *self.counters.entry(key).or_default() += n;
        c.jobs_by_type
            .into_iter()
            .for_each(|(k, n)| bump(format!("type {k}"), n));
        c.jobs_by_status
            .into_iter()
            .for_each(|(k, n)| bump(format!("job {k}"), n));
        c.tasks_by_status
            .into_iter()
            .for_each(|(k, n)| bump(format!("task {k}"), n));
        for d in c.daily {
            bump(format!("day {} submitted", d.day), d.jobs_submitted);
            bump(format!("day {} completed", d.day), d.tasks_completed);
            bump(format!("day {} failed", d.day), d.tasks_failed);
        }
        for m in c.throughput {
            bump(format!("minute {} completed", m.minute), m.tasks_completed);
            bump(format!("minute {} failed", m.minute), m.tasks_failed);
        }
        c.buckets
            .into_iter()
            .for_each(|(b, n)| bump(format!("bucket {b}"), n));
        if let Some(p) = c.processing {
            bump("count".into(), p.count);
            bump("sum".into(), p.sum_ms);
            self.min_max = Some(match self.min_max {
                None => (p.min_ms, p.max_ms),
                Some((lo, hi)) => (lo.min(p.min_ms), hi.max(p.max_ms)),
            });
        }
        self.counters.retain(|_, n| *n != 0);
    }
}

type Folded = (Vec<JobRow>, Vec<TaskRow>, Totals, Vec<AttemptRow>);

fn fold_in_batches(events: &[Event], cuts: &[usize]) -> Folded {
    let mut job_rows: HashMap<JobId, JobRow> = HashMap::new();
    let mut task_rows: HashMap<shoal_domain::TaskId, TaskRow> = HashMap::new();
    let mut attempt_rows: BTreeMap<(shoal_domain::TaskId, u32), AttemptRow> = BTreeMap::new();
    let mut totals = Totals::default();
    let mut rest = events;
    for len in cuts.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (batch, tail) = rest.split_at((*len).clamp(1, rest.len()));
        rest = tail;
        let keys = jobs::keys(batch);
        let loaded_jobs = keys
            .jobs
            .iter()
            .filter_map(|id| job_rows.get(id).cloned())
            .collect();
        let loaded_tasks: Vec<TaskRow> = keys
            .tasks
            .iter()
            .filter_map(|id| task_rows.get(id).cloned())
            .collect();
        // As the store loads them: what a task's row implies is not read, and is what is
        // stored.
        let mut loaded_attempts = Vec::new();
        for task in &loaded_tasks {
            let stored: Vec<AttemptRow> = attempt_rows
                .values()
                .filter(|a| a.task_id == task.id)
                .cloned()
                .collect();
            if let Some(implied) = jobs::implied_attempts(task) {
                assert_eq!(implied, stored, "the attempts implied by {task:?}");
            }
            loaded_attempts.extend(stored);
        }
        let changes = jobs::fold(loaded_jobs, loaded_tasks, loaded_attempts, batch);
        for j in changes.jobs {
            job_rows.insert(j.id, j);
        }
        for t in changes.tasks {
            task_rows.insert(t.id, t);
        }
        attempt_rows.retain(|(task, _), _| !changes.attempts_reset.contains(task));
        for a in changes.attempts {
            attempt_rows.insert((a.task_id, a.seq), a);
        }
        let states = analytics::keys(batch)
            .iter()
            .filter_map(|id| totals.states.get(id).copied())
            .collect();
        totals.add(analytics::fold(states, batch));
    }
    let mut jobs: Vec<JobRow> = job_rows.into_values().collect();
    jobs.sort_by_key(|j| j.id);
    let mut tasks: Vec<TaskRow> = task_rows.into_values().collect();
    tasks.sort_by_key(|t| t.id);
    (jobs, tasks, totals, attempt_rows.into_values().collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn any_split_folds_to_the_same_rows(
        ops in prop::collection::vec(any::<(u8, u8, u8)>(), 1..150),
        cuts in prop::collection::vec(1usize..20, 1..10),
    ) {
        let events = log(&ops);
        let whole = fold_in_batches(&events, &[usize::MAX]);
        let split = fold_in_batches(&events, &cuts);
        prop_assert_eq!(&split.0, &whole.0);
        prop_assert_eq!(&split.1, &whole.1);
        prop_assert_eq!(&split.2, &whole.2);
        prop_assert_eq!(&split.3, &whole.3);

        // The job rows' stream status is the domain aggregate's, and the analytics status
        // counts are the jobs table's counts.
        let mut streams: HashMap<JobId, JobState> = HashMap::new();
        for event in events.iter().filter(|e| e.task_id().is_none()) {
            let state = streams.entry(event.job_id().unwrap()).or_default();
            *state = JobAggregate::evolve(std::mem::take(state), event);
        }
        let mut by_status: BTreeMap<String, i64> = BTreeMap::new();
        for job in &whole.0 {
            prop_assert_eq!(job.stream_status, streams[&job.id].status);
            *by_status.entry(format!("job {}", job.status)).or_default() += 1;
        }
        let counted: BTreeMap<String, i64> = whole
            .2
            .counters
            .iter()
            .filter(|(k, _)| k.starts_with("job "))
            .map(|(k, n)| (k.clone(), *n))
            .collect();
        prop_assert_eq!(counted, by_status);
    }

    #[test]
    fn any_split_folds_to_the_domain_views(
        ops in prop::collection::vec(any::<(u8, u8, u8)>(), 1..150),
        cuts in prop::collection::vec(1usize..20, 1..10),
    ) {
        let events = log(&ops);
        let (jobs, tasks, totals, attempts) = fold_in_batches(&events, &cuts);
        let counted = |prefix: &str| -> Vec<(String, i64)> {
            totals
                .counters
                .iter()
                .filter_map(|(k, n)| Some((k.strip_prefix(prefix)?.to_owned(), *n)))
                .collect()
        };
        let mut got = ReadModelDump {
            jobs,
            tasks,
            job_states: totals.states.values().copied().collect(),
            jobs_by_type: counted("type "),
            jobs_by_status: counted("job "),
            tasks_by_status: counted("task "),
            attempts,
            ..ReadModelDump::default()
        };
        support::canonical(&mut got);
        support::assert_domain_tables_eq(&got, &support::domain_tables(&events));
    }
}
