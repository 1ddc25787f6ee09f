//! The report as the table and the JSON show it: what [`Report`] counted, summed up.
//!
//! [`Report`]: super::report::Report

use std::collections::BTreeMap;

use serde::Serialize;

use super::logs::LogVolume;
use super::restock::RestockSummary;

/// One request among the slowest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Slow {
    /// The scenario (or `replay`).
    pub scenario: &'static str,
    /// The status, or `no answer`.
    pub status: String,
    /// Its latency in milliseconds.
    pub latency_ms: f64,
    /// Its trace id, to paste into Jaeger.
    pub trace_id: Option<String>,
}

/// One answer that broke the contract.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Unexpected {
    /// The scenario (or `replay`).
    pub scenario: &'static str,
    /// The status, or `no answer`.
    pub status: String,
    /// What was wrong with it.
    pub reason: String,
    /// Its trace id, to paste into Jaeger.
    pub trace_id: Option<String>,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p99_9: f64,
    /// Slowest.
    pub max: f64,
}

/// The requests of one scenario that got one status.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// The scenario (or `replay`).
    pub scenario: &'static str,
    /// The status, or `no answer`.
    pub status: String,
    /// How many requests.
    pub count: u64,
    /// How many of them broke the contract.
    pub unexpected: u64,
    /// Their latency.
    pub latency_ms: Percentiles,
}

/// How the run went, besides what the report counted.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    /// The gateway's URL.
    pub gateway: String,
    /// `open loop at 100/s` or `closed loop, 8 clients`.
    pub mode: String,
    /// The mix, as `--mix` takes it.
    pub mix: String,
    /// From the first request to the last answer, in seconds.
    pub elapsed_seconds: f64,
    /// What restocking did.
    pub restock: RestockSummary,
}

/// The whole report: the table's content, and the JSON of `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// How the run went.
    #[serde(flatten)]
    pub run: RunInfo,
    /// Steps run (a retried step sends several requests).
    pub steps: u64,
    /// Steps run, by scenario.
    pub steps_by_scenario: BTreeMap<&'static str, u64>,
    /// Requests answered or given up on: the sum of the rows' counts.
    pub requests: u64,
    /// Requests per second over the run.
    pub requests_per_second: f64,
    /// Answers that broke the contract: the sum of the rows' `unexpected`.
    pub unexpected: u64,
    /// Orders answered `409 checkout unfinished` (the rows with status `409 unfinished`): not
    /// unexpected, but each is a checkout that lost its claim on the order or ran past the
    /// saga's time limit, left to the recovery sweep.
    pub unfinished: u64,
    /// Open loop: how long after it was due a step started at worst, in milliseconds: every
    /// `--max-in-flight` slot was busy (a slow server), or the tool was short of CPU. The
    /// wait counts in the step's latency.
    pub max_send_lag_ms: f64,
    /// One row per scenario and status.
    pub rows: Vec<Row>,
    /// The slowest requests, slowest first.
    pub slowest: Vec<Slow>,
    /// The unexpected answers, in the order they came (the first [`KEPT_UNEXPECTED`](super::report::KEPT_UNEXPECTED)).
    pub unexpected_answers: Vec<Unexpected>,
    /// With `--logs`: the log lines and bytes the run made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logs: Option<LogVolume>,
}
