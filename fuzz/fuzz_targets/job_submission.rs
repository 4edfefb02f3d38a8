//! Job submissions: the limits check, `decide_job` and the split into tasks, on any input.
//!
//! Input: a JSON submission `{"job_type", "split", "parameters", "max_attempts",
//! "timeout_seconds", "limits"}` (the split as stored: `{"kind":"total","total_tasks":n}` or
//! `{"kind":"items","items":[...],"batch_size":n}`; limits default to the defaults, a limit of
//! 0 counts as 1 as no configuration sets one). Nothing may panic; a job that is accepted must
//! be within its limits, split into exactly its tasks, each item in exactly one task, and read
//! back from the log unchanged.
#![no_main]

use chrono::{TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use serde_json::Value;
use shoal_domain::limits::json_size;
use shoal_domain::{
    Event, JobCommand, JobId, JobState, Limits, Split, SubmitJob, decide_job, evolve_job,
};

#[derive(Deserialize)]
struct Submission {
    job_type: String,
    split: Split,
    #[serde(default)]
    parameters: Value,
    #[serde(default)]
    max_attempts: Option<u32>,
    #[serde(default)]
    timeout_seconds: Option<u32>,
    #[serde(default)]
    limits: Limits,
    /// Largest chunk of tasks the orchestrator creates at once.
    #[serde(default)]
    chunk: u16,
}

/// Jobs with more tasks than this are checked by sampling, not task by task.
const CHECK_EVERY_TASK_UP_TO: u32 = 2_000;

fuzz_target!(|input: &[u8]| {
    let Ok(submission) = serde_json::from_slice::<Submission>(input) else {
        return;
    };
    let mut limits = submission.limits;
    for limit in [
        &mut limits.max_tasks_per_job,
        &mut limits.max_items_per_job,
        &mut limits.max_batch_size,
        &mut limits.max_attempts_limit,
        &mut limits.max_timeout_seconds,
    ] {
        *limit = (*limit).max(1);
    }
    let now = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
    let job_id = JobId::from_uuid(uuid_of(input));
    let command = SubmitJob {
        job_id,
        job_type: submission.job_type,
        split: submission.split,
        parameters: submission.parameters,
        max_attempts: submission.max_attempts,
        timeout_seconds: submission.timeout_seconds,
        limits,
        now,
        fallback_handler: None,
        priority: 0,
    };
    let violations = limits.violations(&command);
    let decided = decide_job(&JobState::default(), JobCommand::SubmitJob(command.clone()));
    let events = match decided {
        Err(rejection) => {
            assert_eq!(
                violations.first(),
                Some(&rejection),
                "rejected for the first violation"
            );
            return;
        }
        Ok(events) => events,
    };
    assert!(violations.is_empty(), "accepted despite {violations:?}");
    let [Event::JobSubmitted(job)] = events.as_slice() else {
        panic!("a submission gives one JobSubmitted, not {events:?}");
    };

    // Within its limits.
    assert!((1..=limits.max_tasks_per_job).contains(&job.total_tasks));
    assert_eq!(job.total_tasks, job.split.task_count());
    assert!((1..=limits.max_attempts_limit).contains(&job.max_attempts));
    assert!((1..=limits.max_timeout_seconds).contains(&job.timeout_seconds));
    assert!(job.job_type.chars().count() <= limits.max_job_type_len);
    // Parameters left out are stored as `{}` and are not counted against the limit.
    assert!(
        job.parameters.is_empty()
            || json_size(&Value::Object(job.parameters.clone())) <= limits.max_parameters_bytes
    );

    // Each item in exactly one task, in order, no task empty.
    if let Split::Items { items, batch_size } = &job.split {
        assert!((1..=limits.max_batch_size).contains(batch_size));
        let mut next = 0;
        for index in sample(job.total_tasks) {
            let range = job.split.item_range(index);
            assert!(
                !range.is_empty() && range.end <= items.len(),
                "task {index}: {range:?}"
            );
            if job.total_tasks <= CHECK_EVERY_TASK_UP_TO {
                assert_eq!(
                    range.start, next,
                    "task {index} starts where the last ended"
                );
                next = range.end;
            }
            let input = job.split.task_input(index, &job.parameters);
            assert_eq!(input["items"].as_array().map(Vec::len), Some(range.len()));
        }
        if job.total_tasks <= CHECK_EVERY_TASK_UP_TO {
            assert_eq!(next, items.len(), "every item is in a task");
        }
        assert!(job.split.item_range(job.total_tasks).is_empty());
    }

    // Read back from the log unchanged.
    let stored = events[0].encode();
    let read = Event::decode(stored.event_type, stored.schema_version, stored.data.get())
        .unwrap_or_else(|e| panic!("an accepted job does not read back: {e}"));
    assert_eq!(read, events[0]);

    // The orchestrator creates exactly its tasks, chunk by chunk.
    if job.total_tasks <= CHECK_EVERY_TASK_UP_TO {
        let max_chunk = u32::from(submission.chunk).clamp(1, 500);
        let mut state = evolve_job(JobState::default(), &events[0]);
        let mut created = 0u32;
        while !state.all_tasks_created() {
            let chunk = decide_job(&state, JobCommand::CreateTasks { max_chunk, now })
                .unwrap_or_else(|r| panic!("creating tasks {created}..: {r}"));
            for event in &chunk {
                if let Event::TaskEnqueued(task) = event {
                    assert_eq!(task.index, created, "tasks are created in order");
                    created += 1;
                }
                state = evolve_job(state, event);
            }
        }
        assert_eq!(created, job.total_tasks);
    }
});

/// Every task of a small job; the first, last and a few between of a large one.
fn sample(total: u32) -> Vec<u32> {
    if total <= CHECK_EVERY_TASK_UP_TO {
        (0..total).collect()
    } else {
        let mut indexes: Vec<u32> = (0..16).map(|i| (total / 16) * i).collect();
        indexes.push(total - 1);
        indexes
    }
}

/// A job id that depends on the input only, so a crash reproduces.
fn uuid_of(input: &[u8]) -> uuid::Uuid {
    let mut bytes = [0u8; 16];
    for (i, b) in input.iter().enumerate() {
        bytes[i % 16] ^= b;
    }
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}
