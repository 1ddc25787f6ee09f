//! `ordertrail-testkit`: what runs and watches the services from outside, for the tests, the
//! `up` command, `stack-check` and the benchmarks.
//!
//! - [`launcher`]: the four services as child processes of the `ordertrail` binary: ports,
//!   readiness, a child that exits during start, stop, kill and restart.
//! - [`receiver`]: an OTLP/gRPC receiver and the parser of Jaeger's OTLP JSON, both giving
//!   [`receiver::ReceivedSpan`]s, and of OTLP metrics on the same port
//!   ([`received_metrics`]); [`topology`]: the shape check of one trace.
//! - [`capture`]: the spans of code run in the test's own process; [`captured_metrics`]: the
//!   metrics of instruments on a test's own meter; [`db`]: fresh databases;
//!   [`json_body`]: a router's JSON answer. These serve the service crates' unit tests.
//!
//! No service depends on it: what a service runs is in `ordertrail-shared`.

pub mod capture;
pub mod captured_metrics;
pub mod db;
pub mod launcher;
pub mod received_metrics;
pub mod receiver;
mod response;
pub mod topology;

pub use capture::{CapturedSpans, attribute};
pub use captured_metrics::CapturedMetrics;
pub use db::databases;
pub use response::json_body;
