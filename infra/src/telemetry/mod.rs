//! What an operator sees of a running process: Prometheus metrics ([`metrics`]), the W3C trace
//! context that follows a task from its enqueue to the worker that runs it ([`trace`]), the
//! readiness of the database ([`health`]), and an event log that measures its appends
//! ([`InstrumentedLog`]).
//!
//! Nothing here decides anything: it measures and reports. See `docs/observability.md` and
//! `docs/adr/0010-observability.md`.

pub mod health;
mod instrumented_log;
pub mod metrics;
pub mod queue;
pub mod trace;

pub use instrumented_log::InstrumentedLog;
/// The Prometheus client, for the roles' scrape-time metrics.
pub use prometheus_client;
