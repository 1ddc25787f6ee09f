//! The running services: stop, kill, restart, and a child that exits; several replicas of a
//! role behind a [`Balancer`].

use std::collections::BTreeMap;
use std::io;
use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::Child;
use tokio::time::Instant;

use super::balancer::Balancer;
use super::output::Output;
use super::{LaunchError, Launcher, Role};

/// A child that is gone: stopped, killed or exited by itself.
#[derive(Debug)]
pub struct Stopped {
    /// The service.
    pub role: Role,
    /// Which of its replicas, from 0.
    pub replica: usize,
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
    /// The port callers of each role started use: its one replica's, or its balancer's.
    ports: BTreeMap<Role, u16>,
    /// The port of every replica started, kept when it stops, for a restart.
    replica_ports: BTreeMap<(Role, usize), u16>,
    /// In front of each role started with several replicas.
    balancers: BTreeMap<Role, Balancer>,
    running: BTreeMap<(Role, usize), Running>,
    http: reqwest::Client,
}

struct Running {
    child: Child,
    output: Output,
}

impl Services {
    /// No service running yet; [`Launcher::start`] starts them.
    pub(super) fn new(config: Launcher) -> Self {
        Self {
            config,
            ports: BTreeMap::new(),
            replica_ports: BTreeMap::new(),
            balancers: BTreeMap::new(),
            running: BTreeMap::new(),
            http: reqwest::Client::new(),
        }
    }

    /// The port `role` is called on (or was, if it is stopped): its balancer's when it runs
    /// several replicas.
    pub fn port(&self, role: Role) -> u16 {
        self.ports[&role]
    }

    /// `http://127.0.0.1:<port>` of `role` (see [`Services::port`]).
    pub fn url(&self, role: Role) -> String {
        format!("http://127.0.0.1:{}", self.port(role))
    }

    /// How many replicas of `role` were started.
    pub fn replicas(&self, role: Role) -> usize {
        self.replica_ports
            .keys()
            .filter(|(r, _)| *r == role)
            .count()
    }

    /// The port replica `replica` (from 0) of `role` listens on, or listened on.
    pub fn replica_port(&self, role: Role, replica: usize) -> u16 {
        self.replica_ports[&(role, replica)]
    }

    /// `http://127.0.0.1:<port>` of replica `replica` of `role`.
    pub fn replica_url(&self, role: Role, replica: usize) -> String {
        format!("http://127.0.0.1:{}", self.replica_port(role, replica))
    }

    /// The process id of `role` (its first replica), while it runs.
    pub fn pid(&self, role: Role) -> Option<u32> {
        self.running.get(&(role, 0))?.child.id()
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
            .map(|(at, running)| Box::pin(async move { (*at, running.child.wait().await) }));
        let (((role, replica), status), _, _) = futures::future::select_all(waits).await;
        let mut running = self
            .running
            .remove(&(role, replica))
            .expect("a running child");
        running.output.finish().await;
        Stopped {
            role,
            replica,
            status,
            killed: false,
            last_lines: running.output.last_lines(),
        }
    }

    /// Stops `role` (its first replica) with SIGTERM, and SIGKILL if it has not exited within
    /// the stop timeout. `None` when it was not running.
    pub async fn stop(&mut self, role: Role) -> Option<Stopped> {
        self.stop_replica(role, 0).await
    }

    /// Stops replica `replica` of `role` as [`Services::stop`] does.
    pub async fn stop_replica(&mut self, role: Role, replica: usize) -> Option<Stopped> {
        let running = self.running.remove(&(role, replica))?;
        terminate(vec![((role, replica), running)], self.config.stop_timeout)
            .await
            .pop()
    }

    /// Kills `role` (its first replica) with SIGKILL, as a crash would: no drain, no flush.
    /// `None` when it was not running.
    pub async fn kill(&mut self, role: Role) -> Option<Stopped> {
        self.kill_replica(role, 0).await
    }

    /// Kills replica `replica` of `role` as [`Services::kill`] does.
    pub async fn kill_replica(&mut self, role: Role, replica: usize) -> Option<Stopped> {
        let mut running = self.running.remove(&(role, replica))?;
        let _ = running.child.start_kill();
        let status = running.child.wait().await;
        running.output.finish().await;
        Some(Stopped {
            role,
            replica,
            status,
            killed: true,
            last_lines: running.output.last_lines(),
        })
    }

    /// Starts `role` (its first replica) again on its port and waits until it is ready; a
    /// running one is stopped first.
    pub async fn restart(&mut self, role: Role) -> Result<(), LaunchError> {
        self.restart_replica(role, 0).await
    }

    /// Starts replica `replica` of `role` again as [`Services::restart`] does.
    pub async fn restart_replica(&mut self, role: Role, replica: usize) -> Result<(), LaunchError> {
        self.stop_replica(role, replica).await;
        let port = self
            .replica_ports
            .get(&(role, replica))
            .copied()
            .unwrap_or(0);
        self.spawn(role, replica, port).await
    }

    /// Stops every running child, callers first: SIGTERM to each, then SIGKILL to any not gone
    /// within the stop timeout of the first signal, one deadline for all.
    pub async fn stop_all(&mut self) -> Vec<Stopped> {
        let mut children = Vec::new();
        for role in Role::ALL.into_iter().rev() {
            let replicas: Vec<_> = self
                .running
                .keys()
                .filter(|(r, _)| *r == role)
                .copied()
                .collect();
            for at in replicas {
                children.extend(self.running.remove(&at).map(|running| (at, running)));
            }
        }
        terminate(children, self.config.stop_timeout).await
    }

    /// Starts `replicas` replicas of `role` and, for more than one, a [`Balancer`] in front of
    /// them on `port`; one replica listens on `port` itself. Callers started later are given
    /// that port.
    pub(super) async fn spawn_role(
        &mut self,
        role: Role,
        replicas: usize,
        port: u16,
    ) -> Result<(), LaunchError> {
        if replicas <= 1 {
            self.spawn(role, 0, port).await?;
            self.ports.insert(role, self.replica_port(role, 0));
            return Ok(());
        }
        let mut backends = Vec::with_capacity(replicas);
        for replica in 0..replicas {
            self.spawn(role, replica, 0).await?;
            let port = self.replica_port(role, replica);
            backends.push(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
        }
        let listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let balancer = Balancer::start(listen, backends)
            .await
            .map_err(|source| LaunchError::Spawn { role, source })?;
        self.ports.insert(role, balancer.addr().port());
        self.balancers.insert(role, balancer);
        Ok(())
    }

    /// Starts replica `replica` of `role` on `port` and waits until it is ready.
    async fn spawn(&mut self, role: Role, replica: usize, port: u16) -> Result<(), LaunchError> {
        let mut child = self
            .config
            .command(role, port, &self.ports)
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
        self.replica_ports.insert((role, replica), address.port());
        self.running.insert((role, replica), running);
        Ok(())
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
async fn terminate(children: Vec<((Role, usize), Running)>, timeout: Duration) -> Vec<Stopped> {
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
    for ((role, replica), mut running) in children {
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
            replica,
            status,
            killed,
            last_lines: running.output.last_lines(),
        });
    }
    stopped
}
