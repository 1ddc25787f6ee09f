//! `ordertrail up`: the four services as child processes of this one, on this machine.
//!
//! Each child is this same binary running `serve <role>`, started by the test kit's launcher,
//! with SQLite under `./var` and its JSON log in `./var/log/<role>.log`. Spans go to the
//! built-in trace console unless `OTEL_EXPORTER_OTLP_ENDPOINT` points at a collector (a Jaeger
//! on localhost:4317, say).

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context as _;
use ordertrail_testkit::launcher::{Launcher, Line, Role};

use crate::console;

/// Where `up` puts the services.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The gateway's port on 127.0.0.1; 0 takes a free one [default: 8080, or a free one with
    /// --free-ports].
    #[arg(long, value_name = "PORT")]
    gateway_port: Option<u16>,
    /// Every service takes a free port instead of 8080–8083 (printed at start), so that a
    /// second stack or another program can keep those; --gateway-port still sets the gateway's.
    #[arg(long)]
    free_ports: bool,
}

impl Args {
    /// The port `role` listens on; 0 is a free one.
    fn port(&self, role: Role) -> u16 {
        let default = if self.free_ports {
            0
        } else {
            role.default_port()
        };
        match role {
            Role::Gateway => self.gateway_port.unwrap_or(default),
            _ => default,
        }
    }
}

/// Runs the four services until Ctrl-C or until one of them exits.
pub async fn run(args: Args) -> anyhow::Result<()> {
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

    let logs = LogFiles::open(Path::new("var/log"))?;
    let mut launcher = Launcher::new(exe)
        // The console or collector above gets every span; a traces endpoint set for something
        // else must not take them.
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .on_line(move |line| logs.write(line));
    if let Some(console) = &console {
        // The console speaks OTLP over gRPC only.
        launcher = launcher
            .env(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://{}", console.addr),
            )
            .env_remove("OTEL_EXPORTER_OTLP_PROTOCOL")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL");
    }
    for role in Role::ALL {
        launcher = launcher.port(role, args.port(role));
    }
    let mut services = match launcher.start().await {
        Ok(services) => services,
        Err(err) => {
            // The launcher has stopped the others already.
            if let Some(console) = console {
                console.finish().await;
            }
            anyhow::bail!("{err}\nthe whole log: var/log/{}.log", err.role());
        }
    };
    let gateway = services.port(Role::Gateway);
    let ports: Vec<String> = Role::ALL
        .iter()
        .rev()
        .map(|&role| format!("{role} {}", services.port(role)))
        .collect();
    println!(
        "ordertrail is up: gateway on http://localhost:{gateway} (logs in var/log/, Ctrl-C stops)"
    );
    println!("ports: {}", ports.join(", "));
    println!("try: curl -s localhost:{gateway}/api/products");

    let exited = tokio::select! {
        () = ordertrail_shared::shutdown::signal() => None,
        stopped = services.exited() => Some(stopped),
    };
    println!("stopping…");
    for stopped in services.stop_all().await {
        if stopped.killed {
            eprintln!("{} did not stop in time; killed it", stopped.role);
        }
    }
    if let Some(console) = console {
        console.finish().await;
    }
    match exited {
        Some(stopped) => {
            let status = match &stopped.status {
                Ok(status) => status.to_string(),
                Err(err) => format!("exit status unknown: {err}"),
            };
            let lines: String = stopped
                .last_lines
                .iter()
                .map(|line| format!("\n  {line}"))
                .collect();
            anyhow::bail!(
                "{role} exited ({status}); its last lines:{lines}\nthe whole log: var/log/{role}.log",
                role = stopped.role
            )
        }
        None => Ok(()),
    }
}

/// `var/log/<role>.log`, appended to, one per role.
struct LogFiles(HashMap<Role, File>);

impl LogFiles {
    fn open(dir: &Path) -> anyhow::Result<Self> {
        let mut files = HashMap::new();
        for role in Role::ALL {
            let path = dir.join(format!("{role}.log"));
            let file = File::options()
                .create(true)
                .append(true)
                .open(&path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            files.insert(role, file);
        }
        Ok(Self(files))
    }

    /// Appends `line`, stdout's and stderr's alike, as the services wrote them.
    fn write(&self, line: Line<'_>) {
        let mut bytes = Vec::with_capacity(line.text.len() + 1);
        bytes.extend_from_slice(line.text.as_bytes());
        bytes.push(b'\n');
        // One write per line, so that lines of stdout and stderr never interleave; a line
        // that cannot be written is lost, as the service's own writer would lose it.
        let _ = (&self.0[&line.role]).write_all(&bytes);
    }
}
