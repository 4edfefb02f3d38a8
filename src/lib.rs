//! The wiring of the `shoal` binary as a library: how each role is built from its command-line
//! arguments ([`roles`]), the one GraphQL schema ([`graphql`]) and the REST API with its OpenAPI document ([`rest`]) it serves. The `shoal` binary
//! runs the roles through it, and so does the benchmark binary (`shoal-bench`, in `bench/`), so
//! that a benchmark measures exactly what `shoal dev` runs. No logic of its own lives here.

pub mod admin;
pub mod auth;
pub mod browser_guard;
pub mod cors;
pub mod graphql;
pub mod http_limits;
pub mod rest;
pub mod roles;
pub mod telemetry;
pub mod ws;
