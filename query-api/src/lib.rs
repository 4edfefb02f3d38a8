//! The read side of Shoal's APIs: GraphQL queries and subscriptions and the REST reads, served
//! from the projector's read tables and pushed to subscribers when they change.
//!
//! It never appends events and never reads the log to answer a query, with one exception: a
//! REST read of a single job or task that the projector has not reached yet is answered from
//! that job's or task's own stream (read-your-writes after a REST submission).
pub mod graphql;
pub mod metrics;
pub mod rest;
