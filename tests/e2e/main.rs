//! End-to-end tests: the four services as real processes of the `ordertrail` binary, SQLite
//! databases in a temporary folder, their spans sent over OTLP/gRPC to a receiver in this
//! process and their log lines read from their stdout. Each test asserts the saga's outcome
//! and the telemetry itself.

mod support;

mod checkout;
mod deploy;
mod failures;
mod jaeger_json;
mod telemetry_down;
