//! What a load saw, counted as it goes: a latency histogram per scenario and status, the
//! slowest requests and every unexpected answer, each with its trace id.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;

use super::check::Verdict;
use super::scenario::Scenario;
use super::summary::{Percentiles, Row, RunInfo, Slow, Summary, Unexpected};

/// How many of the slowest requests a report keeps.
pub const SLOWEST: usize = 10;
/// How many unexpected answers a report keeps in full; beyond, they are only counted.
pub const KEPT_UNEXPECTED: usize = 10_000;

/// What a request was: one step of a scenario, or the replay of a retried key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A request of this scenario (for `retried`, one of the concurrent copies).
    Scenario(Scenario),
    /// The replay of a retried key, sent after its answer.
    Replay,
}

impl Kind {
    /// The scenario's name, or `replay`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Scenario(scenario) => scenario.name(),
            Self::Replay => "replay",
        }
    }
}

/// The status of an answer, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    /// An HTTP status.
    Answered(u16),
    /// `409 checkout unfinished`, an answer that is not final: the checkout lost its claim on
    /// the order (or ran past the saga's time limit) and the recovery sweep finishes it. Apart
    /// from the other 409s, so that lost claims show.
    Unfinished,
    /// No answer: the connection failed or the request timed out.
    NoAnswer,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Answered(code) => write!(f, "{code}"),
            Self::Unfinished => f.write_str("409 unfinished"),
            Self::NoAnswer => f.write_str("no answer"),
        }
    }
}

/// One request, measured and judged.
#[derive(Debug, Clone)]
pub struct Sample {
    /// What it was.
    pub kind: Kind,
    /// What came back.
    pub status: Status,
    /// From when it was due (open loop) or sent (closed loop) to the end of the answer.
    pub latency: Duration,
    /// Its trace, when the answer named one.
    pub trace_id: Option<String>,
    /// Whether the answer kept the contract.
    pub verdict: Verdict,
}

/// The counts and histograms of a run, as it goes.
#[derive(Debug)]
pub struct Report {
    rows: BTreeMap<(Kind, Status), (Histogram<u64>, u64)>,
    all: Histogram<u64>,
    steps: BTreeMap<Scenario, u64>,
    slowest: Vec<Slow>,
    unexpected: Vec<Unexpected>,
    unexpected_count: u64,
    unfinished: u64,
    max_send_lag: Duration,
}

impl Default for Report {
    fn default() -> Self {
        Self::new()
    }
}

impl Report {
    /// An empty report.
    pub fn new() -> Self {
        Self {
            rows: BTreeMap::new(),
            all: histogram(),
            steps: BTreeMap::new(),
            slowest: Vec::with_capacity(SLOWEST + 1),
            unexpected: Vec::new(),
            unexpected_count: 0,
            unfinished: 0,
            max_send_lag: Duration::ZERO,
        }
    }

    /// Counts a step of `scenario` as started.
    pub fn step(&mut self, scenario: Scenario) {
        *self.steps.entry(scenario).or_default() += 1;
    }

    /// Notes that a step was sent `lag` after it was due.
    pub fn sent_late(&mut self, lag: Duration) {
        self.max_send_lag = self.max_send_lag.max(lag);
    }

    /// Counts one request.
    pub fn record(&mut self, sample: Sample) {
        let micros = micros(sample.latency);
        let (row, unexpected) = self
            .rows
            .entry((sample.kind, sample.status))
            .or_insert_with(|| (histogram(), 0));
        row.saturating_record(micros);
        self.all.saturating_record(micros);
        if sample.status == Status::Unfinished {
            self.unfinished += 1;
        }
        if let Err(reason) = sample.verdict {
            *unexpected += 1;
            self.unexpected_count += 1;
            if self.unexpected.len() < KEPT_UNEXPECTED {
                self.unexpected.push(Unexpected {
                    scenario: sample.kind.name(),
                    status: sample.status.to_string(),
                    reason,
                    trace_id: sample.trace_id.clone(),
                });
            }
        }
        let latency_ms = millis(micros);
        if self.slowest.len() < SLOWEST || self.slowest[SLOWEST - 1].latency_ms < latency_ms {
            self.slowest.push(Slow {
                scenario: sample.kind.name(),
                status: sample.status.to_string(),
                latency_ms,
                trace_id: sample.trace_id,
            });
            self.slowest
                .sort_by(|a, b| b.latency_ms.total_cmp(&a.latency_ms));
            self.slowest.truncate(SLOWEST);
        }
    }

    /// Requests counted so far.
    pub fn requests(&self) -> u64 {
        self.all.len()
    }

    /// Steps started so far.
    pub fn steps(&self) -> u64 {
        self.steps.values().sum()
    }

    /// Unexpected answers so far.
    pub fn unexpected(&self) -> u64 {
        self.unexpected_count
    }

    /// The 99th percentile of every request so far.
    pub fn p99(&self) -> Duration {
        Duration::from_micros(self.all.value_at_quantile(0.99))
    }

    /// The summary of everything counted, with `run`.
    pub fn summary(&self, run: RunInfo) -> Summary {
        let rows: Vec<Row> = self
            .rows
            .iter()
            .map(|((kind, status), (histogram, unexpected))| Row {
                scenario: kind.name(),
                status: status.to_string(),
                count: histogram.len(),
                unexpected: *unexpected,
                latency_ms: percentiles(histogram),
            })
            .collect();
        let requests = self.requests();
        let requests_per_second = if run.elapsed_seconds > 0.0 {
            requests as f64 / run.elapsed_seconds
        } else {
            0.0
        };
        Summary {
            run,
            steps: self.steps(),
            steps_by_scenario: self.steps.iter().map(|(s, n)| (s.name(), *n)).collect(),
            requests,
            requests_per_second,
            unexpected: self.unexpected_count,
            unfinished: self.unfinished,
            max_send_lag_ms: millis(micros(self.max_send_lag)),
            rows,
            slowest: self.slowest.clone(),
            unexpected_answers: self.unexpected.clone(),
            logs: None,
        }
    }
}

/// Microseconds from 1 µs to an hour, three significant digits: within 0.1 %.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

fn micros(latency: Duration) -> u64 {
    u64::try_from(latency.as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

fn millis(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

fn percentiles(histogram: &Histogram<u64>) -> Percentiles {
    let at = |q: f64| millis(histogram.value_at_quantile(q));
    Percentiles {
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
        p99_9: at(0.999),
        max: millis(histogram.max()),
    }
}
