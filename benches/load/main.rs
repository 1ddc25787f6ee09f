//! What an order costs: throughput, latency, service CPU and memory of the four services under
//! a closed-loop load, on SQLite and on PostgreSQL, with telemetry on and off in the same run.
//!
//! For each database it starts two stacks of the four release-built services
//! (`ordertrail serve <role>` on 127.0.0.1, fresh databases): one with telemetry fully on
//! (every span exported over OTLP/gRPC to a receiver in this process, ECS JSON lines written to
//! a file per service), one with it off (`OTEL_SDK_DISABLED=true`, `RUST_LOG=off`). It then
//! loads them in turns, A B B A A B…, so that whatever else the machine does falls on both
//! alike: `--connections` workers, each sending its next request when the previous one is
//! answered, for `--seconds` per round. A round's CPU is each service's utime + stime from
//! `/proc/<pid>/stat`, from its start until `--settle` seconds after its last answer, so
//! that the spans exported after the load (the batch processor's schedule) are paid for by the
//! round that made them.
//!
//! It asserts nothing about timing: it prints the tables. Run it with
//!
//! ```sh
//! ORDERTRAIL_BENCH_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo bench --bench load -- --seconds 10 --rounds 4
//! ```
//!
//! Without a PostgreSQL URL (`--postgres` or the variable), only SQLite runs. `--soak-minutes
//! N` instead loads one SQLite stack, telemetry on, for N minutes and prints each service's
//! resident memory every minute. `ORDERTRAIL_BENCH_BIN=path` runs another build of
//! `ordertrail` (the one before a change, say); `--service-env NAME=VALUE` adds to every
//! service's environment (to try a setting). `--counts N` times nothing: it counts what N
//! orders leave behind (spans, OTLP bytes, log lines, PostgreSQL rows and WAL; see
//! `counts.rs`).

mod counts;
mod drive;
mod report;
mod stack;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use drive::{REQUEST_TIMEOUT, Workload};
use ordertrail_testkit::receiver;
use report::{Measured, Round};
use stack::{Db, Stack, Telemetry, Usage};

/// The settings, from the command line.
#[derive(Debug, Clone)]
struct Settings {
    seconds: u64,
    rounds: usize,
    connections: usize,
    settle: Duration,
    postgres: Option<String>,
    only: Option<String>,
    workloads: Vec<Workload>,
    soak_minutes: u64,
    /// Orders per batch of `--counts` (0: time the workloads instead).
    counts: u64,
    /// More environment for every service (`--service-env NAME=VALUE`, repeatable).
    service_env: Vec<(String, String)>,
}

impl Settings {
    fn from_args() -> anyhow::Result<Self> {
        let mut settings = Self {
            seconds: 10,
            rounds: 4,
            connections: 16,
            // The batch processor exports what is left every 5 s.
            settle: Duration::from_millis(5500),
            postgres: std::env::var("ORDERTRAIL_BENCH_POSTGRES_URL").ok(),
            only: None,
            workloads: vec![Workload::Orders, Workload::Reads],
            soak_minutes: 0,
            counts: 0,
            service_env: Vec::new(),
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
            match arg.as_str() {
                // `cargo bench` adds it.
                "--bench" => {}
                "--seconds" => settings.seconds = value()?.parse()?,
                "--rounds" => settings.rounds = value()?.parse()?,
                "--connections" => settings.connections = value()?.parse()?,
                "--settle" => settings.settle = Duration::from_secs_f64(value()?.parse()?),
                "--postgres" => settings.postgres = Some(value()?),
                "--only" => settings.only = Some(value()?),
                "--workloads" => {
                    settings.workloads = value()?
                        .split(',')
                        .map(|name| match name {
                            "orders" => Ok(Workload::Orders),
                            "reads" => Ok(Workload::Reads),
                            other => anyhow::bail!("unknown workload {other}"),
                        })
                        .collect::<anyhow::Result<_>>()?;
                }
                "--soak-minutes" => settings.soak_minutes = value()?.parse()?,
                "--counts" => settings.counts = value()?.parse()?,
                "--service-env" => {
                    let pair = value()?;
                    let (name, value) = pair
                        .split_once('=')
                        .with_context(|| format!("--service-env {pair}: expected NAME=VALUE"))?;
                    settings
                        .service_env
                        .push((name.to_owned(), value.to_owned()));
                }
                other => anyhow::bail!(
                    "unknown argument {other}; known: --seconds --rounds --connections --settle \
                     --postgres URL --only sqlite|postgresql --workloads orders,reads \
                     --soak-minutes --counts ORDERS --service-env NAME=VALUE"
                ),
            }
        }
        Ok(settings)
    }

    fn databases(&self) -> Vec<Db> {
        let mut databases = vec![Db::Sqlite];
        databases.extend(self.postgres.clone().map(Db::Postgres));
        databases.retain(|db| self.only.as_deref().is_none_or(|only| only == db.name()));
        databases
    }
}

fn main() -> anyhow::Result<()> {
    let settings = Settings::from_args()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(settings))
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .pool_max_idle_per_host(settings.connections)
        .build()?;
    if settings.counts > 0 {
        return counts::run(&http, &settings, settings.counts).await;
    }
    let (endpoint, spans) = start_receiver().await?;
    if settings.soak_minutes > 0 {
        return soak(&http, &settings, &endpoint).await;
    }
    eprintln!(
        "{} connections, {} rounds of {} s per stack and workload, {} s settle",
        settings.connections,
        settings.rounds,
        settings.seconds,
        settings.settle.as_secs_f64()
    );
    let mut measured = Vec::new();
    for db in settings.databases() {
        let on = Telemetry::On {
            endpoint: endpoint.clone(),
        };
        let stacks = [
            Stack::start(&http, &db, &on, "on", &settings.service_env).await?,
            Stack::start(&http, &db, &Telemetry::Off, "off", &settings.service_env).await?,
        ];
        for stack in &stacks {
            warm_up(&http, stack).await?;
        }
        for &workload in &settings.workloads {
            let mut results = [
                Measured::new(db.name(), "on", workload),
                Measured::new(db.name(), "off", workload),
            ];
            for round in 0..settings.rounds {
                // A B B A A B …: each stack goes first as often as the other.
                for turn in [round % 2, 1 - round % 2] {
                    eprintln!(
                        "{} telemetry {} {}: round {}",
                        db.name(),
                        results[turn].telemetry,
                        workload.name(),
                        round + 1
                    );
                    let round = measure(&http, &stacks[turn], workload, &settings, &spans).await?;
                    results[turn].add(round);
                }
            }
            measured.extend(results);
        }
        for stack in stacks {
            stack.stop().await;
        }
    }
    report::print(&measured, &settings_line(&settings));
    Ok(())
}

fn settings_line(settings: &Settings) -> String {
    format!(
        "{} connections, {} × {} s per cell",
        settings.connections, settings.rounds, settings.seconds
    )
}

/// A receiver for every stack's spans, counting them.
async fn start_receiver() -> anyhow::Result<(String, Arc<AtomicU64>)> {
    let (addr, mut requests) =
        receiver::start_raw(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
    let spans = Arc::new(AtomicU64::new(0));
    let counted = spans.clone();
    tokio::spawn(async move {
        while let Some(request) = requests.recv().await {
            let n: usize = request
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .map(|s| s.spans.len())
                .sum();
            counted.fetch_add(n as u64, Ordering::Relaxed);
        }
    });
    Ok((format!("http://{addr}"), spans))
}

/// A little of both workloads, unmeasured: connections, caches and files warm.
async fn warm_up(http: &reqwest::Client, stack: &Stack) -> anyhow::Result<()> {
    drive::restock(http, &stack.inventory, 1000).await?;
    for workload in [Workload::Orders, Workload::Reads] {
        drive::run(http, &stack.gateway, workload, 4, Duration::from_secs(2)).await;
    }
    Ok(())
}

/// One round: its answers, each service's CPU ticks over the round and its settle time (and
/// this process's: the load and the span receiver), each service's memory at the end, and the
/// spans received meanwhile.
async fn measure(
    http: &reqwest::Client,
    stack: &Stack,
    workload: Workload,
    settings: &Settings,
    spans: &AtomicU64,
) -> anyhow::Result<Round> {
    if workload == Workload::Orders {
        // More than the fastest plausible round can sell of each SKU.
        drive::restock(http, &stack.inventory, 300 * settings.seconds).await?;
    }
    let before = stack.usage()?;
    let bench_before = stack::own_usage()?;
    let spans_before = spans.load(Ordering::Relaxed);
    let duration = Duration::from_secs(settings.seconds);
    let samples = drive::run(
        http,
        &stack.gateway,
        workload,
        settings.connections,
        duration,
    )
    .await;
    tokio::time::sleep(settings.settle).await;
    let after = stack.usage()?;
    let bench_after = stack::own_usage()?;
    Ok(Round {
        samples,
        cpu_ticks: before
            .iter()
            .zip(&after)
            .map(|(b, a)| a.cpu_ticks - b.cpu_ticks)
            .collect(),
        bench_ticks: bench_after.cpu_ticks - bench_before.cpu_ticks,
        usage: after,
        spans: spans.load(Ordering::Relaxed) - spans_before,
    })
}

/// Loads one SQLite stack, telemetry on, for `settings.soak_minutes` minutes and prints every
/// minute's throughput, p99, CPU per order and each service's resident memory.
async fn soak(http: &reqwest::Client, settings: &Settings, endpoint: &str) -> anyhow::Result<()> {
    let on = Telemetry::On {
        endpoint: endpoint.to_owned(),
    };
    let stack = Stack::start(http, &Db::Sqlite, &on, "soak", &settings.service_env).await?;
    warm_up(http, &stack).await?;
    println!(
        "soak: sqlite, telemetry on, {} connections\n",
        settings.connections
    );
    println!(
        "{:>6} {:>8} {:>8} {:>14} {:>30}",
        "minute", "orders/s", "p99 ms", "CPU/order µs", "RSS MB (inv pay ord gw)"
    );
    let started = Instant::now();
    for minute in 1..=settings.soak_minutes {
        drive::restock(http, &stack.inventory, 300 * 60).await?;
        let before = stack.usage()?;
        let samples = drive::run(
            http,
            &stack.gateway,
            Workload::Orders,
            settings.connections,
            Duration::from_secs(60),
        )
        .await;
        let after = stack.usage()?;
        let ticks: u64 = before
            .iter()
            .zip(&after)
            .map(|(b, a)| a.cpu_ticks - b.cpu_ticks)
            .sum();
        let per_order = Usage::cpu(ticks).as_secs_f64() * 1e6 / samples.latencies.len() as f64;
        let rss: Vec<String> = after
            .iter()
            .map(|u| format!("{:.1}", u.rss_kib as f64 / 1024.0))
            .collect();
        println!(
            "{minute:>6} {:>8.0} {:>8.1} {:>14.0} {:>30}{}",
            samples.rate(),
            samples.percentile_ms(99.0),
            per_order,
            rss.join(" "),
            if samples.errors > 0 {
                format!("  ({} errors)", samples.errors)
            } else {
                String::new()
            }
        );
    }
    println!("\n{:.0} s", started.elapsed().as_secs_f64());
    stack.stop().await;
    Ok(())
}
