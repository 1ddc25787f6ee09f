//! Measures what telemetry backends being down costs a request: nothing, if the invariant
//! "telemetry never hurts a request" (ARCHITECTURE.md) holds.
//!
//! The four services run as real processes (`ordertrail serve <role>`, SQLite in a fresh temp
//! directory), started by the test kit's launcher as the end-to-end tests start them, in three
//! scenarios one after the other:
//!
//! 1. **collector up** — `OTEL_EXPORTER_OTLP_ENDPOINT` points at a real OTLP/gRPC receiver.
//! 2. **collector refusing** — it points at a 127.0.0.1 port where nothing listens.
//! 3. **collector black hole** — it points at a listener that accepts connections and never
//!    reads or answers.
//!
//! Log lines go to stdout only (the launcher reads them and throws them away); shipping them
//! is Filebeat's job, outside the services.
//!
//! In each, after a warm-up, one client on 127.0.0.1 places orders one at a time through the
//! gateway (a mix of captured and declined cards, within the catalogue's stock), then reads the
//! catalogue as many times, recording each request's latency. It prints p50/p90/p99/max per
//! scenario and endpoint, the errors (any answer but 2xx, or the 402 a declined card expects),
//! and how long the four took to exit after SIGTERM, which includes their span flush (within
//! three seconds).
//!
//! It asserts nothing about timing: compare the rows. Run it with
//!
//! ```sh
//! cargo bench --bench telemetry_down
//! ```
//!
//! Everything is bounded: a fixed number of requests, a 10 s client timeout, 10 s to become
//! ready and 10 s to exit (then SIGKILL). All traffic stays on 127.0.0.1.

use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdTcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ordertrail_testkit::launcher::{Launcher, Role, Services, Stopped, Stream};
use ordertrail_testkit::receiver;
use serde_json::{Value, json};
use tokio::net::TcpSocket;
use tokio::task::JoinHandle;

/// Orders placed before measuring, to warm connections, caches and the SQLite files.
const WARMUP: usize = 20;
/// Measured requests per endpoint and scenario.
const N: usize = 300;
/// A card that is captured, and one that is declined (402, its stock released).
const GOOD_CARD: &str = "4242424242424242";
const DECLINED_CARD: &str = "4000000000000002";
/// SKUs for captured orders, cycled. With every other order declined, 320 orders sell at most
/// 54 of each, within the smallest stock (TRAIL-CAP, 60).
const SKUS: [&str; 3] = ["TRAIL-MUG", "TRAIL-TEE", "TRAIL-CAP"];
/// Per-request client timeout, so a hung request is counted as an error, not waited on.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a service may take to answer /health/ready after it is spawned.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a service may take to exit after SIGTERM before it is killed.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

/// Where the services' telemetry goes in one scenario.
#[derive(Debug, Clone, Copy)]
enum Scenario {
    /// A working OTLP/gRPC receiver.
    CollectorUp,
    /// A port where nothing listens: every connection is refused.
    CollectorRefusing,
    /// A listener that accepts and never reads.
    BlackHole,
}

impl Scenario {
    const ALL: [Scenario; 3] = [
        Scenario::CollectorUp,
        Scenario::CollectorRefusing,
        Scenario::BlackHole,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::CollectorUp => "collector up",
            Self::CollectorRefusing => "collector refusing",
            Self::BlackHole => "collector black hole",
        }
    }
}

/// The backends of one scenario, kept alive while it runs.
struct Backends {
    /// Extra environment for every service.
    env: Vec<(&'static str, String)>,
    /// Spans received by the real collector, if there is one.
    spans: Option<Arc<AtomicUsize>>,
    /// Background tasks (receiver drain, black holes), aborted at the end of the scenario.
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Backends {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Starts the telemetry backends of `scenario` and returns the environment pointing at them.
async fn backends(scenario: Scenario) -> anyhow::Result<Backends> {
    let endpoint = |addr: SocketAddr| format!("http://{addr}");
    Ok(match scenario {
        Scenario::CollectorUp => {
            let mut receiver = receiver::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
            let spans = Arc::new(AtomicUsize::new(0));
            let counted = spans.clone();
            let drain = tokio::spawn(async move {
                while receiver.spans.recv().await.is_some() {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
            });
            Backends {
                env: vec![("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint(receiver.addr))],
                spans: Some(spans),
                tasks: vec![drain],
            }
        }
        Scenario::CollectorRefusing => Backends {
            env: vec![(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                endpoint(SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?))),
            )],
            spans: None,
            tasks: Vec::new(),
        },
        Scenario::BlackHole => {
            let (otlp, task) = black_hole()?;
            Backends {
                env: vec![("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint(otlp))],
                spans: None,
                tasks: vec![task],
            }
        }
    })
}

/// A listener on 127.0.0.1 that accepts every connection and holds it without ever reading or
/// writing. Its small receive buffer makes writers stall sooner.
fn black_hole() -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    let socket = TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    socket.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
    let addr = socket.local_addr()?;
    let listener = socket.listen(64)?;
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    Ok((addr, task))
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> anyhow::Result<u16> {
    Ok(StdTcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// The four services of one scenario, running as child processes.
struct Stack {
    /// `None` only while the stack is dropped.
    services: Option<Services>,
    gateway: String,
    dir: PathBuf,
}

impl Stack {
    /// Starts the four services with fresh SQLite databases and `env`, each once it is ready.
    async fn start(env: &[(&'static str, String)], label: &str) -> anyhow::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "ordertrail-bench-{label}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir)?;
        let mut launcher = Launcher::new(env!("CARGO_BIN_EXE_ordertrail"))
            .env_clear()
            .ready_timeout(READY_TIMEOUT)
            .stop_timeout(EXIT_TIMEOUT)
            // Stdout is the log lines, read and dropped; what the binary says on stderr is
            // shown.
            .on_line(|line| {
                if line.stream == Stream::Stderr {
                    eprintln!("{}: {}", line.role, line.text);
                }
            });
        for (key, value) in env {
            launcher = launcher.env(*key, value);
        }
        for role in [Role::Order, Role::Payment, Role::Inventory] {
            let url = format!("sqlite://{}/{}.db?mode=rwc", dir.display(), role.name());
            launcher = launcher.role_env(role, "DATABASE_URL", url);
        }
        // Built first, so that its drop removes the directory if the start fails.
        let mut stack = Self {
            services: None,
            gateway: String::new(),
            dir,
        };
        let services = launcher.start().await?;
        stack.gateway = services.url(Role::Gateway);
        stack.services = Some(services);
        Ok(stack)
    }

    /// `url` of a gateway path.
    fn gateway(&self, path: &str) -> String {
        format!("{}{path}", self.gateway)
    }

    /// Sends SIGTERM to all four at once and waits for them to exit, for at most
    /// [`EXIT_TIMEOUT`] (then SIGKILL). Returns how long they took from the signal, and how
    /// each ended.
    async fn stop(mut self) -> (Duration, Vec<Stopped>) {
        let signalled = Instant::now();
        let stopped = match self.services.as_mut() {
            Some(services) => services.stop_all().await,
            None => Vec::new(),
        };
        (signalled.elapsed(), stopped)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // Kill what still runs before its databases go.
        drop(self.services.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The latencies of one endpoint's measured requests.
struct Samples {
    latencies: Vec<Duration>,
    /// Transport errors, timeouts and unexpected statuses.
    errors: usize,
    /// Declined orders answered with the expected 402.
    declined: usize,
    wall: Duration,
}

impl Samples {
    /// The `p`-th percentile (0–100), nearest rank, in milliseconds.
    fn percentile_ms(&self, p: f64) -> f64 {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted
            .get(rank.saturating_sub(1))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    }
}

/// The body of order number `i`: every other order is declined; the others buy one of
/// [`SKUS`] in turn.
fn order(i: usize) -> (Value, bool) {
    let declined = i % 2 == 1;
    let (sku, card) = if declined {
        (SKUS[0], DECLINED_CARD)
    } else {
        (SKUS[(i / 2) % SKUS.len()], GOOD_CARD)
    };
    let body = json!({
        "customer_id": "c-42",
        "items": [{"sku": sku, "quantity": 1}],
        "payment": {"card_number": card, "expiry": "12/30", "cvc": "123"}
    });
    (body, declined)
}

/// Places orders `range` one at a time through the gateway, timing each from send to the end
/// of its body.
async fn place_orders(
    http: &reqwest::Client,
    stack: &Stack,
    range: std::ops::Range<usize>,
) -> Samples {
    let url = stack.gateway("/api/orders");
    let started = Instant::now();
    let mut samples = Samples {
        latencies: Vec::with_capacity(range.len()),
        errors: 0,
        declined: 0,
        wall: Duration::ZERO,
    };
    for i in range {
        let (body, declined) = order(i);
        let sent = Instant::now();
        let status = match http.post(&url).json(&body).send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                response.bytes().await.map(|_| status).ok()
            }
            Err(_) => None,
        };
        samples.latencies.push(sent.elapsed());
        match status {
            Some(200..=299) => {}
            Some(402) if declined => samples.declined += 1,
            _ => samples.errors += 1,
        }
    }
    samples.wall = started.elapsed();
    samples
}

/// `GET /api/products` `n` times, one at a time.
async fn read_products(http: &reqwest::Client, stack: &Stack, n: usize) -> Samples {
    let url = stack.gateway("/api/products");
    let started = Instant::now();
    let mut samples = Samples {
        latencies: Vec::with_capacity(n),
        errors: 0,
        declined: 0,
        wall: Duration::ZERO,
    };
    for _ in 0..n {
        let sent = Instant::now();
        let ok = match http.get(&url).send().await {
            Ok(response) => {
                let success = response.status().is_success();
                response.bytes().await.is_ok() && success
            }
            Err(_) => false,
        };
        samples.latencies.push(sent.elapsed());
        if !ok {
            samples.errors += 1;
        }
    }
    samples.wall = started.elapsed();
    samples
}

/// What one scenario measured.
struct Outcome {
    scenario: Scenario,
    orders: Samples,
    products: Samples,
    /// How long the four took to exit after SIGTERM, and how each ended.
    shutdown: (Duration, Vec<Stopped>),
    spans: Option<usize>,
}

/// Runs one scenario on a fresh stack: backends, start, warm-up, measure, stop.
async fn run_scenario(http: &reqwest::Client, scenario: Scenario) -> anyhow::Result<Outcome> {
    eprintln!("== {}", scenario.name());
    let backends = backends(scenario).await?;
    let label = format!("{scenario:?}").to_lowercase();
    let stack = Stack::start(&backends.env, &label).await?;
    let warmup = place_orders(http, &stack, 0..WARMUP).await;
    if warmup.errors > 0 {
        eprintln!("   warm-up: {} errors", warmup.errors);
    }
    let orders = place_orders(http, &stack, WARMUP..WARMUP + N).await;
    let products = read_products(http, &stack, N).await;
    let shutdown = stack.stop().await;
    // Spans flushed at shutdown may still be in the receiver's channel.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let spans = backends.spans.as_ref().map(|s| s.load(Ordering::Relaxed));
    drop(backends);
    Ok(Outcome {
        scenario,
        orders,
        products,
        shutdown,
        spans,
    })
}

/// Runs the three scenarios and prints their results.
async fn run() -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()?;
    let started = Instant::now();
    let mut outcomes = Vec::new();
    for scenario in Scenario::ALL {
        outcomes.push(run_scenario(&http, scenario).await?);
    }
    print_report(&outcomes);
    println!(
        "\ntotal bench time: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Prints the latency table and the shutdown table.
fn print_report(outcomes: &[Outcome]) {
    println!(
        "\n{:<22} {:<18} {:>5} {:>6} {:>5} {:>8} {:>8} {:>8} {:>8} {:>9}",
        "scenario",
        "request",
        "n",
        "errors",
        "402",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "wall s"
    );
    for outcome in outcomes {
        for (request, samples) in [
            ("POST /api/orders", &outcome.orders),
            ("GET /api/products", &outcome.products),
        ] {
            println!(
                "{:<22} {:<18} {:>5} {:>6} {:>5} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>9.2}",
                outcome.scenario.name(),
                request,
                samples.latencies.len(),
                samples.errors,
                samples.declined,
                samples.percentile_ms(50.0),
                samples.percentile_ms(90.0),
                samples.percentile_ms(99.0),
                samples.percentile_ms(100.0),
                samples.wall.as_secs_f64(),
            );
        }
    }
    println!("\nshutdown after SIGTERM (all four signalled together; s until the last exited):");
    for outcome in outcomes {
        let (took, stopped) = &outcome.shutdown;
        let roles: Vec<String> = stopped
            .iter()
            .map(|stopped| {
                let ended = match &stopped.status {
                    _ if stopped.killed => "killed".to_owned(),
                    Ok(status) => status.to_string(),
                    Err(err) => err.to_string(),
                };
                format!("{} ({ended})", stopped.role)
            })
            .collect();
        println!(
            "  {:<22} {:.2}: {}",
            outcome.scenario.name(),
            took.as_secs_f64(),
            roles.join(", ")
        );
    }
    for outcome in outcomes {
        if let Some(spans) = outcome.spans {
            println!(
                "\nspans received by the collector in '{}': {spans}",
                outcome.scenario.name()
            );
        }
    }
}
