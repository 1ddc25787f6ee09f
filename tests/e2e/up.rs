//! `ordertrail up` as a real process, in a folder of its own: with the gateway's port taken it
//! exits at once with the reason and leaves no service running; on free ports it says where
//! the gateway is, serves, and stops on SIGTERM.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// `ordertrail up` with `args`, in `dir`, with nothing of this process's environment but
/// `PATH` and `extra`.
fn up(dir: &Path, args: &[&str], extra: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ordertrail"));
    command
        .arg("up")
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(extra.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// A fresh folder for one run's `var/`.
fn folder(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ordertrail-up-{test}-{}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The processes working in `dir`: the services `up` started there, while they run.
fn processes_in(dir: &Path) -> Vec<String> {
    let dir = dir.canonicalize().unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            (std::fs::read_link(path.join("cwd")).ok()? == dir).then(|| {
                let cmdline = std::fs::read(path.join("cmdline")).unwrap_or_default();
                String::from_utf8_lossy(&cmdline).replace('\0', " ")
            })
        })
        .collect()
}

#[tokio::test]
async fn up_exits_at_once_with_the_reason_when_the_gateway_port_is_taken() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let dir = folder("taken");

    // The others on free ports, so that whatever holds 8081-8083 on this machine cannot fail
    // them first.
    let run = up(&dir, &["--free-ports", "--gateway-port", &port], &[]).output();
    let output = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("up exits within seconds")
        .unwrap();

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "up exited 0: {stderr}");
    assert!(
        stderr.contains("gateway exited during start"),
        "no reason given: {stderr}"
    );
    assert!(
        stderr.contains("Address already in use"),
        "no reason given: {stderr}"
    );
    assert!(stderr.contains("var/log/gateway.log"), "{stderr}");
    let inventory = std::fs::read_to_string(dir.join("var/log/inventory.log")).unwrap();
    assert!(
        inventory.contains(r#""message":"listening""#),
        "inventory had started: {inventory}"
    );
    assert_eq!(processes_in(&dir), Vec::<String>::new(), "left running");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn up_on_free_ports_says_where_the_gateway_is_and_stops_on_sigterm() {
    let dir = folder("free");
    // RUST_LOG=off hides every line but the one the launcher learns each port from.
    let mut child = up(&dir, &["--free-ports"], &[("RUST_LOG", "off")])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let announced = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = stdout.next_line().await.unwrap() {
            if let Some(rest) = line.strip_prefix("ordertrail is up: gateway on ") {
                return rest.split_whitespace().next().map(str::to_owned);
            }
        }
        None
    })
    .await
    .expect("up announced itself in time")
    .expect("up announced the gateway");

    let products = reqwest::get(format!("{announced}/api/products"))
        .await
        .unwrap();
    assert_eq!(products.status(), 200);
    assert_ne!(announced, "http://localhost:8080", "not a free port");

    kill(Pid::from_raw(child.id().unwrap() as i32), Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("up stopped in time")
        .unwrap();
    assert!(status.success(), "up exited with {status}");
    assert_eq!(processes_in(&dir), Vec::<String>::new(), "left running");
    let _ = std::fs::remove_dir_all(&dir);
}
