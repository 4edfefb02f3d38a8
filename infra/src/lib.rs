//! Shoal's adapters to the outside world: the event log (Postgres and SQLite), read-model
//! storage, the built-in orchestrator's storage, the task queues (a SQL table, or AWS SQS),
//! and the database migrations.
//!
//! All SQL lives in this crate, and nothing else does: no domain decisions are made here. The
//! domain (`shoal_domain`) decides; infra stores, reads and delivers what it decided. Every
//! statement is a runtime-checked `sqlx::query` with bound parameters, exercised by the
//! integration tests on both backends.

pub mod db;
pub mod eventlog;
pub mod orchestrator_store;
pub mod queue;
pub mod readmodel;
pub mod telemetry;

#[cfg(feature = "testing")]
pub mod testing;
