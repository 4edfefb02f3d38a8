//! The `analytics` projection (tables `analytics_*`), as a pure fold: a batch's events, and
//! the stored state of the jobs whose status they may change, give the state rows after the
//! batch and the deltas of every counter (added to the stored counts in the same
//! transaction). Deltas add up, so any split of the log gives the same counts; a counter
//! whose delta is zero is left out, and a status count that drops to zero is deleted, so the
//! tables do not depend on the split either.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Duration, DurationRound, Utc};
use shoal_domain::{Event, JobId, JobLifecycle, JobStatus, ProgressDelta, TaskStatus};
use shoal_infra::readmodel::{
    AnalyticsChanges, AnalyticsJobState, DailyDelta, ProcessingDelta, ThroughputDelta, histogram,
    to_micros,
};

/// Whether an event can change its job's displayed status (job events, and a task's start).
fn moves_job(event: &Event) -> bool {
    event.task_id().is_none() || matches!(event, Event::TaskStarted(_))
}

/// The job states a batch must load: jobs whose status it may change, except those it
/// submits.
pub fn keys(events: &[Event]) -> Vec<JobId> {
    let mut keys = Vec::new();
    let mut seen = HashSet::new();
    for event in events.iter().filter(|e| moves_job(e)) {
        let Some(job_id) = event.job_id() else {
            continue;
        };
        if seen.insert(job_id) && !matches!(event, Event::JobSubmitted(_)) {
            keys.push(job_id);
        }
    }
    keys
}

fn day_of(
    daily: &mut BTreeMap<chrono::NaiveDate, DailyDelta>,
    at: DateTime<Utc>,
) -> &mut DailyDelta {
    let day = at.date_naive();
    daily.entry(day).or_insert(DailyDelta {
        day,
        ..DailyDelta::default()
    })
}

fn state_status(state: &AnalyticsJobState) -> JobStatus {
    state.stream_status.displayed(state.started)
}

/// Folds a batch. `states` are the stored states of [`keys`] that exist.
pub fn fold(states: Vec<AnalyticsJobState>, events: &[Event]) -> AnalyticsChanges {
    let mut states: HashMap<JobId, AnalyticsJobState> =
        states.into_iter().map(|s| (s.job_id, s)).collect();
    let mut touched = BTreeSet::new();
    let mut by_type: BTreeMap<String, i64> = BTreeMap::new();
    let mut by_status: HashMap<JobStatus, i64> = HashMap::new();
    let mut tasks: ProgressDelta = ProgressDelta::default();
    let mut daily: BTreeMap<chrono::NaiveDate, DailyDelta> = BTreeMap::new();
    let mut throughput: BTreeMap<DateTime<Utc>, (i64, i64)> = BTreeMap::new();
    let mut buckets: BTreeMap<u32, i64> = BTreeMap::new();
    let mut processing: Option<ProcessingDelta> = None;

    for event in events {
        let at = to_micros(event.at());
        let minute = at.duration_trunc(Duration::minutes(1)).unwrap_or(at);

        match event {
            Event::JobSubmitted(e) => {
                if let Some(old) = states.get(&e.job_id) {
                    *by_status.entry(state_status(old)).or_default() -= 1;
                }
                states.insert(
                    e.job_id,
                    AnalyticsJobState {
                        job_id: e.job_id,
                        stream_status: JobStatus::Pending,
                        total_tasks: e.total_tasks,
                        created_upto: 0,
                        started: false,
                    },
                );
                touched.insert(e.job_id);
                *by_status.entry(JobStatus::Pending).or_default() += 1;
                *by_type.entry(e.job_type.clone()).or_default() += 1;
                day_of(&mut daily, at).jobs_submitted += 1;
            }
            _ if moves_job(event) => {
                if let Some(state) = event.job_id().and_then(|id| states.get_mut(&id)) {
                    let before = state_status(state);
                    if matches!(event, Event::TaskStarted(_)) {
                        state.started = true;
                    } else {
                        let mut lifecycle = JobLifecycle {
                            status: state.stream_status,
                            total_tasks: state.total_tasks,
                            created_upto: state.created_upto,
                        };
                        lifecycle.apply(event);
                        state.stream_status = lifecycle.status;
                        state.created_upto = lifecycle.created_upto;
                    }
                    let after = state_status(state);
                    if before != after {
                        *by_status.entry(before).or_default() -= 1;
                        *by_status.entry(after).or_default() += 1;
                    }
                    touched.insert(state.job_id);
                }
            }
            _ => {}
        }

        tasks += ProgressDelta::of(event);
        match event {
            Event::TaskCompleted(e) => {
                let ms = i64::try_from(e.duration_ms).unwrap_or(i64::MAX);
                processing = Some(match processing {
                    None => ProcessingDelta {
                        count: 1,
                        sum_ms: ms,
                        min_ms: ms,
                        max_ms: ms,
                    },
                    Some(p) => ProcessingDelta {
                        count: p.count + 1,
                        sum_ms: p.sum_ms.saturating_add(ms),
                        min_ms: p.min_ms.min(ms),
                        max_ms: p.max_ms.max(ms),
                    },
                });
                *buckets.entry(histogram::bucket(e.duration_ms)).or_default() += 1;
                day_of(&mut daily, at).tasks_completed += 1;
                throughput.entry(minute).or_default().0 += 1;
            }
            Event::TaskFailed(e) if e.final_failure => {
                day_of(&mut daily, at).tasks_failed += 1;
                throughput.entry(minute).or_default().1 += 1;
            }
            _ => {}
        }
    }

    let mut jobs_by_status: Vec<(JobStatus, i64)> =
        by_status.into_iter().filter(|(_, n)| *n != 0).collect();
    jobs_by_status.sort_by_key(|(s, _)| s.as_str());
    let tasks_by_status: Vec<(TaskStatus, i64)> = [
        (TaskStatus::Enqueued, tasks.queued),
        (TaskStatus::Running, tasks.running),
        (TaskStatus::Completed, tasks.completed),
        (TaskStatus::Failed, tasks.failed),
        (TaskStatus::Retrying, tasks.retrying),
    ]
    .into_iter()
    .filter(|(_, n)| *n != 0)
    .collect();

    AnalyticsChanges {
        job_states: touched
            .into_iter()
            .filter_map(|id| states.get(&id).copied())
            .collect(),
        jobs_by_type: by_type.into_iter().filter(|(_, n)| *n != 0).collect(),
        jobs_by_status,
        tasks_by_status,
        daily: daily
            .into_values()
            .filter(|d| d.jobs_submitted != 0 || d.tasks_completed != 0 || d.tasks_failed != 0)
            .collect(),
        processing,
        buckets: buckets.into_iter().filter(|(_, n)| *n != 0).collect(),
        throughput: throughput
            .into_iter()
            .map(
                |(minute, (tasks_completed, tasks_failed))| ThroughputDelta {
                    minute,
                    tasks_completed,
                    tasks_failed,
                },
            )
            .collect(),
    }
}
