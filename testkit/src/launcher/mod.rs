//! The four services as child processes of the `ordertrail` binary, on 127.0.0.1: the one way
//! `ordertrail up`, the end-to-end tests and the benchmarks start them.
//!
//! Callees start first, each on its given port or on port 0. Port 0 lets the service pick a
//! free port when it binds, so that no other process can take the port between a pick and the
//! bind; the launcher learns the address from the service's "listening" log line, tells its
//! callers (`INVENTORY_URL`, `PAYMENT_URL`, `ORDER_URL`) and waits until it answers
//! `/health/ready`. A child that exits meanwhile fails the start at once with its exit status
//! and last lines, and the children already running are stopped.
//!
//! Children log ECS JSON (`LOG_FORMAT=json`, whatever the environment says) into pipes the
//! launcher reads: each line goes to [`Launcher::on_line`], and the last few are kept for the
//! error messages.
//!
//! It is not a supervisor: a child that exits later is reported by [`Services::exited`], not
//! restarted.

mod output;
mod role;

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::time::Instant;

pub use output::{Line, Stream};
use output::{Output, Sink};
pub use role::{Role, UnknownRole};

/// How long a child may take to say where it listens and answer `/health/ready`, by default.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a child may take to exit after SIGTERM before it gets SIGKILL, by default.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// The target of the "listening" line. Whatever `RUST_LOG` says, the launcher lets this line
/// through (`RUST_LOG=off` included), since it learns a service's port from it.
const LISTENING_TARGET: &str = "ordertrail_shared::http::service";

/// How to start the four services. [`Launcher::start`] starts them.
pub struct Launcher {
    program: PathBuf,
    inherit_env: bool,
    /// In order; `None` removes the variable.
    env: Vec<(String, Option<String>)>,
    role_env: Vec<(Role, String, String)>,
    ports: BTreeMap<Role, u16>,
    sink: Sink,
    ready_timeout: Duration,
    stop_timeout: Duration,
}

impl Launcher {
    /// Runs `program serve <role>` for each role: `program` is the `ordertrail` binary.
    ///
    /// By default each child inherits this process's environment (less `DATABASE_URL`, which
    /// must never reach all four), takes a free port, and its lines are only kept for errors.
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            inherit_env: true,
            env: Vec::new(),
            role_env: Vec::new(),
            ports: BTreeMap::new(),
            sink: Arc::new(|_| {}),
            ready_timeout: READY_TIMEOUT,
            stop_timeout: STOP_TIMEOUT,
        }
    }

    /// Children inherit no variable of this process but `PATH`.
    pub fn env_clear(mut self) -> Self {
        self.inherit_env = false;
        self
    }

    /// Sets `key` for every child.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), Some(value.into())));
        self
    }

    /// Removes `key` from every child's environment.
    pub fn env_remove(mut self, key: impl Into<String>) -> Self {
        self.env.push((key.into(), None));
        self
    }

    /// Sets `key` for `role` only (its `DATABASE_URL`, say), after the variables of all.
    pub fn role_env(
        mut self,
        role: Role,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        self.role_env.push((role, key.into(), value.into()));
        self
    }

    /// `role` listens on `port` of 127.0.0.1; 0, the default, lets it take a free one.
    pub fn port(mut self, role: Role, port: u16) -> Self {
        self.ports.insert(role, port);
        self
    }

    /// Hands every line a child writes, on either stream, to `sink` (which must not block:
    /// it runs on the task that reads the child's pipe).
    pub fn on_line(mut self, sink: impl Fn(Line<'_>) + Send + Sync + 'static) -> Self {
        self.sink = Arc::new(sink);
        self
    }

    /// How long each child may take to become ready ([`READY_TIMEOUT`] by default).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// How long a stopped child may take to exit before it is killed ([`STOP_TIMEOUT`] by
    /// default).
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    /// Starts the four, callees first, each once the one before is ready. When one cannot
    /// start, those already running are stopped and the error says why.
    pub async fn start(self) -> Result<Services, LaunchError> {
        let mut services = Services {
            config: self,
            ports: BTreeMap::new(),
            running: BTreeMap::new(),
            http: reqwest::Client::new(),
        };
        for role in Role::ALL {
            let port = services.config.ports.get(&role).copied().unwrap_or(0);
            if let Err(err) = services.spawn(role, port).await {
                services.stop_all().await;
                return Err(err);
            }
        }
        Ok(services)
    }
}

/// Why a service could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The program could not be run.
    #[error("cannot start {role}: {source}")]
    Spawn {
        /// The service.
        role: Role,
        /// What running the program said.
        source: io::Error,
    },
    /// The child exited before it was ready (its port taken, a bad setting, …).
    #[error("{role} exited during start ({}){}", Status(status), Tail(last_lines))]
    Exited {
        /// The service.
        role: Role,
        /// Its exit status, if it could be read.
        status: Option<ExitStatus>,
        /// Its last lines, stdout and stderr, oldest first.
        last_lines: Vec<String>,
    },
    /// The child did not become ready in time; it was killed.
    #[error(
        "{role} was not ready within {timeout:?}: {missing}{}",
        Tail(last_lines)
    )]
    NotReady {
        /// The service.
        role: Role,
        /// The time it had.
        timeout: Duration,
        /// What it did not do: say where it listens, or answer `/health/ready`.
        missing: String,
        /// Its last lines, stdout and stderr, oldest first.
        last_lines: Vec<String>,
    },
}

impl LaunchError {
    /// The service that could not be started.
    pub fn role(&self) -> Role {
        match self {
            Self::Spawn { role, .. } | Self::Exited { role, .. } | Self::NotReady { role, .. } => {
                *role
            }
        }
    }
}

/// A child that is gone: stopped, killed or exited by itself.
#[derive(Debug)]
pub struct Stopped {
    /// The service.
    pub role: Role,
    /// Its exit status.
    pub status: io::Result<ExitStatus>,
    /// Whether it got SIGKILL: killed, or stopped but not gone within the stop timeout.
    pub killed: bool,
    /// Its last lines, stdout and stderr, oldest first.
    pub last_lines: Vec<String>,
}

/// The running services. Dropping it kills those still running (SIGKILL); stop them first
/// to let them drain and flush their telemetry.
pub struct Services {
    config: Launcher,
    /// The port of every role started, kept when it stops, for a restart.
    ports: BTreeMap<Role, u16>,
    running: BTreeMap<Role, Running>,
    http: reqwest::Client,
}

struct Running {
    child: Child,
    output: Output,
}

impl Services {
    /// The port `role` listens on (or listened on, if it is stopped).
    pub fn port(&self, role: Role) -> u16 {
        self.ports[&role]
    }

    /// `http://127.0.0.1:<port>` of `role`.
    pub fn url(&self, role: Role) -> String {
        format!("http://127.0.0.1:{}", self.port(role))
    }

    /// The process id of `role`, while it runs.
    pub fn pid(&self, role: Role) -> Option<u32> {
        self.running.get(&role)?.child.id()
    }

    /// Waits until a running child exits by itself and reports it; pending for ever when none
    /// runs. Cancel-safe: use it in `tokio::select!`.
    pub async fn exited(&mut self) -> Stopped {
        if self.running.is_empty() {
            return std::future::pending().await;
        }
        let waits = self
            .running
            .iter_mut()
            .map(|(role, running)| Box::pin(async move { (*role, running.child.wait().await) }));
        let ((role, status), _, _) = futures::future::select_all(waits).await;
        let mut running = self.running.remove(&role).expect("a running child");
        running.output.finish().await;
        Stopped {
            role,
            status,
            killed: false,
            last_lines: running.output.last_lines(),
        }
    }

    /// Stops `role` with SIGTERM, and SIGKILL if it has not exited within the stop timeout.
    /// `None` when it was not running.
    pub async fn stop(&mut self, role: Role) -> Option<Stopped> {
        let running = self.running.remove(&role)?;
        terminate(vec![(role, running)], self.config.stop_timeout)
            .await
            .pop()
    }

    /// Kills `role` with SIGKILL, as a crash would: no drain, no flush. `None` when it was not
    /// running.
    pub async fn kill(&mut self, role: Role) -> Option<Stopped> {
        let mut running = self.running.remove(&role)?;
        let _ = running.child.start_kill();
        let status = running.child.wait().await;
        running.output.finish().await;
        Some(Stopped {
            role,
            status,
            killed: true,
            last_lines: running.output.last_lines(),
        })
    }

    /// Starts `role` again on its port and waits until it is ready; a running one is stopped
    /// first.
    pub async fn restart(&mut self, role: Role) -> Result<(), LaunchError> {
        self.stop(role).await;
        let port = self.ports.get(&role).copied().unwrap_or(0);
        self.spawn(role, port).await
    }

    /// Stops every running child, callers first: SIGTERM to each, then SIGKILL to any not gone
    /// within the stop timeout of the first signal, one deadline for all.
    pub async fn stop_all(&mut self) -> Vec<Stopped> {
        let children = Role::ALL
            .into_iter()
            .rev()
            .filter_map(|role| Some((role, self.running.remove(&role)?)))
            .collect();
        terminate(children, self.config.stop_timeout).await
    }

    /// Starts `role` on `port` and waits until it is ready.
    async fn spawn(&mut self, role: Role, port: u16) -> Result<(), LaunchError> {
        let mut child = self
            .command(role, port)
            .spawn()
            .map_err(|source| LaunchError::Spawn { role, source })?;
        let (output, listening) = Output::capture(role, &mut child, &self.config.sink);
        let mut running = Running { child, output };
        let timeout = self.config.ready_timeout;
        let deadline = Instant::now() + timeout;

        let address = match until_exit(&mut running.child, deadline, listening).await {
            Waited::Done(Ok(address)) => address,
            // Its stdout ended without the line: it is on its way out.
            Waited::Done(Err(_)) => {
                let exit = until_exit(&mut running.child, deadline, std::future::pending::<()>());
                match exit.await {
                    Waited::Exited(status) => return Err(exited(role, running, status).await),
                    _ => {
                        return Err(not_ready(role, running, timeout, "it closed its stdout").await);
                    }
                }
            }
            Waited::Exited(status) => return Err(exited(role, running, status).await),
            Waited::TimedOut => {
                let missing = "it did not log where it listens";
                return Err(not_ready(role, running, timeout, missing).await);
            }
        };
        let url = format!("http://{address}/health/ready");
        match until_exit(&mut running.child, deadline, ready(&self.http, &url)).await {
            Waited::Done(()) => {}
            Waited::Exited(status) => return Err(exited(role, running, status).await),
            Waited::TimedOut => {
                let missing = format!("no 2xx from {url}");
                return Err(not_ready(role, running, timeout, missing).await);
            }
        }
        self.ports.insert(role, address.port());
        self.running.insert(role, running);
        Ok(())
    }

    /// `program serve <role>` with the launcher's environment, its port and its callees'
    /// addresses.
    fn command(&self, role: Role, port: u16) -> Command {
        let config = &self.config;
        let mut command = Command::new(&config.program);
        command.arg("serve").arg(role.name());
        if !config.inherit_env {
            command.env_clear();
            if let Some(path) = std::env::var_os("PATH") {
                command.env("PATH", path);
            }
        }
        // Services never share a database: a DATABASE_URL exported for one must not reach all.
        command.env_remove("DATABASE_URL");
        command.env("OTEL_SERVICE_NAME", role.name());
        for (key, value) in &config.env {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        for (_, key, value) in config.role_env.iter().filter(|(r, ..)| *r == role) {
            command.env(key, value);
        }
        // What the launcher relies on comes last, so that nothing above overrides it.
        command
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("LOG_FORMAT", "json");
        for callee in Role::ALL {
            let Some(var) = callee.url_var() else {
                continue;
            };
            // Callees start first: a role not started yet is not one this one calls.
            match self.ports.get(&callee) {
                Some(port) => command.env(var, format!("http://127.0.0.1:{port}")),
                None => command.env_remove(var),
            };
        }
        if let Some(filter) = self.log_filter(role) {
            command.env("RUST_LOG", format!("{filter},{LISTENING_TARGET}=info"));
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    /// The `RUST_LOG` `role` would get, when one is set (unset, the services log at `info`).
    fn log_filter(&self, role: Role) -> Option<String> {
        let config = &self.config;
        let mut filter = if config.inherit_env {
            std::env::var("RUST_LOG").ok()
        } else {
            None
        };
        for (key, value) in &config.env {
            if key == "RUST_LOG" {
                filter.clone_from(value);
            }
        }
        for (r, key, value) in &config.role_env {
            if *r == role && key == "RUST_LOG" {
                filter = Some(value.clone());
            }
        }
        filter.filter(|filter| !filter.trim().is_empty())
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        for running in self.running.values_mut() {
            let _ = running.child.start_kill();
        }
    }
}

/// What came first while a child started.
enum Waited<T> {
    Done(T),
    Exited(io::Result<ExitStatus>),
    TimedOut,
}

/// Runs `work` until it completes, `child` exits or `deadline` passes.
async fn until_exit<T>(
    child: &mut Child,
    deadline: Instant,
    work: impl Future<Output = T>,
) -> Waited<T> {
    tokio::select! {
        value = work => Waited::Done(value),
        status = child.wait() => Waited::Exited(status),
        () = tokio::time::sleep_until(deadline) => Waited::TimedOut,
    }
}

/// Completes once `url` answers 2xx.
async fn ready(http: &reqwest::Client, url: &str) {
    loop {
        let answer = http.get(url).timeout(Duration::from_secs(1)).send().await;
        if answer.is_ok_and(|answer| answer.status().is_success()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn exited(role: Role, mut running: Running, status: io::Result<ExitStatus>) -> LaunchError {
    running.output.finish().await;
    LaunchError::Exited {
        role,
        status: status.ok(),
        last_lines: running.output.last_lines(),
    }
}

async fn not_ready(
    role: Role,
    mut running: Running,
    timeout: Duration,
    missing: impl Into<String>,
) -> LaunchError {
    let _ = running.child.start_kill();
    let _ = running.child.wait().await;
    running.output.finish().await;
    LaunchError::NotReady {
        role,
        timeout,
        missing: missing.into(),
        last_lines: running.output.last_lines(),
    }
}

/// SIGTERM to each child in turn, then SIGKILL to any not gone by `timeout` after the first.
async fn terminate(children: Vec<(Role, Running)>, timeout: Duration) -> Vec<Stopped> {
    for (_, running) in &children {
        // `id` is `None` once the child has been waited for: its pid may be another's now.
        if let Some(pid) = running.child.id().and_then(|pid| i32::try_from(pid).ok()) {
            // SIGTERM lets the service drain requests and flush its spans; tokio's own kill
            // would send SIGKILL.
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }
    let deadline = Instant::now() + timeout;
    let mut stopped = Vec::new();
    for (role, mut running) in children {
        let (status, killed) = match tokio::time::timeout_at(deadline, running.child.wait()).await {
            Ok(status) => (status, false),
            Err(_) => {
                let _ = running.child.start_kill();
                (running.child.wait().await, true)
            }
        };
        running.output.finish().await;
        stopped.push(Stopped {
            role,
            status,
            killed,
            last_lines: running.output.last_lines(),
        });
    }
    stopped
}

/// An exit status, or that it is unknown.
struct Status<'a>(&'a Option<ExitStatus>);

impl std::fmt::Display for Status<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(status) => write!(f, "{status}"),
            None => f.write_str("exit status unknown"),
        }
    }
}

/// A child's last lines, each on a line of its own, indented.
struct Tail<'a>(&'a [String]);

impl std::fmt::Display for Tail<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return f.write_str("; it wrote nothing");
        }
        f.write_str("; its last lines:")?;
        for line in self.0 {
            write!(f, "\n  {line}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
