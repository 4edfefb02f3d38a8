//! Shoal's adapters to the outside world: the event log (Postgres and SQLite), read-model
//! storage, the built-in orchestrator's storage, the task queues (a SQL table, or AWS SQS),
//! and the database migrations.
//!
//! All SQL lives in this crate, and nothing else does: no domain decisions are made here. The
//! domain (`shoal_domain`) decides; infra stores, reads and delivers what it decided. Every
//! statement is a runtime-checked `sqlx::query` with bound parameters, exercised by the
//! integration tests on both backends. What is the same in both SQL dialects is written once,
//! generic over `dialect::Dialect`; what differs stays side by side in each area's `postgres.rs`
//! and `sqlite.rs` (see `docs/adr/0008-one-pattern-for-two-sql-dialects.md`).

pub mod db;
mod dialect;
pub mod eventlog;
mod notify;
pub mod orchestrator_store;
pub mod queue;
pub mod readmodel;
mod sqlite_rows;
pub mod sqlite_writer;
pub mod stepfunctions;
pub mod telemetry;
pub mod tokens;
pub mod workers;

#[cfg(feature = "testing")]
pub mod testing;
