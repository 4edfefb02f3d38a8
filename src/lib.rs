//! The wiring of the `shoal` binary as a library: how each role is built from its command-line
//! arguments ([`roles`]) and the one GraphQL schema it serves ([`graphql`]). The `shoal` binary
//! runs the roles through it, and so does the benchmark binary (`shoal-bench`, in `bench/`), so
//! that a benchmark measures exactly what `shoal dev` runs. No logic of its own lives here.

pub mod admin;
pub mod graphql;
pub mod roles;
pub mod telemetry;
