//! `ordertrail up`: the four services as child processes of this one, on this machine.
//!
//! Each child is this same binary running `serve <role>`, with SQLite under `./var` and its
//! JSON log in `./var/log/<role>.log`. Spans go to the built-in trace console unless
//! `OTEL_EXPORTER_OTLP_ENDPOINT` points at a collector (a Jaeger on localhost:4317, say).

use std::fs::{self, File};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use crate::console;

/// The roles in start order: callees before their callers.
const ROLES: [(&str, u16); 4] = [
    ("inventory", 8083),
    ("payment", 8082),
    ("order", 8081),
    ("gateway", 8080),
];
/// How long a child may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a child may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the four services until Ctrl-C or until one of them exits.
pub async fn run() -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find this program's own path")?;
    fs::create_dir_all("var/log").context("cannot create ./var/log")?;

    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty());
    let console = match endpoint {
        Some(endpoint) => {
            println!("spans go to {endpoint}");
            None
        }
        None => Some(console::start(SocketAddr::from(([127, 0, 0, 1], 0))).await?),
    };
    let endpoint = match &console {
        Some(console) => format!("http://{}", console.addr),
        None => String::new(),
    };

    let mut children = Vec::new();
    for (role, port) in ROLES {
        let log = File::options()
            .create(true)
            .append(true)
            .open(Path::new("var/log").join(format!("{role}.log")))?;
        let mut command = Command::new(&exe);
        command
            .args(["serve", role])
            // A variable exported for one service (DATABASE_URL, say) must not reach all four:
            // each child gets its own defaults (SQLite under ./var, siblings on 127.0.0.1).
            .env_remove("DATABASE_URL")
            .env_remove("ORDER_URL")
            .env_remove("PAYMENT_URL")
            .env_remove("INVENTORY_URL")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .env("OTEL_SERVICE_NAME", role)
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        if !endpoint.is_empty() {
            // The console speaks OTLP over gRPC only.
            command
                .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
                .env_remove("OTEL_EXPORTER_OTLP_PROTOCOL")
                .env_remove("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL");
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {role}"))?;
        children.push((role, child));
        if let Err(err) = wait_ready(port).await {
            stop(&mut children).await;
            return Err(err.context(format!(
                "{role} did not become ready; see var/log/{role}.log"
            )));
        }
    }
    println!("ordertrail is up: gateway on http://localhost:8080 (logs in var/log/, Ctrl-C stops)");
    println!("try: curl -s localhost:8080/api/products");

    let exited = tokio::select! {
        () = ordertrail_shared::shutdown::signal() => None,
        role = first_exit(&mut children) => Some(role),
    };
    println!("stopping…");
    stop(&mut children).await;
    if let Some(console) = console {
        console.finish().await;
    }
    match exited {
        Some(role) => anyhow::bail!("{role} exited; see var/log/{role}.log"),
        None => Ok(()),
    }
}

async fn wait_ready(port: u16) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()?;
    let url = format!("http://127.0.0.1:{port}/health/ready");
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    while tokio::time::Instant::now() < deadline {
        if client
            .get(&url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("no answer from {url}")
}

/// Completes with the role of the first child that exits.
async fn first_exit(children: &mut [(&'static str, Child)]) -> &'static str {
    let waits = children.iter_mut().map(|(role, child)| {
        Box::pin(async move {
            let _ = child.wait().await;
            *role
        })
    });
    futures::future::select_all(waits).await.0
}

/// SIGTERM to every child, callers first, then SIGKILL to any that has not stopped within
/// [`STOP_TIMEOUT`] of the first signal, one deadline for all. (Ctrl-C in a terminal also
/// reaches the children directly, as SIGINT to the whole process group; each then drains its
/// own requests.)
async fn stop(children: &mut Vec<(&'static str, Child)>) {
    for (_, child) in children.iter().rev() {
        if let Some(pid) = child.id() {
            // SIGTERM lets the service drain requests and flush its spans; tokio's own kill
            // would send SIGKILL.
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
    }
    let deadline = tokio::time::Instant::now() + STOP_TIMEOUT;
    while let Some((role, mut child)) = children.pop() {
        if tokio::time::timeout_at(deadline, child.wait())
            .await
            .is_err()
        {
            eprintln!("{role} did not stop in time; killing it");
            let _ = child.kill().await;
        }
    }
}
