//! Job priorities: which job's tasks a queue hands out first.
//!
//! A job's priority is an integer in [`MIN_PRIORITY`]`..=`[`MAX_PRIORITY`], [`DEFAULT_PRIORITY`]
//! (0) unless the submission gives one; higher runs first. It is set by `JobSubmitted` and
//! changed by `JobPriorityChanged` while the job is live. Between jobs of the same priority
//! the queue shares the workers (fair share); see `docs/fairness.md`.

use crate::rejection::Rejection;

/// The priority of a job that does not ask for one.
pub const DEFAULT_PRIORITY: i32 = 0;
/// The lowest priority a job may have.
pub const MIN_PRIORITY: i32 = -1000;
/// The highest priority a job may have.
pub const MAX_PRIORITY: i32 = 1000;

/// Whether `priority` is the default (for leaving it out of stored events).
#[allow(clippy::trivially_copy_pass_by_ref)] // serde's `skip_serializing_if` passes a reference
pub fn is_default(priority: &i32) -> bool {
    *priority == DEFAULT_PRIORITY
}

/// `priority` as a job's priority, or [`Rejection::PriorityOutOfRange`].
pub fn check(priority: i64) -> Result<i32, Rejection> {
    i32::try_from(priority)
        .ok()
        .filter(|p| (MIN_PRIORITY..=MAX_PRIORITY).contains(p))
        .ok_or(Rejection::PriorityOutOfRange {
            got: priority,
            min: MIN_PRIORITY,
            max: MAX_PRIORITY,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_are_bounded() {
        assert_eq!(check(0), Ok(0));
        assert_eq!(check(-1000), Ok(-1000));
        assert_eq!(check(1000), Ok(1000));
        for bad in [1001, -1001, i64::from(i32::MAX) + 1, i64::MIN] {
            let rejection = check(bad).unwrap_err();
            assert_eq!(
                rejection.to_string(),
                format!("priority must be between -1000 and 1000, got {bad}")
            );
            assert_eq!(rejection.code(), "INVALID_INPUT");
            assert_eq!(rejection.field(), "priority");
        }
    }
}
