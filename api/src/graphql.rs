//! What both GraphQL schemas share: the status enums (one definition each, so the combined
//! schema of `shoal serve` has one `JobStatus` and one `TaskStatus`), the error codes, and
//! [`IntRange`], which refuses `Int` arguments beyond 32 bits wherever they are.
//!
//! Every error a client can cause carries `extensions.code`; the codes of the domain's
//! rejections come from `shoal_domain::rejection::code`, the two below from the GraphQL layer.

use async_graphql::Enum;

mod int_range;
mod limits;
mod scopes;

pub use int_range::IntRange;
pub use limits::{Limit, LimitKind, limits_of};
pub use scopes::{FORBIDDEN, ScopeCheck, ScopeOf};

/// Code of errors about a request's shape: a malformed id or cursor, or a request the GraphQL
/// layer refused (syntax, unknown field, wrong type, depth or complexity over the limit).
pub const BAD_USER_INPUT: &str = "BAD_USER_INPUT";

/// Code of infrastructure failures. Their message is generic: the cause is logged once, at the
/// API's edge, and never sent to the client.
pub const INTERNAL: &str = "INTERNAL";

/// A job's status.
#[derive(Debug, Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "JobStatus", remote = "shoal_domain::JobStatus")]
pub enum JobStatus {
    /// Accepted; no task exists yet.
    Pending,
    /// Some, not all, tasks exist.
    CreatingTasks,
    /// Every task exists; none has started yet.
    Enqueued,
    /// Tasks are running.
    Running,
    /// Every task completed. Final.
    Completed,
    /// Every task ended and some failed. Final unless the failed tasks are retried.
    Failed,
    /// Cancelled by a user. Final.
    Cancelled,
}

/// A task's status.
#[derive(Debug, Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "TaskStatus", remote = "shoal_domain::TaskStatus")]
pub enum TaskStatus {
    /// Known but not yet enqueued.
    Pending,
    /// Waiting for a worker (first attempt).
    Enqueued,
    /// A worker runs the current attempt.
    Running,
    /// Succeeded. Final.
    Completed,
    /// Failed with no attempt left. Final unless retried by a user.
    Failed,
    /// Waiting for its next attempt.
    Retrying,
}
