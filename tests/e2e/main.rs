//! End-to-end tests: the four services as real processes of the `ordertrail` binary, SQLite
//! databases in a temporary folder (or fresh PostgreSQL ones, when
//! `ORDERTRAIL_TEST_POSTGRES_URL` is set), their spans sent over OTLP/gRPC to a receiver in
//! this process and their log lines read from their stdout. Each test asserts the saga's
//! outcome and the telemetry itself; `concurrency` and `kill` load a stack and check the three
//! databases against each other afterwards.

mod support;

mod business_metrics;
mod card_search;
mod checkout;
mod concurrency;
mod deploy;
mod deploy_elastic;
mod deploy_metrics;
mod failures;
mod faults;
mod jaeger_json;
mod k8s;
mod kill;
mod load;
mod metrics;
mod replicas;
mod sampling;
mod telemetry_down;
mod up;
