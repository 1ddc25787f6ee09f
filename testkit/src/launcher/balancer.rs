//! A round-robin TCP forwarder: one address in front of a service's replicas, standing in for
//! a Kubernetes Service (kube-proxy balances connections, not requests, just as this does).
//!
//! The services find each other by one base URL each (`INVENTORY_URL`, …), so a forwarder in
//! front of the replicas lets them run unchanged, rather than teaching their clients a list of
//! URLs that no real deployment would give them. Each accepted connection goes to the next
//! replica in turn; a replica that refuses the connection (it was killed) is skipped for the
//! next one, as a Service stops sending to a pod that is gone. Hand-written rather than taken
//! from a proxy crate: it is an accept loop and `copy_bidirectional`.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// How long the accept loop waits after `accept` failed before it tries again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Forwards the connections made to [`Balancer::addr`] to its backends in turn, until dropped
/// (which cuts the connections under way too).
#[derive(Debug)]
pub struct Balancer {
    addr: SocketAddr,
    accept: JoinHandle<()>,
}

impl Balancer {
    /// Listens on `listen` (port 0 takes a free one) and forwards to `backends`.
    pub async fn start(listen: SocketAddr, backends: Vec<SocketAddr>) -> io::Result<Self> {
        assert!(!backends.is_empty(), "a balancer needs a backend");
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let accept = tokio::spawn(accept(listener, Arc::new(backends)));
        Ok(Self { addr, accept })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        // The connections' tasks live in the accept task's `JoinSet`, which aborts them.
        self.accept.abort();
    }
}

async fn accept(listener: TcpListener, backends: Arc<Vec<SocketAddr>>) {
    let next = Arc::new(AtomicUsize::new(0));
    let mut connections = JoinSet::new();
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // An error that persists (out of file descriptors) would otherwise spin the loop
            // at full speed; a pause gives the connections a chance to close.
            tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            continue;
        };
        // Reap the finished ones, so that the set does not grow with every connection made.
        while connections.try_join_next().is_some() {}
        let first = next.fetch_add(1, Ordering::Relaxed);
        connections.spawn(forward(client, backends.clone(), first));
    }
}

/// Connects to the first backend from `first` on that accepts, and copies both ways until
/// either side closes. A client no backend accepts is closed, as a refused connection would be.
async fn forward(mut client: TcpStream, backends: Arc<Vec<SocketAddr>>, first: usize) {
    let _ = client.set_nodelay(true);
    for attempt in 0..backends.len() {
        let backend = backends[(first + attempt) % backends.len()];
        let Ok(mut server) = TcpStream::connect(backend).await else {
            continue;
        };
        let _ = server.set_nodelay(true);
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        return;
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// A server that answers each connection with `name` and closes it.
    async fn named(name: &'static str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let _ = stream.write_all(name.as_bytes()).await;
            }
        });
        addr
    }

    /// A port nothing listens on: connections to it are refused.
    fn refusing() -> SocketAddr {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        drop(socket);
        addr
    }

    async fn answer(at: SocketAddr) -> String {
        let mut stream = TcpStream::connect(at).await.unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).await.unwrap();
        text
    }

    #[tokio::test]
    async fn connections_go_to_each_backend_in_turn_and_skip_one_that_refuses() {
        let backends = vec![named("a").await, refusing(), named("c").await];
        let balancer = Balancer::start("127.0.0.1:0".parse().unwrap(), backends)
            .await
            .unwrap();

        let mut answers = Vec::new();
        for _ in 0..4 {
            answers.push(answer(balancer.addr()).await);
        }

        assert_eq!(answers, ["a", "c", "c", "a"]);
    }
}
