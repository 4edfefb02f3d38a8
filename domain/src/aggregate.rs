//! The shape shared by the job and task aggregates, for code that loads, decides and appends
//! generically (`infra`, tests).

use crate::events::Event;
use crate::job::{JobCommand, JobState, decide_job, evolve_job};
use crate::rejection::Rejection;
use crate::task::{TaskCommand, TaskState, decide_task, evolve_task};

/// A consistency boundary: one event stream, folded into a state that commands are decided
/// against.
///
/// Contract: `decide` is pure and deterministic (time and randomness arrive in the command);
/// an `Ok` list of events, once appended at the stream version the state was folded from and
/// evolved, gives the state the command meant. `evolve` never fails: it trusts the log and
/// ignores events that do not belong to the aggregate.
pub trait Aggregate {
    /// Folded from the stream; `Default` is "the stream is empty".
    type State: Default;
    /// What can be asked of it.
    type Command;

    /// Decides what a command does to `state`: the events to append, or why not.
    fn decide(state: &Self::State, command: Self::Command) -> Result<Vec<Event>, Rejection>;

    /// Applies one event.
    fn evolve(state: Self::State, event: &Event) -> Self::State;

    /// Folds a whole stream from the empty state.
    fn fold<'a>(events: impl IntoIterator<Item = &'a Event>) -> Self::State {
        events
            .into_iter()
            .fold(Self::State::default(), |state, event| {
                Self::evolve(state, event)
            })
    }
}

/// The job aggregate: stream `job-<id>`.
#[derive(Debug, Clone, Copy)]
pub struct JobAggregate;

impl Aggregate for JobAggregate {
    type State = JobState;
    type Command = JobCommand;

    fn decide(state: &JobState, command: JobCommand) -> Result<Vec<Event>, Rejection> {
        decide_job(state, command)
    }

    fn evolve(state: JobState, event: &Event) -> JobState {
        evolve_job(state, event)
    }
}

/// The task aggregate: stream `task-<id>`.
#[derive(Debug, Clone, Copy)]
pub struct TaskAggregate;

impl Aggregate for TaskAggregate {
    type State = TaskState;
    type Command = TaskCommand;

    fn decide(state: &TaskState, command: TaskCommand) -> Result<Vec<Event>, Rejection> {
        decide_task(state, command)
    }

    fn evolve(state: TaskState, event: &Event) -> TaskState {
        evolve_task(state, event)
    }
}
