//! `ordertrail load`: drives the gateway with a mix of the documented scenarios, checks every
//! answer against the contract and reports latency per scenario and status, with the trace
//! ids of the slowest requests and of every unexpected answer.
//!
//! Open loop (`--rate`) or closed loop (`--concurrency`), bounded by `--duration` and/or
//! `--orders` (30 s when neither is given). Progress goes to stderr, the report to stdout (as
//! JSON with `--json`). The exit code is 0 when every answer was as expected, 1 when one was
//! not (or the run could not start), 2 for invalid arguments.

mod check;
mod driver;
mod logs;
mod report;
mod restock;
mod scenario;
mod summary;
mod table;

#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::Url;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use driver::{Bound, Driver};
use report::Report;
use restock::Restocker;
use scenario::{Mix, Picker};
use summary::RunInfo;

/// How long a run lasts when neither `--duration` nor `--orders` bounds it.
const DEFAULT_DURATION: Duration = Duration::from_secs(30);
/// Clients of a closed loop when `--concurrency` is not given.
const DEFAULT_CLIENTS: u32 = 8;

/// `ordertrail load`'s options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The gateway to load (http only).
    #[arg(long, default_value = "http://localhost:8080")]
    pub gateway_url: Url,
    /// Inventory, for `POST /restock` (internal: not behind the gateway).
    #[arg(long, default_value = "http://localhost:8083")]
    pub inventory_url: Url,
    /// Open loop: steps started per second whatever the answers' speed; each latency counts
    /// from when its step was due, so a stalled server shows as a stall.
    #[arg(long, value_parser = positive_rate, conflicts_with = "concurrency")]
    pub rate: Option<f64>,
    /// Closed loop: this many clients, each starting its next step when its last is
    /// answered [default: 8].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: Option<u32>,
    /// Stop starting steps after this long, e.g. 30s or 10m [default: 30s unless --orders].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Stop after this many steps (a step is one order, one read, or one retried key).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub orders: Option<u64>,
    /// The weight of each scenario: captured, declined, insufficient, out_of_stock, reads,
    /// retried (left out: 0).
    #[arg(long, default_value_t = Mix::default())]
    pub mix: Mix,
    /// Do not restock: captured orders may then run out of stock, and count as unexpected.
    #[arg(long)]
    pub no_restock: bool,
    /// Give up on a request after this long (it counts as unexpected: no answer).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Open loop: the most steps under way at once; beyond, steps wait (and their wait counts
    /// in their latency).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_in_flight: u32,
    /// Write the report as JSON on stdout instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Count the lines and bytes the services append to the *.log files in this folder
    /// during the run (var/log for `ordertrail up`), per service and per order.
    #[arg(long, value_name = "DIR")]
    pub logs: Option<std::path::PathBuf>,
}

/// The innermost cause of `err`, which says what happened ("Connection refused") without the
/// layers that only say where.
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

fn positive_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 && rate <= 1_000_000.0 => Ok(rate),
        _ => Err("the rate must be a number of steps per second, above 0".into()),
    }
}

/// Runs the load and prints the report; an error when any answer was unexpected.
pub async fn run(args: Args) -> anyhow::Result<()> {
    for url in [&args.gateway_url, &args.inventory_url] {
        anyhow::ensure!(
            url.scheme() == "http",
            "{url}: only http:// URLs are supported"
        );
    }
    let bound = Bound {
        steps: args.orders,
        duration: args
            .duration
            .or(args.orders.is_none().then_some(DEFAULT_DURATION)),
    };
    let http = reqwest::Client::builder()
        .timeout(args.timeout)
        .build()
        .context("cannot build the HTTP client")?;
    let progress = progress_bar(bound);
    let report = Arc::new(Mutex::new(Report::new()));
    let inventory = (!args.no_restock).then(|| args.inventory_url.clone());
    let restocker = Arc::new(Restocker::new(http.clone(), inventory, progress.clone()));
    let products = args.gateway_url.join("/api/products")?;
    restocker.top_up(products).await;

    let driver = Arc::new(Driver::new(
        http,
        &args.gateway_url,
        Picker::new(&args.mix),
        report.clone(),
        restocker.clone(),
    ));
    let log_files = args
        .logs
        .as_deref()
        .map(logs::LogFiles::start)
        .transpose()?;
    let stop = CancellationToken::new();
    let background = CancellationToken::new();
    let tasks = [
        tokio::spawn(stop_on_signal(stop.clone(), progress.clone(), args.timeout)),
        tokio::spawn(show_progress(report.clone(), progress.clone(), bound)),
        tokio::spawn({
            let (restocker, background) = (restocker.clone(), background.clone());
            async move { restocker.run(background).await }
        }),
    ];

    let started = Instant::now();
    let mode = match args.rate {
        Some(rate) => {
            driver
                .open_loop(rate, args.max_in_flight as usize, bound, &stop)
                .await;
            format!("open loop at {rate}/s")
        }
        None => {
            let clients = args.concurrency.unwrap_or(DEFAULT_CLIENTS);
            driver.closed_loop(clients as usize, bound, &stop).await;
            format!("closed loop, {clients} clients")
        }
    };
    let elapsed = started.elapsed();
    background.cancel();
    for task in tasks {
        task.abort();
        let _ = task.await;
    }
    restocker.flush().await;
    progress.finish_and_clear();

    let mut summary = report.lock().expect("not poisoned").summary(RunInfo {
        gateway: args.gateway_url.to_string(),
        mode,
        mix: args.mix.to_string(),
        elapsed_seconds: elapsed.as_secs_f64(),
        restock: restocker.summary(),
    });
    if let Some(files) = log_files {
        tokio::time::sleep(logs::SETTLE).await;
        let orders = summary.steps - summary.steps_by_scenario.get("reads").copied().unwrap_or(0);
        summary.logs = Some(files.volume(orders)?);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!("{}", table::render(&summary));
    }
    anyhow::ensure!(
        summary.unexpected == 0,
        "{} of {} answers were unexpected",
        summary.unexpected,
        summary.requests
    );
    Ok(())
}

/// A bar on stderr (drawn only when stderr is a terminal): steps done of `--orders`, or time
/// spent of `--duration`.
fn progress_bar(bound: Bound) -> ProgressBar {
    let length = match bound.steps {
        Some(steps) => steps,
        None => bound.duration.unwrap_or(DEFAULT_DURATION).as_millis() as u64,
    };
    let bar = ProgressBar::with_draw_target(Some(length), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{spinner} {elapsed_precise} [{wide_bar}] {msg}")
        .expect("a valid template");
    bar.set_style(style);
    bar
}

/// Updates the bar four times a second: requests, rate, unexpected answers and p99 so far.
async fn show_progress(report: Arc<Mutex<Report>>, bar: ProgressBar, bound: Bound) {
    let started = Instant::now();
    let mut ticks = tokio::time::interval(Duration::from_millis(250));
    loop {
        ticks.tick().await;
        let (steps, requests, unexpected, p99) = {
            let report = report.lock().expect("not poisoned");
            (
                report.steps(),
                report.requests(),
                report.unexpected(),
                report.p99(),
            )
        };
        let elapsed = started.elapsed();
        bar.set_position(match bound.steps {
            Some(_) => steps,
            None => elapsed.as_millis() as u64,
        });
        bar.set_message(format!(
            "{requests} requests, {:.1}/s, {unexpected} unexpected, p99 {:.1} ms",
            requests as f64 / elapsed.as_secs_f64().max(0.001),
            p99.as_secs_f64() * 1000.0
        ));
    }
}

/// On Ctrl-C or SIGTERM, stops starting steps; the steps under way finish (each within
/// `--timeout`) and the report is printed.
async fn stop_on_signal(stop: CancellationToken, bar: ProgressBar, timeout: Duration) {
    ordertrail_shared::shutdown::signal().await;
    bar.suspend(|| {
        eprintln!(
            "ordertrail load: stopping; the requests under way get up to {} to finish",
            humantime::format_duration(timeout)
        );
    });
    stop.cancel();
}
