//! The conventions Shoal's two APIs share, so that neither role crate reaches into the other:
//! command-api (writes) and query-api (reads) both depend on this crate, and the `shoal` binary
//! composes their routers and schemas.
//!
//! - [`rest`]: the original system's REST conventions: error bodies and [`rest::ApiError`], the
//!   one error type a REST handler answers with; lenient JSON input; the `Job` and `Task`
//!   bodies and their statuses; ISO-8601 times.
//! - [`graphql`]: the enums both GraphQL schemas use (`JobStatus`, `TaskStatus`) and the error
//!   codes both answer with.
//! - [`snapshot`]: a job or task as its own event stream tells it ([`snapshot::JobSnapshot`],
//!   [`snapshot::TaskSnapshot`]): what commands return, and what the reads answer for a write
//!   the projector has not reached yet ([`snapshot::StreamSnapshots`]).
//! - [`auth`]: API tokens and their scopes, the caller ([`auth::Principal`]).
//! - [`error`]: how an error is logged at an API's edge, with its whole chain of causes.
//!
//! It holds types and conventions only: no handler, no storage, no role's logic. It must never
//! depend on a role crate (command-api, query-api, projector, worker).

pub mod auth;
pub mod error;
pub mod graphql;
pub mod rest;
pub mod snapshot;
