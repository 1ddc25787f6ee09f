//! The tables: one row per database, telemetry setting and workload; then telemetry's cost,
//! on against off, for each database and workload.

use crate::drive::{Samples, Workload};
use crate::stack::{ROLES, Usage};

/// What one round measured.
pub struct Round {
    /// The answers.
    pub samples: Samples,
    /// CPU ticks per service, [`ROLES`] order.
    pub cpu_ticks: Vec<u64>,
    /// CPU ticks of the bench itself: the load and the span receiver.
    pub bench_ticks: u64,
    /// Each service's usage at the end.
    pub usage: Vec<Usage>,
    /// Spans received.
    pub spans: u64,
}

/// Everything measured for one database, telemetry setting and workload, over its rounds.
pub struct Measured {
    /// `sqlite` or `postgresql`.
    pub db: &'static str,
    /// `on` or `off`.
    pub telemetry: &'static str,
    workload: Workload,
    samples: Samples,
    /// CPU ticks per service, [`ROLES`] order.
    cpu_ticks: [u64; 4],
    /// The largest resident memory seen per service, KiB.
    rss_kib: [u64; 4],
    spans: u64,
    bench_ticks: u64,
}

impl Measured {
    /// Nothing measured yet.
    pub fn new(db: &'static str, telemetry: &'static str, workload: Workload) -> Self {
        Self {
            db,
            telemetry,
            workload,
            samples: Samples::default(),
            cpu_ticks: [0; 4],
            rss_kib: [0; 4],
            spans: 0,
            bench_ticks: 0,
        }
    }

    /// Adds one round.
    pub fn add(&mut self, round: Round) {
        self.samples.extend(round.samples);
        for (i, ticks) in round.cpu_ticks.iter().enumerate() {
            self.cpu_ticks[i] += ticks;
            self.rss_kib[i] = self.rss_kib[i].max(round.usage[i].rss_kib);
        }
        self.spans += round.spans;
        self.bench_ticks += round.bench_ticks;
    }

    fn answered(&self) -> f64 {
        self.samples.latencies.len() as f64
    }

    /// Service CPU per answered request, µs, per service.
    fn cpu_us(&self, role: usize) -> f64 {
        Usage::cpu(self.cpu_ticks[role]).as_secs_f64() * 1e6 / self.answered()
    }

    /// Service CPU per answered request, µs, the four summed.
    fn cpu_total_us(&self) -> f64 {
        (0..ROLES.len()).map(|role| self.cpu_us(role)).sum()
    }
}

/// Prints the tables.
pub fn print(measured: &[Measured], settings: &str) {
    println!("\n{settings}; CPU = utime + stime of the four services per answered request\n");
    println!(
        "| database | telemetry | request | answered | errors | req/s | p50 ms | p99 ms | CPU/req µs | inventory | payment | order | gateway | spans/req | max RSS MB | load + receiver CPU/req µs |"
    );
    println!("|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for m in measured {
        let per_role: Vec<String> = (0..ROLES.len())
            .map(|role| format!("{:.0}", m.cpu_us(role)))
            .collect();
        println!(
            "| {} | {} | {} | {} | {} | {:.0} | {:.1} | {:.1} | {:.0} | {} | {:.1} | {:.1} | {:.0} |",
            m.db,
            m.telemetry,
            m.workload.name(),
            m.samples.latencies.len(),
            m.samples.errors,
            m.samples.rate(),
            m.samples.percentile_ms(50.0),
            m.samples.percentile_ms(99.0),
            m.cpu_total_us(),
            per_role.join(" | "),
            m.spans as f64 / m.answered(),
            *m.rss_kib.iter().max().unwrap_or(&0) as f64 / 1024.0,
            Usage::cpu(m.bench_ticks).as_secs_f64() * 1e6 / m.answered(),
        );
    }
    println!("\ntelemetry on against off, same run\n");
    println!(
        "| database | request | throughput on/off | p99 on/off | CPU added per request µs | per hop µs |"
    );
    println!("|---|---|--:|--:|--:|--:|");
    for pair in measured.chunks(2) {
        let [on, off] = pair else { continue };
        let added = on.cpu_total_us() - off.cpu_total_us();
        println!(
            "| {} | {} | {:.3} | {:.3} | {:+.0} | {:+.1} |",
            on.db,
            on.workload.name(),
            on.samples.rate() / off.samples.rate(),
            on.samples.percentile_ms(99.0) / off.samples.percentile_ms(99.0),
            added,
            added / on.workload.hops() as f64,
        );
    }
}
