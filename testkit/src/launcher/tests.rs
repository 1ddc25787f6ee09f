//! The launcher on a stand-in for the `ordertrail` binary: a shell script that says where it
//! "listens" (an in-process server answering `/health/ready`) and sleeps, or fails.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{LaunchError, Launcher, Role, Stream};

/// One test at a time writes and runs its script: a script written while another thread
/// forks can be held open in the fork, and running it then fails with "text file busy".
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A server answering 200 to `/health/ready`.
async fn health_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route("/health/ready", axum::routing::get(|| async {}));
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A script run as `script serve <role>`: it writes its role and variables to stderr; `role`
/// named by `failing` exits 3; the others log a listening line with `addr` (unless `silent`)
/// and sleep.
fn script(addr: SocketAddr, failing: &str, silent: bool) -> PathBuf {
    let listening = if silent {
        String::new()
    } else {
        format!(r#"echo '{{"message":"listening","server.address":"{addr}"}}'"#)
    };
    let body = format!(
        r#"#!/bin/sh
echo "$2 ORDER_URL=${{ORDER_URL-unset}} DATABASE_URL=${{DATABASE_URL-unset}} LOG_FORMAT=$LOG_FORMAT LISTEN_ADDR=$LISTEN_ADDR" >&2
if [ "$2" = "{failing}" ]; then echo "cannot bind: Address already in use" >&2; exit 3; fi
{listening}
exec sleep 30
"#
    );
    let path = std::env::temp_dir().join(format!(
        "ordertrail-launcher-test-{}-{:?}.sh",
        std::process::id(),
        std::time::SystemTime::now()
    ));
    std::fs::write(&path, body).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[tokio::test]
async fn the_four_start_callees_first_each_told_where_its_callees_are() {
    let _one = ONE_AT_A_TIME.lock().await;
    let script = script(health_server().await, "none", false);
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let lines = stderr.clone();

    let mut services = Launcher::new(&script)
        .env("DATABASE_URL", "meant-for-one")
        .env_remove("DATABASE_URL")
        .role_env(Role::Order, "DATABASE_URL", "sqlite://order.db")
        .env("LOG_FORMAT", "pretty")
        .on_line(move |line| {
            if line.stream == Stream::Stderr {
                lines.lock().unwrap().push(line.text.to_owned());
            }
        })
        .start()
        .await
        .unwrap();

    let order = services.url(Role::Order);
    assert_eq!(
        *stderr.lock().unwrap(),
        [
            "inventory ORDER_URL=unset DATABASE_URL=unset LOG_FORMAT=json LISTEN_ADDR=127.0.0.1:0".to_owned(),
            "payment ORDER_URL=unset DATABASE_URL=unset LOG_FORMAT=json LISTEN_ADDR=127.0.0.1:0".to_owned(),
            "order ORDER_URL=unset DATABASE_URL=sqlite://order.db LOG_FORMAT=json LISTEN_ADDR=127.0.0.1:0".to_owned(),
            format!("gateway ORDER_URL={order} DATABASE_URL=unset LOG_FORMAT=json LISTEN_ADDR=127.0.0.1:0"),
        ]
    );
    let stopped = services.stop_all().await;
    let roles: Vec<Role> = stopped.iter().map(|s| s.role).collect();
    assert_eq!(
        roles,
        [Role::Gateway, Role::Order, Role::Payment, Role::Inventory]
    );
    assert!(stopped.iter().all(|s| !s.killed && s.status.is_ok()));
    let _ = std::fs::remove_file(script);
}

#[tokio::test]
async fn a_child_that_exits_during_start_fails_it_with_its_status_and_last_lines() {
    let _one = ONE_AT_A_TIME.lock().await;
    let script = script(health_server().await, "gateway", false);

    let started = Launcher::new(&script).start().await;

    let Err(err @ LaunchError::Exited { .. }) = started else {
        panic!("not an exit during start");
    };
    assert_eq!(err.role(), Role::Gateway);
    let message = err.to_string();
    assert!(
        message.starts_with("gateway exited during start (exit status: 3); its last lines:"),
        "{message}"
    );
    assert!(
        message.ends_with("\n  cannot bind: Address already in use"),
        "{message}"
    );
    let _ = std::fs::remove_file(script);
}

#[tokio::test]
async fn a_child_that_never_says_where_it_listens_is_killed_at_the_deadline() {
    let _one = ONE_AT_A_TIME.lock().await;
    let script = script(health_server().await, "none", true);

    let started = Launcher::new(&script)
        .ready_timeout(Duration::from_millis(300))
        .start()
        .await;

    let Err(err @ LaunchError::NotReady { .. }) = started else {
        panic!("not a start that timed out");
    };
    assert_eq!(err.role(), Role::Inventory);
    assert!(
        err.to_string()
            .contains("was not ready within 300ms: it did not log where it listens"),
        "{err}"
    );
    let _ = std::fs::remove_file(script);
}

#[tokio::test]
async fn a_killed_child_restarts_on_its_port_and_an_exit_is_reported() {
    let _one = ONE_AT_A_TIME.lock().await;
    let script = script(health_server().await, "none", false);
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let lines = stderr.clone();
    let mut services = Launcher::new(&script)
        .on_line(move |line| {
            if line.role == Role::Payment && line.stream == Stream::Stderr {
                lines.lock().unwrap().push(line.text.to_owned());
            }
        })
        .start()
        .await
        .unwrap();
    let port = services.port(Role::Payment);

    let killed = services.kill(Role::Payment).await.unwrap();
    assert!(killed.killed && !killed.status.unwrap().success());
    assert_eq!(services.pid(Role::Payment), None);
    services.restart(Role::Payment).await.unwrap();
    let restarted = stderr.lock().unwrap().last().cloned().unwrap();
    assert!(
        restarted.ends_with(&format!("LISTEN_ADDR=127.0.0.1:{port}")),
        "{restarted}"
    );

    let pid = services.pid(Role::Order).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let exited = tokio::time::timeout(Duration::from_secs(5), services.exited())
        .await
        .unwrap();
    assert_eq!(exited.role, Role::Order);
    assert_eq!(services.stop_all().await.len(), 3);
    let _ = std::fs::remove_file(script);
}

#[tokio::test]
async fn replicas_of_a_role_start_behind_a_balancer_that_their_callers_are_given() {
    let _one = ONE_AT_A_TIME.lock().await;
    let script = script(health_server().await, "none", false);
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let lines = stderr.clone();

    let mut services = Launcher::new(&script)
        .replicas(Role::Order, 3)
        .on_line(move |line| {
            if line.stream == Stream::Stderr {
                lines.lock().unwrap().push(line.text.to_owned());
            }
        })
        .start()
        .await
        .unwrap();

    let started: Vec<String> = stderr.lock().unwrap().clone();
    let orders = started.iter().filter(|l| l.starts_with("order ")).count();
    assert_eq!(orders, 3, "{started:#?}");
    assert_eq!(services.replicas(Role::Order), 3);
    assert_eq!(services.replicas(Role::Gateway), 1);
    let balancer = services.url(Role::Order);
    assert_ne!(balancer, services.replica_url(Role::Order, 0));
    assert!(
        started
            .last()
            .unwrap()
            .contains(&format!("ORDER_URL={balancer} ")),
        "the gateway calls the balancer: {started:#?}"
    );
    // The balancer forwards to the replicas: here, the stand-in's health server.
    let ready = reqwest::get(format!("{balancer}/health/ready"))
        .await
        .unwrap();
    assert!(ready.status().is_success());

    let killed = services.kill_replica(Role::Order, 1).await.unwrap();
    assert_eq!((killed.role, killed.replica), (Role::Order, 1));
    assert!(services.pid(Role::Order).is_some(), "the others run on");
    let stopped = services.stop_all().await;
    assert_eq!(stopped.len(), 5, "two order replicas and the three others");
}
