//! Why a command failed ([`CommandError`]) and what failed below it ([`InfrastructureError`]).

use shoal_domain::codec::DecodeError;
use shoal_domain::rejection::code;
use shoal_domain::{JobId, Rejection};
use shoal_infra::eventlog::LogError;
use shoal_infra::queue::QueueError;

#[cfg(doc)]
use super::CONFLICT_ATTEMPTS;
#[cfg(doc)]
use super::CommandService;

/// Code of [`CommandError::Conflict`].
pub const CONFLICT: &str = "CONFLICT";
/// Code of [`CommandError::Infrastructure`].
pub const INTERNAL: &str = "INTERNAL";

/// Why a command failed, and what the caller does about it. Whatever the variant, a failed
/// command leaves the log as it was, except where [`CommandError::Conflict`] says otherwise.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The domain refused the command for this input or this state (out of range, over a
    /// limit, wrong status). Nothing was appended; the same command gets the same answer, so
    /// do not retry as is. Answer with [`Rejection::code`] (HTTP 422 for input, 409 for a
    /// state) and [`Rejection::field`]; the message is safe to show.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The input is malformed before the domain can judge it (both `total_tasks` and `items`,
    /// neither, a negative number, a NUL character, an unusable idempotency key). Nothing was
    /// appended. HTTP 422 / code `INVALID_INPUT`; fix the input. `field` is snake_case.
    #[error("{message}")]
    Invalid {
        /// The offending input field (snake_case).
        field: &'static str,
        /// What is wrong, safe to show.
        message: String,
    },
    /// The job or task does not exist (`"Job <id> not found"`, `"Task <id> not found"`).
    /// Nothing was appended. HTTP 404 / code `NOT_FOUND`.
    #[error("{0}")]
    NotFound(String),
    /// Other writers kept changing the streams the command decides on; it re-read and decided
    /// again [`CONFLICT_ATTEMPTS`] times, then gave up. Retryable: send the command again (HTTP
    /// 409 / code `CONFLICT`). For `retry_failed_tasks` with more failed tasks than one chunk,
    /// earlier chunks may already be retried; sending it again retries the rest.
    #[error("the job was changed concurrently; try again")]
    Conflict,
    /// The event log failed, or holds an event this build cannot read. The command may or may
    /// not have been applied: retry later (with the same idempotency key, for a submission).
    /// HTTP 500 / code `INTERNAL`. The message is generic on purpose: log the error (its
    /// `source()` has the details) once at the API's edge and never show them to clients.
    #[error("internal error")]
    Infrastructure(#[source] InfrastructureError),
}

/// What failed below a [`CommandError::Infrastructure`]; for logs only.
#[derive(Debug, thiserror::Error)]
pub enum InfrastructureError {
    /// The log refused or failed an operation.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The task queue failed.
    #[error("task queue failed")]
    Queue(#[from] QueueError),
    /// The service was built without a task queue, which the dead-letter commands need (see
    /// [`CommandService::with_queue`]): a wiring mistake, not a client's.
    #[error("this service has no task queue (CommandService::with_queue)")]
    NoQueue,
    /// A stored event cannot be decoded.
    #[error("cannot decode event {position} of stream {stream_id}")]
    Decode {
        /// The event's stream.
        stream_id: String,
        /// Its sequence number.
        position: i64,
        /// Why.
        #[source]
        source: DecodeError,
    },
    /// The log holds something the command model cannot explain (a broken invariant).
    #[error("inconsistent event log: {0}")]
    Inconsistent(String),
}

impl CommandError {
    /// A stable machine-readable code: the rejection's code, `INVALID_INPUT`, `NOT_FOUND`,
    /// [`CONFLICT`] or [`INTERNAL`].
    pub fn code(&self) -> &'static str {
        match self {
            Self::Rejected(rejection) => rejection.code(),
            Self::Invalid { .. } => code::INVALID_INPUT,
            Self::NotFound(_) => code::NOT_FOUND,
            Self::Conflict => CONFLICT,
            Self::Infrastructure(_) => INTERNAL,
        }
    }

    /// The input field (snake_case) or state (`"status"`) the error is about; `"job_id"` for an
    /// unknown job; `None` for conflicts and infrastructure errors.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            Self::Rejected(rejection) => Some(rejection.field()),
            Self::Invalid { field, .. } => Some(field),
            Self::NotFound(_) => Some("job_id"),
            Self::Conflict | Self::Infrastructure(_) => None,
        }
    }

    pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            message: message.into(),
        }
    }

    pub(crate) fn not_found(job_id: JobId) -> Self {
        Self::NotFound(format!("Job {job_id} not found"))
    }

    pub(crate) fn inconsistent(message: impl Into<String>) -> Self {
        Self::Infrastructure(InfrastructureError::Inconsistent(message.into()))
    }
}

impl From<LogError> for CommandError {
    fn from(error: LogError) -> Self {
        match error {
            LogError::Conflict { .. } => Self::Conflict,
            other => Self::Infrastructure(InfrastructureError::Log(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_fields() {
        let e = CommandError::from(Rejection::ItemsEmpty);
        assert_eq!((e.code(), e.field()), ("INVALID_INPUT", Some("items")));
        let e = CommandError::not_found(JobId::new());
        assert_eq!((e.code(), e.field()), ("NOT_FOUND", Some("job_id")));
        assert!(e.to_string().starts_with("Job ") && e.to_string().ends_with(" not found"));
        let e = CommandError::inconsistent("secret detail");
        assert_eq!(e.code(), "INTERNAL");
        assert_eq!(e.to_string(), "internal error");
        assert_eq!(CommandError::Conflict.code(), "CONFLICT");
    }

    #[test]
    fn infrastructure_errors_keep_their_cause() {
        use std::error::Error;

        let e =
            CommandError::Infrastructure(InfrastructureError::Queue(QueueError::NoDeadLetterQueue));
        assert_eq!(e.to_string(), "internal error");
        let queue = e.source().expect("the infrastructure error");
        assert_eq!(queue.to_string(), "task queue failed");
        let cause = queue.source().expect("the queue's error");
        assert_eq!(cause.to_string(), "this SQS queue has no dead-letter queue");
        assert!(InfrastructureError::NoQueue.source().is_none());
    }
}
