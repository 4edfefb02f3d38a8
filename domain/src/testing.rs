//! Given/when/then scenarios for the aggregates' tests.

use std::fmt::Debug;

use crate::aggregate::Aggregate;
use crate::events::Event;
use crate::rejection::Rejection;

/// The past of a scenario: the state folded from `events`.
pub(crate) struct Given<A: Aggregate> {
    state: A::State,
}

/// Starts a scenario from a stream's events.
pub(crate) fn given<A: Aggregate>(events: impl IntoIterator<Item = Event>) -> Given<A> {
    let events: Vec<Event> = events.into_iter().collect();
    Given {
        state: A::fold(&events),
    }
}

impl<A: Aggregate> Given<A> {
    /// Decides `command` against the given state.
    pub(crate) fn when(self, command: A::Command) -> When<A> {
        let result = A::decide(&self.state, command);
        When {
            state: self.state,
            result,
        }
    }
}

/// A decided command, waiting for its expectation.
pub(crate) struct When<A: Aggregate> {
    state: A::State,
    result: Result<Vec<Event>, Rejection>,
}

impl<A: Aggregate> When<A>
where
    A::State: Debug,
{
    /// Asserts the command was accepted with exactly `expected`; returns the evolved state.
    #[track_caller]
    pub(crate) fn then(self, expected: impl IntoIterator<Item = Event>) -> A::State {
        let expected: Vec<Event> = expected.into_iter().collect();
        assert_eq!(self.result, Ok(expected));
        let events = self.result.unwrap_or_default();
        events.iter().fold(self.state, A::evolve)
    }

    /// Asserts the command was rejected with `expected`.
    #[track_caller]
    pub(crate) fn then_rejects(self, expected: Rejection) {
        assert_eq!(self.result, Err(expected));
    }
}
