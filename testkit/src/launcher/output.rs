//! A child's output: every line to the caller's sink and into a short tail, and the address
//! its "listening" line reports.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Child;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::Role;

/// How many of a child's last lines (both streams) are kept for an error message.
const TAIL: usize = 10;
/// How long to wait for a child's last lines once it has exited. Only a grandchild holding
/// the pipes open could make it wait that long; the services start none.
const FINISH: Duration = Duration::from_secs(1);

/// Which of a child's streams a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output: the service's ECS JSON log lines.
    Stdout,
    /// Standard error: what the binary says when it cannot run (and a panic's message).
    Stderr,
}

/// One line a child wrote, without its line break.
#[derive(Debug, Clone, Copy)]
pub struct Line<'a> {
    /// Who wrote it.
    pub role: Role,
    /// Where.
    pub stream: Stream,
    /// The line; bytes that are not UTF-8 are replaced.
    pub text: &'a str,
}

/// Where a launcher hands every line.
pub(super) type Sink = Arc<dyn Fn(Line<'_>) + Send + Sync>;

/// The readers of one child's two pipes.
pub(super) struct Output {
    tail: Arc<Mutex<VecDeque<String>>>,
    readers: Vec<JoinHandle<()>>,
}

impl Output {
    /// Reads `child`'s piped stdout and stderr until they end; the receiver gets the address
    /// of the first "listening" line on stdout, or an error if stdout ends without one.
    pub(super) fn capture(
        role: Role,
        child: &mut Child,
        sink: &Sink,
    ) -> (Self, oneshot::Receiver<SocketAddr>) {
        let tail = Arc::<Mutex<VecDeque<String>>>::default();
        let (listening, address) = oneshot::channel();
        let mut readers = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            let reader = Reader {
                role,
                stream: Stream::Stdout,
                sink: sink.clone(),
                tail: tail.clone(),
                listening: Some(listening),
            };
            readers.push(tokio::spawn(reader.run(stdout)));
        }
        if let Some(stderr) = child.stderr.take() {
            let reader = Reader {
                role,
                stream: Stream::Stderr,
                sink: sink.clone(),
                tail: tail.clone(),
                listening: None,
            };
            readers.push(tokio::spawn(reader.run(stderr)));
        }
        (Self { tail, readers }, address)
    }

    /// Waits until both pipes have ended, so that the last lines are in. Call it once the
    /// child has exited.
    pub(super) async fn finish(&mut self) {
        for reader in self.readers.drain(..) {
            let _ = tokio::time::timeout(FINISH, reader).await;
        }
    }

    /// The last lines of both streams, oldest first.
    pub(super) fn last_lines(&self) -> Vec<String> {
        let tail = self
            .tail
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        tail.iter().cloned().collect()
    }
}

struct Reader {
    role: Role,
    stream: Stream,
    sink: Sink,
    tail: Arc<Mutex<VecDeque<String>>>,
    listening: Option<oneshot::Sender<SocketAddr>>,
}

impl Reader {
    async fn run(mut self, pipe: impl AsyncRead + Unpin) {
        let mut pipe = BufReader::new(pipe);
        let mut bytes = Vec::new();
        loop {
            bytes.clear();
            match pipe.read_until(b'\n', &mut bytes).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let line = String::from_utf8_lossy(&bytes);
            let text = line.trim_end_matches(['\n', '\r']);
            if self.listening.is_some()
                && let Some(address) = listening_address(text)
                && let Some(listening) = self.listening.take()
            {
                let _ = listening.send(address);
            }
            {
                let mut tail = self
                    .tail
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                if tail.len() == TAIL {
                    tail.pop_front();
                }
                tail.push_back(text.to_owned());
            }
            (self.sink)(Line {
                role: self.role,
                stream: self.stream,
                text,
            });
        }
    }
}

/// The address in a service's "listening" line (`Service::bind` in `ordertrail-shared`): an
/// ECS JSON line whose message is `listening`, with `server.address`.
fn listening_address(line: &str) -> Option<SocketAddr> {
    // Most lines are not it; parse only those that may be.
    if !line.contains("listening") {
        return None;
    }
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    if !value["message"].as_str()?.ends_with("listening") {
        return None;
    }
    value["server.address"].as_str()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::listening_address;

    #[test]
    fn the_listening_line_gives_the_address_and_other_lines_none() {
        let line = r#"{"@timestamp":"2025-01-01T00:00:00.000000Z","log.level":"INFO","message":"listening","server.address":"127.0.0.1:40123","service.name":"order"}"#;
        assert_eq!(
            listening_address(line),
            Some("127.0.0.1:40123".parse().unwrap())
        );
        let other = r#"{"log.level":"INFO","message":"order listening for nothing else"}"#;
        assert_eq!(listening_address(other), None);
        assert_eq!(listening_address("listening, but not JSON"), None);
    }
}
