//! One job and its tasks folded from a part of the log: what `job(id, asOf)` answers for a
//! past instant, with the same folds as the projection ([`JobView`], [`TaskView`]).
//!
//! The job's view depends on the order of every event of the job (its first start, its latest
//! update), so it is folded in log order; each task's view depends on its own stream only.
//! Tasks are therefore folded as their events are read (a whole stream at once, or event by
//! event in log order), and the job keeps, of each task event, only a copy without its payload
//! (parameters, result), so that folding a job of 100,000 tasks holds the tasks' views and a
//! light copy of their events, not every payload twice.

use std::collections::HashMap;

use crate::events::Event;
use crate::ids::{JobId, TaskId};
use crate::view::{JobView, TaskView};

/// Folds one job from its events, each with its place in the log (`K`, ordered as the log).
#[derive(Debug, Clone)]
pub struct JobFold<K> {
    job_id: JobId,
    job_events: Vec<(K, Event)>,
    tasks: Vec<TaskView>,
    /// Tasks folded event by event ([`JobFold::add_event`]).
    open: HashMap<TaskId, TaskView>,
}

impl<K: Ord> JobFold<K> {
    /// A fold of `job_id`'s events.
    pub fn new(job_id: JobId) -> Self {
        JobFold {
            job_id,
            job_events: Vec::new(),
            tasks: Vec::new(),
            open: HashMap::new(),
        }
    }

    /// Adds one event of the job's stream or of one of its tasks'. Each task's events must
    /// come in version order (as a read of the log by job gives them); the job's own in any
    /// order (they are sorted by `K`). Events of other jobs are ignored. Do not mix with
    /// [`JobFold::add_task_stream`] for the same task.
    pub fn add_event(&mut self, key: K, event: Event) {
        if event.job_id() != Some(self.job_id) {
            return;
        }
        match event.task_id() {
            None => self.job_events.push((key, event)),
            Some(task) => {
                if let Some(view) = TaskView::evolve(self.open.remove(&task), &event) {
                    self.open.insert(task, view);
                }
                self.job_events.push((key, without_payload(event)));
            }
        }
    }

    /// Adds events of the job's own stream (any order; they are sorted by `K`).
    pub fn add_job_events(&mut self, events: impl IntoIterator<Item = (K, Event)>) {
        let job_id = self.job_id;
        self.job_events.extend(
            events
                .into_iter()
                .filter(|(_, e)| e.job_id() == Some(job_id)),
        );
    }

    /// Adds one task's stream, in version order. Events of other jobs are ignored.
    pub fn add_task_stream(&mut self, events: impl IntoIterator<Item = (K, Event)>) {
        let mut view = None;
        for (key, event) in events {
            if event.job_id() != Some(self.job_id) || event.task_id().is_none() {
                continue;
            }
            view = TaskView::evolve(view, &event);
            self.job_events.push((key, without_payload(event)));
        }
        if let Some(view) = view {
            self.tasks.push(view);
        }
    }

    /// The job and its tasks (by index); `None` when the job's `JobSubmitted` is not among
    /// the events.
    pub fn finish(mut self) -> Option<(JobView, Vec<TaskView>)> {
        self.job_events.sort_by(|a, b| a.0.cmp(&b.0));
        let mut events = self.job_events.iter().map(|(_, e)| e);
        let mut job = loop {
            match events.next()? {
                Event::JobSubmitted(e) => break JobView::submitted(e),
                _ => continue,
            }
        };
        for event in events {
            job.apply(event);
        }
        self.tasks.extend(self.open.into_values());
        self.tasks.sort_by_key(|t| t.index);
        Some((job, self.tasks))
    }
}

/// The event without what the job's view never reads (a task's input and result).
fn without_payload(event: Event) -> Event {
    match event {
        Event::TaskEnqueued(mut e) => {
            e.input = serde_json::Value::Null;
            Event::TaskEnqueued(e)
        }
        Event::TaskCompleted(mut e) => {
            e.result = None;
            Event::TaskCompleted(e)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::{Aggregate, JobAggregate, TaskAggregate};
    use crate::job::{JobCommand, JobState, SubmitJob};
    use crate::limits::Limits;
    use crate::split::Split;
    use crate::task::TaskCommand;
    use crate::view::Views;
    use chrono::{DateTime, Duration, TimeZone, Utc};
    use serde_json::json;

    fn t(seconds: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap() + Duration::seconds(seconds)
    }

    /// A job of three tasks: one completed, one retried then completed, one running.
    fn log() -> (JobId, Vec<Event>) {
        let job_id = JobId::new();
        let submit = JobCommand::SubmitJob(SubmitJob {
            job_id,
            job_type: "cpu_bound".into(),
            split: Split::Total { total_tasks: 3 },
            parameters: json!({"x": 1}),
            max_attempts: Some(3),
            timeout_seconds: None,
            limits: Limits::default(),
            fallback_handler: None,
            now: t(0),
            priority: 0,
        });
        let mut log = JobAggregate::decide(&JobState::default(), submit).unwrap();
        let state = JobAggregate::fold(&log);
        log.extend(
            JobAggregate::decide(
                &state,
                JobCommand::CreateTasks {
                    max_chunk: 3,
                    now: t(1),
                },
            )
            .unwrap(),
        );
        let mut tasks: Vec<_> = log
            .iter()
            .filter(|e| matches!(e, Event::TaskEnqueued(_)))
            .map(|e| TaskAggregate::fold([e]))
            .collect();
        let mut run = |i: usize, command: TaskCommand, log: &mut Vec<Event>| {
            let events = TaskAggregate::decide(&tasks[i], command).unwrap();
            tasks[i] = events
                .iter()
                .fold(std::mem::take(&mut tasks[i]), TaskAggregate::evolve);
            log.extend(events);
        };
        let start = |attempt, at| TaskCommand::StartTask {
            attempt,
            worker: format!("w{attempt}"),
            now: t(at),
        };
        let complete = |attempt, at| TaskCommand::CompleteTask {
            attempt,
            result: Some(json!({"ok": attempt})),
            duration_ms: 10,
            now: t(at),
        };
        run(0, start(1, 2), &mut log);
        run(1, start(1, 3), &mut log);
        run(
            1,
            TaskCommand::FailTask {
                attempt: 1,
                error: "boom".into(),
                retryable: true,
                backoff_ms: 1_000,
                now: t(4),
            },
            &mut log,
        );
        run(0, complete(1, 5), &mut log);
        run(1, start(2, 6), &mut log);
        run(2, start(1, 7), &mut log);
        run(1, complete(2, 8), &mut log);
        (job_id, log)
    }

    /// The fold of the first `n` events, stream by stream in shuffled order of streams.
    fn fold_prefix(job_id: JobId, log: &[Event], n: usize) -> Option<(JobView, Vec<TaskView>)> {
        let prefix: Vec<(usize, Event)> = log[..n].iter().cloned().enumerate().collect();
        let mut fold = JobFold::new(job_id);
        fold.add_job_events(
            prefix
                .iter()
                .filter(|(_, e)| e.task_id().is_none())
                .cloned(),
        );
        let mut ids: Vec<_> = prefix.iter().filter_map(|(_, e)| e.task_id()).collect();
        ids.sort();
        ids.dedup();
        ids.reverse();
        for id in ids {
            fold.add_task_stream(
                prefix
                    .iter()
                    .filter(|(_, e)| e.task_id() == Some(id))
                    .cloned(),
            );
        }
        fold.finish()
    }

    #[test]
    fn every_prefix_folds_as_the_projection_does() {
        let (job_id, log) = log();
        for n in 1..=log.len() {
            let views = Views::fold(&log[..n]);
            let (job, tasks) = fold_prefix(job_id, &log, n).unwrap();
            assert_eq!(Some(&job), views.jobs.get(&job_id), "job after {n} events");
            let mut expected: Vec<_> = views.tasks.into_values().collect();
            expected.sort_by_key(|t| t.index);
            assert_eq!(tasks, expected, "tasks after {n} events");
        }
    }

    #[test]
    fn every_prefix_folded_event_by_event_folds_as_the_projection_does() {
        let (job_id, log) = log();
        for n in 1..=log.len() {
            let views = Views::fold(&log[..n]);
            let mut fold = JobFold::new(job_id);
            for (key, event) in log[..n].iter().cloned().enumerate() {
                fold.add_event(key, event);
            }
            // Another job's events change nothing.
            if let Event::JobSubmitted(mut other) = log[0].clone() {
                other.job_id = JobId::new();
                fold.add_event(n, Event::JobSubmitted(other));
            }
            let (job, tasks) = fold.finish().unwrap();
            assert_eq!(Some(&job), views.jobs.get(&job_id), "job after {n} events");
            let mut expected: Vec<_> = views.tasks.into_values().collect();
            expected.sort_by_key(|t| t.index);
            assert_eq!(tasks, expected, "tasks after {n} events");
        }
    }

    #[test]
    fn no_submission_no_job() {
        let (job_id, log) = log();
        let mut fold = JobFold::new(job_id);
        fold.add_job_events(log[1..].iter().cloned().enumerate());
        assert!(fold.finish().is_none());
        let fold: JobFold<usize> = JobFold::new(JobId::new());
        assert!(fold.finish().is_none());
    }
}
