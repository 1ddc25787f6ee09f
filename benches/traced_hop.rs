//! What telemetry costs one hop, in CPU: the micro-benchmark that watches that number.
//!
//! One hop is one call from a [`ServiceClient`] to a real service (inventory's
//! `GET /products`, on SQLite) over 127.0.0.1, in one process: the client span, the server
//! span, the query's span and the server's "request completed" log line, exactly as the
//! services make them, then their export. The process runs the hop `--iterations` times, one
//! at a time, after a warm-up, and reports its own CPU time (all threads: the runtime's, the
//! SQLite worker's, the span exporter's and the log writer's), measured until the telemetry
//! guard has flushed everything.
//!
//! Each variant runs in a process of its own, because `telemetry::init` installs the global
//! subscriber once, from the same environment variables the services read:
//!
//! | variant | environment |
//! |---|---|
//! | `off` | `OTEL_SDK_DISABLED=true`, `RUST_LOG=off` |
//! | `logs` | `OTEL_SDK_DISABLED=true` (log lines only) |
//! | `spans` | spans exported over OTLP/gRPC to a receiver in the parent, `RUST_LOG=off` |
//! | `on` | both |
//!
//! The parent runs the variants in turn, `--rounds` times, and prints each one's median CPU
//! per hop and what it adds to `off`. Log lines go to the child's stdout, which is
//! `/dev/null`. It asserts nothing about timing. Run it with
//!
//! ```sh
//! cargo bench --bench traced_hop -- --iterations 5000 --rounds 3
//! ```
//!
//! To count instructions instead (repeatable whatever else the machine runs), start a receiver
//! with `--receiver` (it prints its endpoint) and run one variant under callgrind:
//!
//! ```sh
//! OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:PORT valgrind --tool=callgrind \
//!     target/release/deps/traced_hop-HASH --child on --iterations 2000
//! ```

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::sys::resource::{UsageWho, getrusage};
use ordertrail_shared::db::Database;
use ordertrail_shared::http::{Service, ServiceClient};
use ordertrail_shared::telemetry::{self, TelemetryConfig};
use ordertrail_testkit::receiver;

/// The variants, in the order they run in each round.
const VARIANTS: [&str; 4] = ["off", "logs", "spans", "on"];
/// Hops run before measuring: connections, caches and the SQLite file warm.
const WARMUP: usize = 300;

fn main() -> anyhow::Result<()> {
    let mut iterations = 5000;
    let mut rounds = 3;
    let mut child = None;
    let mut receiver_only = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--bench" => {}
            "--iterations" => iterations = value()?.parse()?,
            "--rounds" => rounds = value()?.parse()?,
            "--child" => child = Some(value()?),
            "--receiver" => receiver_only = true,
            other => anyhow::bail!(
                "unknown argument {other}; known: --iterations N --rounds N --child VARIANT --receiver"
            ),
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match child {
        Some(_) => runtime.block_on(run_hops(iterations)),
        None if receiver_only => runtime.block_on(serve_receiver()),
        None => runtime.block_on(compare(iterations, rounds)),
    }
}

/// A receiver that counts the spans it gets.
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

async fn serve_receiver() -> anyhow::Result<()> {
    let (endpoint, spans) = start_receiver().await?;
    println!("{endpoint}");
    loop {
        tokio::time::sleep(Duration::from_secs(10)).await;
        eprintln!("{} spans received", spans.load(Ordering::Relaxed));
    }
}

/// The parent: every variant in a child process, `rounds` times; the table.
async fn compare(iterations: usize, rounds: usize) -> anyhow::Result<()> {
    let (endpoint, spans) = start_receiver().await?;
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); VARIANTS.len()];
    let mut wall: Vec<Vec<f64>> = vec![Vec::new(); VARIANTS.len()];
    let mut received = vec![0u64; VARIANTS.len()];
    for round in 1..=rounds {
        for (i, variant) in VARIANTS.iter().enumerate() {
            eprintln!("round {round}: {variant}");
            let before = spans.load(Ordering::Relaxed);
            let (cpu_us, wall_us) = run_child(variant, iterations, &endpoint).await?;
            // The child flushed before it exited; the receiver may still be counting.
            tokio::time::sleep(Duration::from_millis(200)).await;
            received[i] += spans.load(Ordering::Relaxed) - before;
            cpu[i].push(cpu_us);
            wall[i].push(wall_us);
        }
    }
    println!(
        "\none hop (client span, server span, query span, one log line), {iterations} hops per run, median of {rounds} runs\n"
    );
    println!("| variant | CPU µs/hop | added to off µs/hop | wall µs/hop | spans/hop |");
    println!("|---|--:|--:|--:|--:|");
    let off = median(&cpu[0]);
    for (i, variant) in VARIANTS.iter().enumerate() {
        // The warm-up's spans are exported too.
        let hops = ((iterations + WARMUP) * rounds) as f64;
        println!(
            "| {variant} | {:.1} | {:+.1} | {:.1} | {:.2} |",
            median(&cpu[i]),
            median(&cpu[i]) - off,
            median(&wall[i]),
            received[i] as f64 / hops,
        );
    }
    Ok(())
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Runs one child and returns its CPU and wall time per hop, in µs.
async fn run_child(variant: &str, iterations: usize, endpoint: &str) -> anyhow::Result<(f64, f64)> {
    let mut command = tokio::process::Command::new(std::env::current_exe()?);
    command
        .args(["--child", variant, "--iterations", &iterations.to_string()])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("OTEL_SERVICE_NAME", "hop")
        // Hops back to back make spans far faster than a service under load does (one process,
        // ~20 000 a second): a queue this deep keeps every one of them, so that each is paid
        // for. A run that still lost spans says so.
        .env("OTEL_BSP_MAX_QUEUE_SIZE", "65536")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    match variant {
        "off" => command
            .env("OTEL_SDK_DISABLED", "true")
            .env("RUST_LOG", "off"),
        "logs" => command.env("OTEL_SDK_DISABLED", "true"),
        "spans" => command
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
            .env("RUST_LOG", "off"),
        _ => command.env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
    };
    let output = tokio::time::timeout(Duration::from_secs(300), command.output())
        .await
        .context("the child took over five minutes")??;
    let stderr = String::from_utf8_lossy(&output.stderr);
    let result = stderr
        .lines()
        .find_map(|line| line.strip_prefix("RESULT "))
        .with_context(|| format!("child {variant} failed: {stderr}"))?;
    if let Some(lost) = stderr.lines().find(|line| line.contains("dropped")) {
        eprintln!("   {variant}: {lost}");
    }
    let (cpu, wall) = result.split_once(' ').context("malformed result")?;
    Ok((cpu.parse()?, wall.parse()?))
}

/// The child: telemetry from the environment, inventory on a fresh SQLite file, the hops.
async fn run_hops(iterations: usize) -> anyhow::Result<()> {
    let guard = telemetry::init(&TelemetryConfig::from_env("hop")?)?;
    let dir = std::env::temp_dir().join(format!("ordertrail-hop-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let url = format!("sqlite://{}/inventory.db?mode=rwc", dir.display());
    let database = Database::connect(&url, &ordertrail_inventory::MIGRATIONS).await?;
    let state = ordertrail_inventory::AppState {
        store: ordertrail_inventory::Store::new(database),
    };
    let service = Service::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
    let client = ServiceClient::new(&format!("http://{}", service.local_addr()?))?;
    let stop = tokio_util::sync::CancellationToken::new();
    let stopped = stop.clone();
    let server = tokio::spawn(
        service.serve(ordertrail_inventory::router(state), async move {
            stopped.cancelled().await
        }),
    );

    for _ in 0..WARMUP {
        hop(&client).await?;
    }
    let cpu_before = cpu_time()?;
    let started = Instant::now();
    for _ in 0..iterations {
        hop(&client).await?;
    }
    let wall = started.elapsed();
    stop.cancel();
    let _ = server.await;
    // Whatever is still queued (spans, lines) is paid for by these hops too.
    drop(guard);
    let cpu = cpu_time()? - cpu_before;
    let _ = std::fs::remove_dir_all(&dir);
    let per_hop = |d: Duration| d.as_secs_f64() * 1e6 / iterations as f64;
    eprintln!("RESULT {:.2} {:.2}", per_hop(cpu), per_hop(wall));
    Ok(())
}

async fn hop(client: &ServiceClient) -> anyhow::Result<()> {
    let response = client.get("/products", "/products").send().await?;
    anyhow::ensure!(response.status().is_success(), "{}", response.status());
    response.bytes().await?;
    Ok(())
}

/// User and system CPU time of this process, all threads.
fn cpu_time() -> anyhow::Result<Duration> {
    let usage = getrusage(UsageWho::RUSAGE_SELF)?;
    let micros = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
    };
    Ok(micros(usage.user_time()) + micros(usage.system_time()))
}
