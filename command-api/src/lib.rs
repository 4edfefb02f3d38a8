//! The write side of Shoal: GraphQL mutations and REST writes that check commands against the
//! domain and append events, and the orchestrator that drives each job through its lifecycle
//! (create tasks, enqueue them, monitor them, complete or fail the job).
//!
//! It never writes anything but events (and the orchestrator's queue relay), and never reads
//! projections to make a decision: decisions are made on state folded from the log.

pub mod commands;
pub mod graphql;
pub mod orchestrator;
pub mod rest;
