//! The four services as child processes of the `ordertrail` binary, on 127.0.0.1: the one way
//! `ordertrail up`, the end-to-end tests and the `telemetry_down` bench start them
//! (`benches/load` still starts its own).
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
//! A role may run as several replicas ([`Launcher::replicas`]), each on a port of its own,
//! behind a round-robin [`Balancer`] that its callers are given instead, as a Kubernetes
//! Service stands in front of pods.
//!
//! It is not a supervisor: a child that exits later is reported by [`Services::exited`], not
//! restarted.

mod balancer;
mod error;
mod output;
mod role;
mod services;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::process::Command;

pub use balancer::Balancer;
pub use error::LaunchError;
use output::Sink;
pub use output::{Line, Stream};
pub use role::{Role, UnknownRole};
pub use services::{Services, Stopped};

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
    replicas: BTreeMap<Role, usize>,
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
            replicas: BTreeMap::new(),
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

    /// Runs `count` replicas of `role` (1 by default), each on a free port, behind a
    /// [`Balancer`] on the role's port: its callers are given the balancer's address.
    pub fn replicas(mut self, role: Role, count: usize) -> Self {
        self.replicas.insert(role, count);
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
        let ports = self.ports.clone();
        let replicas = self.replicas.clone();
        let mut services = Services::new(self);
        for role in Role::ALL {
            let port = ports.get(&role).copied().unwrap_or(0);
            let count = replicas.get(&role).copied().unwrap_or(1);
            if let Err(err) = services.spawn_role(role, count, port).await {
                services.stop_all().await;
                return Err(err);
            }
        }
        Ok(services)
    }

    /// `program serve <role>` with the launcher's environment, its port and the addresses of
    /// the callees `started` so far.
    pub(super) fn command(&self, role: Role, port: u16, started: &BTreeMap<Role, u16>) -> Command {
        let mut command = Command::new(&self.program);
        command.arg("serve").arg(role.name());
        if !self.inherit_env {
            command.env_clear();
            if let Some(path) = std::env::var_os("PATH") {
                command.env("PATH", path);
            }
        }
        // Services never share a database: a DATABASE_URL exported for one must not reach all.
        command.env_remove("DATABASE_URL");
        command.env("OTEL_SERVICE_NAME", role.name());
        for (key, value) in &self.env {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        for (_, key, value) in self.role_env.iter().filter(|(r, ..)| *r == role) {
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
            match started.get(&callee) {
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
        let mut filter = if self.inherit_env {
            std::env::var("RUST_LOG").ok()
        } else {
            None
        };
        for (key, value) in &self.env {
            if key == "RUST_LOG" {
                filter.clone_from(value);
            }
        }
        for (r, key, value) in &self.role_env {
            if *r == role && key == "RUST_LOG" {
                filter = Some(value.clone());
            }
        }
        filter.filter(|filter| !filter.trim().is_empty())
    }
}

#[cfg(test)]
mod tests;
