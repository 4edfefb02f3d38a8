//! Shoal's domain model: ids, events, commands, the job and task state machines, splitting,
//! limits and progress counting.
//!
//! Everything here is pure and synchronous. Aggregates follow
//! `decide(&State, Command) -> Result<Vec<Event>, Rejection>` and
//! `evolve(State, &Event) -> State`; time and randomness come in through commands (`now`,
//! `jitter`), so the same inputs always give the same events.
//!
//! This crate must never do IO: no files, network, database, clock reads in decisions, async
//! runtime or logging. It depends on no IO crate. Loading streams, appending events, queues and
//! HTTP belong to `infra` and the role crates, which call into this one.
//!
//! Map of the crate:
//! - [`ids`]: `JobId`, `TaskId`, stream ids.
//! - [`events`]: the [`Event`] enum and its payloads; [`codec`]: their stored form and upcasts.
//! - [`split`], [`limits`]: how a job becomes tasks, and what a submission may ask for.
//! - [`priority`]: job priorities, which order the queue hands tasks out in.
//! - [`message`]: the task queue's message body.
//! - [`job`], [`task`]: the two aggregates; [`aggregate`]: the trait they share.
//! - [`progress`]: counts of a job's tasks by status, from task events alone.
//! - [`view`]: jobs and tasks as readers see them, the one fold that projections and the
//!   command side share.
//! - [`as_of`]: a job folded from part of the log (as it stood at a past instant);
//!   [`attempts`]: a task's attempts, one by one.
//! - [`rejection`]: why a command was refused; [`backoff`]: retry delays.
//! - [`admission`]: cluster-wide concurrency and rate limits, checked and folded.

pub mod admission;
pub mod aggregate;
pub mod as_of;
pub mod attempts;
pub mod backoff;
pub mod codec;
pub mod events;
pub mod ids;
pub mod job;
pub mod limits;
pub mod message;
pub mod priority;
pub mod progress;
pub mod rejection;
pub mod split;
pub mod task;
pub mod view;

#[cfg(test)]
mod testing;

pub use aggregate::{Aggregate, JobAggregate, TaskAggregate};
pub use as_of::JobFold;
pub use attempts::{Attempt, AttemptOutcome, Attempts, RetryDecision};
pub use backoff::retry_backoff;
pub use codec::{DecodeError, EncodedEvent};
pub use events::Event;
pub use ids::{JobId, ParseIdError, StreamRef, TaskId};
pub use job::{
    JobCommand, JobLifecycle, JobState, JobStatus, SubmitJob, UnknownStatus, decide_job, evolve_job,
};
pub use limits::{DEFAULT_MAX_ATTEMPTS, DEFAULT_TIMEOUT_SECONDS, Limits};
pub use message::{MessageError, TaskMessage};
pub use progress::{JobProgress, Outcome, ProgressDelta};
pub use rejection::Rejection;
pub use split::Split;
pub use task::{FIRST_ATTEMPT, TaskCommand, TaskState, TaskStatus, decide_task, evolve_task};
pub use view::{JobView, TaskView, Touched, Views};
