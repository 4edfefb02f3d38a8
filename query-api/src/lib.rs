//! The read side of Shoal's APIs: GraphQL queries and subscriptions and the REST reads, served
//! from the projector's read tables and pushed to subscribers when they change.
//!
//! It never appends events and never reads the log to answer a query.
