//! The REST conventions both halves of the original system's REST API share (command-api
//! serves the writes, query-api the reads; the `shoal` binary mounts them together): errors as
//! `{"detail": "<message>"}`, validation errors as HTTP 422 with FastAPI's shape
//! (`{"detail": [{"type", "loc", "msg", "input", "ctx"?}]}`), JSON bodies parsed leniently
//! (any content type, unknown fields ignored), the JSON objects `Job` and `Task`, and
//! datetimes as ISO-8601 UTC with `Z` and microseconds. See `docs/rest-api.md`.

mod error;
mod input;
mod types;

pub use error::{
    ApiError, Detail, FieldError, ValidationDetail, body_loc, method_not_allowed, not_found,
    query_loc,
};
pub use input::{
    object_body, parse_body, parse_int, parse_optional_float, parse_optional_object,
    parse_optional_string, parse_task_id, query_int,
};
pub use types::{Job, RestJobStatus, RestTaskStatus, Task, iso};
