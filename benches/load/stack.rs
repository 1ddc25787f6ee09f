//! The four services as release processes on 127.0.0.1, over fresh SQLite files or fresh
//! PostgreSQL databases, and what the kernel says each one spent (CPU time, resident memory).

use std::collections::HashMap;
use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sqlx::{Connection as _, Executor as _};
use tokio::process::{Child, Command};

/// The roles, callees first.
pub const ROLES: [&str; 4] = ["inventory", "payment", "order", "gateway"];
/// How long a service may take to answer `/health/ready` after it is spawned.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a service may take to exit after SIGTERM before it is killed.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);
/// `/proc/<pid>/stat` counts CPU time in clock ticks of `USER_HZ`, which Linux fixes at 100
/// for user space whatever the kernel's own tick rate.
const TICKS_PER_SECOND: u64 = 100;

/// Which database the services run on.
#[derive(Debug, Clone)]
pub enum Db {
    /// A SQLite file per service, in the stack's temporary folder.
    Sqlite,
    /// A fresh database per service on this server (a `postgres://` URL).
    Postgres(String),
}

impl Db {
    /// `sqlite` or `postgresql`, to print.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres(_) => "postgresql",
        }
    }
}

/// Whether telemetry is fully on (every span exported over OTLP/gRPC to `endpoint`, JSON lines
/// written to a file per service) or off (`OTEL_SDK_DISABLED=true`, `RUST_LOG=off`).
#[derive(Debug, Clone)]
pub enum Telemetry {
    /// Spans to this OTLP/gRPC endpoint, log lines on.
    On {
        /// `http://127.0.0.1:port` of the receiver.
        endpoint: String,
    },
    /// Nothing exported, no log lines.
    Off,
}

/// CPU time and resident memory of one process at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// utime + stime, all threads, in clock ticks.
    pub cpu_ticks: u64,
    /// VmRSS, in KiB.
    pub rss_kib: u64,
}

impl Usage {
    /// The CPU time of `ticks`.
    pub fn cpu(ticks: u64) -> Duration {
        Duration::from_micros(ticks * 1_000_000 / TICKS_PER_SECOND)
    }
}

/// The four services of one configuration, running as child processes.
pub struct Stack {
    /// The gateway's base URL.
    pub gateway: String,
    /// The inventory's base URL (for restocking, which the gateway does not expose).
    pub inventory: String,
    children: Vec<(&'static str, Child)>,
    dir: PathBuf,
    postgres: Option<(String, Vec<String>)>,
}

impl Stack {
    /// Spawns the four services on `db` with `telemetry` and `extra_env`, and waits until each
    /// is ready.
    pub async fn start(
        http: &reqwest::Client,
        db: &Db,
        telemetry: &Telemetry,
        label: &str,
        extra_env: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let unique = format!(
            "{}_{}",
            std::process::id(),
            SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos()
        );
        let dir = std::env::temp_dir().join(format!("ordertrail-load-{label}-{unique}"));
        std::fs::create_dir_all(&dir)?;
        let mut ports = HashMap::new();
        for role in ROLES {
            ports.insert(role, free_port()?);
        }
        let url = |role: &str| format!("http://127.0.0.1:{}", ports[role]);
        let mut stack = Self {
            gateway: url("gateway"),
            inventory: url("inventory"),
            children: Vec::new(),
            dir: dir.clone(),
            postgres: None,
        };
        let database_urls: HashMap<&str, String> = match db {
            Db::Sqlite => ROLES
                .iter()
                .map(|&role| {
                    (
                        role,
                        format!("sqlite://{}/{role}.db?mode=rwc", dir.display()),
                    )
                })
                .collect(),
            Db::Postgres(server) => {
                let names: Vec<String> = ROLES
                    .iter()
                    .map(|role| format!("ordertrail_bench_{unique}_{label}_{role}"))
                    .collect();
                create_databases(server, &names).await?;
                stack.postgres = Some((server.clone(), names.clone()));
                ROLES
                    .iter()
                    .zip(&names)
                    .map(|(&role, name)| (role, database_url(server, name)))
                    .collect()
            }
        };
        for role in ROLES {
            let log = std::fs::File::create(dir.join(format!("{role}.log")))?;
            let mut command = Command::new(binary());
            command
                .args(["serve", role])
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("OTEL_SERVICE_NAME", role)
                .env("LISTEN_ADDR", format!("127.0.0.1:{}", ports[role]))
                .env("DATABASE_URL", &database_urls[role])
                .env("ORDER_URL", url("order"))
                .env("PAYMENT_URL", url("payment"))
                .env("INVENTORY_URL", url("inventory"))
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .envs(extra_env.iter().map(|(k, v)| (k, v)));
            match telemetry {
                Telemetry::On { endpoint } => {
                    command.env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint);
                }
                Telemetry::Off => {
                    command
                        .env("OTEL_SDK_DISABLED", "true")
                        .env("RUST_LOG", "off");
                }
            }
            let child = command
                .spawn()
                .with_context(|| format!("spawning {role}"))?;
            eprintln!("{label} {role}: pid {}", child.id().unwrap_or_default());
            stack.children.push((role, child));
        }
        for role in ROLES {
            wait_ready(http, &url(role), role).await?;
        }
        Ok(stack)
    }

    /// The file `role`'s stdout goes to.
    pub fn log_file(&self, role: &str) -> PathBuf {
        self.dir.join(format!("{role}.log"))
    }

    /// The name of `role`'s PostgreSQL database (`None` on SQLite).
    pub fn database(&self, role: &str) -> Option<&str> {
        let (_, names) = self.postgres.as_ref()?;
        ROLES
            .iter()
            .position(|&r| r == role)
            .map(|i| names[i].as_str())
    }

    /// Each service's CPU time and memory now, in [`ROLES`] order.
    pub fn usage(&self) -> anyhow::Result<Vec<Usage>> {
        self.children
            .iter()
            .map(|(role, child)| {
                let pid = child.id().with_context(|| format!("{role} has exited"))?;
                usage_of(pid).with_context(|| format!("reading /proc of {role}"))
            })
            .collect()
    }

    /// Stops the four (SIGTERM, then SIGKILL after [`EXIT_TIMEOUT`]) and drops the databases.
    pub async fn stop(mut self) {
        for (_, child) in &self.children {
            if let Some(pid) = child.id() {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            }
        }
        for (_, mut child) in self.children.drain(..) {
            if tokio::time::timeout(EXIT_TIMEOUT, child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
        if let Some((server, names)) = self.postgres.take()
            && let Err(err) = drop_databases(&server, &names).await
        {
            eprintln!("bench databases {names:?} not dropped: {err}");
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// This process's CPU time and memory (the load and the span receiver).
pub fn own_usage() -> anyhow::Result<Usage> {
    usage_of(std::process::id())
}

/// The binary to run: `ORDERTRAIL_BENCH_BIN` if set (to measure another build, say the one
/// before a change), else the one cargo built with this benchmark.
fn binary() -> PathBuf {
    std::env::var_os("ORDERTRAIL_BENCH_BIN")
        .map_or_else(|| env!("CARGO_BIN_EXE_ordertrail").into(), PathBuf::from)
}

/// utime + stime (fields 14 and 15 of `/proc/<pid>/stat`, counted after the command name,
/// which may hold spaces) and VmRSS of `pid`.
pub fn usage_of(pid: u32) -> anyhow::Result<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("no command name in stat")?;
    // After the name: state is field 3, so utime (14) and stime (15) are the 12th and 13th.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |index: usize| -> anyhow::Result<u64> {
        Ok(fields.get(index).context("short stat")?.parse()?)
    };
    let cpu_ticks = ticks(11)? + ticks(12)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .unwrap_or_default();
    Ok(Usage { cpu_ticks, rss_kib })
}

async fn wait_ready(http: &reqwest::Client, base: &str, role: &str) -> anyhow::Result<()> {
    let url = format!("{base}/health/ready");
    let deadline = Instant::now() + READY_TIMEOUT;
    while Instant::now() < deadline {
        if http
            .get(&url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("{role} was not ready within {READY_TIMEOUT:?}")
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

async fn create_databases(server: &str, names: &[String]) -> anyhow::Result<()> {
    sqlx::any::install_default_drivers();
    let mut admin = sqlx::AnyConnection::connect(server)
        .await
        .with_context(|| format!("connecting to {server}"))?;
    for name in names {
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await?;
    }
    admin.close().await?;
    Ok(())
}

async fn drop_databases(server: &str, names: &[String]) -> anyhow::Result<()> {
    let mut admin = sqlx::AnyConnection::connect(server).await?;
    for name in names {
        admin
            .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
            .await?;
    }
    admin.close().await?;
    Ok(())
}

/// `server` (a URL, perhaps with a database and a query) with its database replaced by `name`.
pub fn database_url(server: &str, name: &str) -> String {
    let (base, query) = server
        .split_once('?')
        .map_or((server, None), |(base, query)| (base, Some(query)));
    let base = match base.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('/') {
            Some((authority, _)) => format!("{scheme}://{authority}"),
            None => base.to_owned(),
        },
        None => base.to_owned(),
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}
