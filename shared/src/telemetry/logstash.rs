//! Ships log lines to Logstash over TCP (`tcp` input, `json_lines` codec), never blocking the
//! caller.
//!
//! [`LogstashSink`] is a [`LineSink`]: it copies each line into a bounded queue with
//! `try_reserve`, so a request thread never waits on the network and never allocates for a
//! line that will not fit. When the queue is full, or the shipper has shut down, the line is
//! dropped and counted. One background task owns the queue's receiving end and the TCP
//! connection. It writes each line followed by `\n` through a `BufWriter`, flushing whenever
//! the queue is momentarily empty so that a quiet service's lines are not held back.
//!
//! Every network wait is bounded. A refused, reset or timed-out connection (Logstash accepting
//! but not reading fills the socket buffers, and only the write timeout notices) makes the
//! task reconnect with full-jitter exponential backoff, capped at `max_backoff` and reset
//! after each successful connect. While disconnected the task takes nothing from the queue, so
//! up to `capacity` lines wait there for Logstash to come back and memory stays bounded by
//! `capacity` lines.
//!
//! Delivery is at most once: lines written since the last successful flush, including the one
//! being written when a connection fails, are lost and counted as dropped. Some of them may in
//! fact have reached Logstash; a retry could duplicate them instead, and a duplicated log line
//! is worse for an investigation than a counted gap.
//!
//! The task reports loss with one `warn` when drops start and one `info` when lines ship again
//! with no new drops. Those events go through the logging layer back into this very sink. That
//! cannot recurse or deadlock: they are emitted by the task, never from inside
//! [`LineSink::write_line`], and the sink only ever enqueues.
//!
//! Why hand-written: `tracing-logstash` (0.7) is only a formatter that writes through a
//! `MakeWriter`, with no transport, queue or reconnect, and it would replace our ECS layer.
//! `logstash-rs` (0.1) is coupled to the `log` crate and its own record type, and its buffered
//! sender uses a `std::sync::mpsc::sync_channel` with a blocking `send`, so a slow Logstash
//! would stall request threads. Neither offers a bounded, non-blocking queue with counted drops.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::timeout;

use super::LineSink;

/// Bytes the writer buffers before it must flush: large enough to batch a burst of lines into
/// few system calls, small enough that one failed flush loses few lines.
const WRITE_BUFFER: usize = 64 * 1024;

/// Tuning for the shipper.
#[derive(Debug, Clone)]
pub struct ShipperConfig {
    /// Lines the queue holds before new ones are dropped; default 10 000.
    pub capacity: usize,
    /// The first reconnect delay's upper bound; default 100 ms.
    pub initial_backoff: Duration,
    /// The largest reconnect delay's upper bound; default 10 s.
    pub max_backoff: Duration,
    /// How long one connection attempt, including name resolution, may take; default 5 s.
    pub connect_timeout: Duration,
    /// How long one write or flush may block before the connection is given up; default 5 s.
    pub write_timeout: Duration,
}

impl Default for ShipperConfig {
    fn default() -> Self {
        Self {
            capacity: 10_000,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
        }
    }
}

/// The counters shared by the sink, the task and the shipper.
#[derive(Debug, Default)]
struct Counters {
    /// Lines the queue accepted.
    accepted: AtomicU64,
    /// Lines flushed to the socket.
    sent: AtomicU64,
    /// Lines refused by a full or closed queue.
    refused: AtomicU64,
    /// Accepted lines that were lost: failed connections and shutdown timeouts.
    lost: AtomicU64,
}

/// Counters of shipped and dropped lines; clones share the same counters.
#[derive(Debug, Clone, Default)]
pub struct ShipperStats(Arc<Counters>);

impl ShipperStats {
    /// Lines flushed to Logstash's socket.
    pub fn sent(&self) -> u64 {
        self.0.sent.load(Relaxed)
    }

    /// Lines dropped: refused by a full or closed queue, or lost with a failed connection.
    pub fn dropped(&self) -> u64 {
        self.0.refused.load(Relaxed) + self.0.lost.load(Relaxed)
    }
}

/// A cheap handle that queues lines for Logstash; clones share the queue.
#[derive(Debug, Clone)]
pub struct LogstashSink {
    tx: mpsc::Sender<Vec<u8>>,
    stats: ShipperStats,
}

impl LogstashSink {
    /// Starts the background shipper to `addr` (`host:port`) on the current tokio runtime and
    /// returns the sink to log into and the shipper to shut down with.
    ///
    /// # Panics
    ///
    /// Panics outside a tokio runtime, or if `config.capacity` is zero.
    pub fn start(addr: String, config: ShipperConfig) -> (LogstashSink, LogstashShipper) {
        let (tx, rx) = mpsc::channel(config.capacity);
        let (stop_tx, stop_rx) = oneshot::channel();
        let stats = ShipperStats::default();
        let task = Task {
            addr,
            backoff: config.initial_backoff,
            config,
            rx,
            stop: Some(stop_rx),
            stats: stats.clone(),
            losing: false,
            seen_dropped: 0,
        };
        let task = tokio::spawn(task.run());
        let shipper = LogstashShipper {
            task,
            stop: Some(stop_tx),
            stats: stats.clone(),
        };
        (LogstashSink { tx, stats }, shipper)
    }
}

impl LineSink for LogstashSink {
    fn write_line(&self, line: &[u8]) {
        // Reserving first means a full queue costs no allocation.
        match self.tx.try_reserve() {
            Ok(permit) => {
                permit.send(line.to_vec());
                self.stats.0.accepted.fetch_add(1, Relaxed);
            }
            Err(_) => {
                self.stats.0.refused.fetch_add(1, Relaxed);
            }
        }
    }
}

/// Owns the background task. Dropping it without [`LogstashShipper::shutdown`] leaves the task
/// shipping until every sink is dropped or the runtime stops.
#[derive(Debug)]
pub struct LogstashShipper {
    task: JoinHandle<()>,
    stop: Option<oneshot::Sender<()>>,
    stats: ShipperStats,
}

impl LogstashShipper {
    /// The shipper's counters.
    pub fn stats(&self) -> ShipperStats {
        self.stats.clone()
    }

    /// Sends what is queued, waiting at most `timeout`, then stops the task. Never hangs.
    ///
    /// Lines written to a sink after this is called are dropped. Lines still queued when the
    /// timeout expires are counted as dropped.
    pub async fn shutdown(mut self, timeout: Duration) {
        if let Some(stop) = self.stop.take() {
            // The task may have ended already, when every sink was dropped; nothing to stop then.
            let _ = stop.send(());
        }
        if tokio::time::timeout(timeout, &mut self.task).await.is_err() {
            self.task.abort();
            // An aborted task stops at its next await, so this returns promptly.
            let _ = (&mut self.task).await;
        }
        // Now the task is gone, every accepted line not sent or already counted was abandoned.
        let c = &self.stats.0;
        let settled = c.sent.load(Relaxed) + c.lost.load(Relaxed);
        c.lost
            .fetch_add(c.accepted.load(Relaxed).saturating_sub(settled), Relaxed);
    }
}

/// How a connection ended.
enum Ended {
    /// The queue is closed and everything in it was handled.
    Drained,
    /// The connection failed; the lines it was carrying were counted as lost.
    Failed,
}

/// The background task's state.
struct Task {
    addr: String,
    config: ShipperConfig,
    backoff: Duration,
    rx: mpsc::Receiver<Vec<u8>>,
    /// `None` once shutdown was requested or the shipper was dropped.
    stop: Option<oneshot::Receiver<()>>,
    stats: ShipperStats,
    /// Whether loss was reported and recovery was not yet.
    losing: bool,
    /// The dropped count when the task last looked.
    seen_dropped: u64,
}

impl Task {
    async fn run(mut self) {
        loop {
            self.observe_loss(false);
            // Closed by shutdown or by the last sink's drop, and empty: nothing left to ship.
            if self.rx.is_closed() && self.rx.is_empty() {
                return;
            }
            let connect = timeout(
                self.config.connect_timeout,
                TcpStream::connect(self.addr.as_str()),
            );
            let Some(connected) = unless_drained(&mut self.rx, &mut self.stop, connect).await
            else {
                return;
            };
            if let Ok(Ok(stream)) = connected {
                // Nagle would only delay lines we already batch ourselves.
                let _ = stream.set_nodelay(true);
                self.backoff = self.config.initial_backoff;
                if let Ended::Drained = self.ship(stream).await {
                    return;
                }
            }
            // Full jitter keeps a fleet of services from reconnecting in lockstep. A connection
            // that failed also pauses, so a Logstash that accepts and resets is not hammered.
            let pause = rand::rng().random_range(Duration::ZERO..=self.backoff);
            self.backoff = (self.backoff * 2).min(self.config.max_backoff);
            let sleep = tokio::time::sleep(pause);
            if unless_drained(&mut self.rx, &mut self.stop, sleep)
                .await
                .is_none()
            {
                return;
            }
        }
    }

    /// Ships queued lines over `stream` until the queue is drained or the connection fails.
    async fn ship(&mut self, stream: TcpStream) -> Ended {
        let mut out = BufWriter::with_capacity(WRITE_BUFFER, stream);
        let mut pending = 0;
        loop {
            // Under sustained load the queue is never empty, so look for shutdown here too:
            // closing the queue is what lets the drain end.
            if stop_now(&mut self.stop) {
                self.rx.close();
            }
            let line = match self.rx.try_recv() {
                Ok(line) => line,
                Err(TryRecvError::Disconnected) => {
                    return match self.flush(&mut out, &mut pending).await {
                        true => Ended::Drained,
                        false => Ended::Failed,
                    };
                }
                Err(TryRecvError::Empty) => {
                    if !self.flush(&mut out, &mut pending).await {
                        return Ended::Failed;
                    }
                    tokio::select! {
                        line = self.rx.recv() => match line {
                            Some(line) => line,
                            None => return Ended::Drained,
                        },
                        () = stop_requested(&mut self.stop) => {
                            self.rx.close();
                            continue;
                        }
                        // Logstash never writes to us, so readable means closed: reconnect now
                        // instead of losing the next line to a dead socket.
                        () = closed_by_peer(out.get_mut()) => return Ended::Failed,
                    }
                }
            };
            // Flushing before the buffer would overflow keeps `pending` exactly the lines that
            // a failure now would lose.
            if out.buffer().len() + line.len() + 1 > WRITE_BUFFER
                && !self.flush(&mut out, &mut pending).await
            {
                self.stats.0.lost.fetch_add(1, Relaxed);
                return Ended::Failed;
            }
            pending += 1;
            let write = async {
                out.write_all(&line).await?;
                out.write_all(b"\n").await
            };
            if !matches!(timeout(self.config.write_timeout, write).await, Ok(Ok(()))) {
                self.stats.0.lost.fetch_add(pending, Relaxed);
                return Ended::Failed;
            }
        }
    }

    /// Flushes, then counts the `pending` lines as sent or, on failure, as lost.
    async fn flush(&mut self, out: &mut BufWriter<TcpStream>, pending: &mut u64) -> bool {
        if *pending == 0 {
            return true;
        }
        let flushed = matches!(
            timeout(self.config.write_timeout, out.flush()).await,
            Ok(Ok(()))
        );
        let counter = if flushed {
            &self.stats.0.sent
        } else {
            &self.stats.0.lost
        };
        counter.fetch_add(std::mem::take(pending), Relaxed);
        self.observe_loss(flushed);
        flushed
    }

    /// Warns once when lines start being dropped, and says once when lines are `shipped` with
    /// no drop since the last look. Recovery waits for a drop-free interval so that a sustained
    /// overload, which ships and drops at once, does not log a warning and a recovery per flush.
    fn observe_loss(&mut self, shipped: bool) {
        let total_dropped = self.stats.dropped();
        if total_dropped > self.seen_dropped {
            if !self.losing {
                self.losing = true;
                tracing::warn!(
                    telemetry.dropped = total_dropped,
                    "log shipping to logstash failing; lines are dropped"
                );
            }
            // Read again, after the warning: when the queue is full the warning itself is
            // dropped, and that drop must not hold back the recovery.
            self.seen_dropped = self.stats.dropped();
        } else if shipped && self.losing {
            self.losing = false;
            tracing::info!(
                telemetry.dropped = total_dropped,
                "log shipping to logstash recovered"
            );
        }
    }
}

/// Runs `fut`, closing the queue if shutdown is requested meanwhile. Returns `None` when the
/// queue is closed and empty, since there is then nothing left to connect or wait for.
async fn unless_drained<F: Future>(
    rx: &mut mpsc::Receiver<Vec<u8>>,
    stop: &mut Option<oneshot::Receiver<()>>,
    fut: F,
) -> Option<F::Output> {
    tokio::pin!(fut);
    loop {
        tokio::select! {
            out = &mut fut => return Some(out),
            () = stop_requested(stop) => {
                rx.close();
                if rx.is_empty() {
                    return None;
                }
            }
        }
    }
}

/// Resolves once when shutdown is requested, then never again. A dropped shipper is not a
/// request: the task then keeps shipping for the sinks that remain.
async fn stop_requested(stop: &mut Option<oneshot::Receiver<()>>) {
    let Some(rx) = stop else {
        return std::future::pending().await;
    };
    let requested = rx.await.is_ok();
    *stop = None;
    if !requested {
        std::future::pending::<()>().await;
    }
}

/// Whether shutdown was requested, without waiting. Like [`stop_requested`], it reports a
/// request once.
fn stop_now(stop: &mut Option<oneshot::Receiver<()>>) -> bool {
    let Some(rx) = stop else { return false };
    match rx.try_recv() {
        Err(oneshot::error::TryRecvError::Empty) => false,
        result => {
            *stop = None;
            result.is_ok()
        }
    }
}

/// Resolves when the peer closes or resets the connection.
async fn closed_by_peer(stream: &mut TcpStream) {
    let mut scratch = [0u8; 512];
    while let Ok(1..) = stream.read(&mut scratch).await {}
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio::net::TcpListener;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;
    use crate::telemetry::{EcsLayer, ServiceIdentity};

    /// Generous: only a broken shipper comes near it.
    const PATIENCE: Duration = Duration::from_secs(10);

    fn config(capacity: usize) -> ShipperConfig {
        ShipperConfig {
            capacity,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(100),
            connect_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_millis(200),
        }
    }

    async fn listener() -> (TcpListener, String) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        (listener, addr)
    }

    /// An address where nothing listens, so connecting is refused.
    async fn refused_addr() -> String {
        listener().await.1
    }

    /// Accepts one connection and reads `n` lines from it, each with its `\n`.
    async fn read_lines(listener: &TcpListener, n: usize) -> Vec<String> {
        timeout(PATIENCE, async {
            let (stream, _) = listener.accept().await.unwrap();
            let mut reader = BufReader::new(stream);
            let mut lines = Vec::with_capacity(n);
            while lines.len() < n {
                let mut line = String::new();
                assert_ne!(
                    reader.read_line(&mut line).await.unwrap(),
                    0,
                    "EOF after {lines:?}"
                );
                lines.push(line);
            }
            lines
        })
        .await
        .expect("lines arrive in time")
    }

    fn line(n: usize) -> String {
        format!("{{\"n\":{n}}}")
    }

    #[tokio::test]
    async fn lines_arrive_in_order_while_logstash_is_up() {
        let (listener, addr) = listener().await;
        let (sink, shipper) = LogstashSink::start(addr, ShipperConfig::default());
        for n in 0..1000 {
            sink.write_line(line(n).as_bytes());
        }
        let received = read_lines(&listener, 1000).await;
        let expected: Vec<String> = (0..1000).map(|n| format!("{}\n", line(n))).collect();
        assert_eq!(received, expected);
        shipper.shutdown(Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_instead_of_blocking() {
        let (sink, shipper) = LogstashSink::start(refused_addr().await, config(10));
        for n in 0..1000 {
            sink.write_line(line(n).as_bytes());
        }
        let stats = shipper.stats();
        assert!(stats.dropped() >= 990, "dropped {}", stats.dropped());
        shipper.shutdown(Duration::from_millis(100)).await;
        // The ten queued lines were never sent, so shutdown counts them too.
        assert_eq!((stats.sent(), stats.dropped()), (0, 1000));
    }

    #[tokio::test]
    async fn reconnects_after_logstash_comes_back() {
        let addr = refused_addr().await;
        let (sink, shipper) = LogstashSink::start(addr.clone(), config(100));
        for n in 0..5 {
            sink.write_line(line(n).as_bytes());
        }
        // Let the shipper fail to connect a few times before Logstash comes up.
        let stats = shipper.stats();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(stats.sent(), 0);
        let listener = TcpListener::bind(addr.as_str()).await.unwrap();
        for n in 5..10 {
            sink.write_line(line(n).as_bytes());
        }
        // Lines queued during the outage wait in the queue and arrive first.
        let received = read_lines(&listener, 10).await;
        let expected: Vec<String> = (0..10).map(|n| format!("{}\n", line(n))).collect();
        assert_eq!(received, expected);
        shipper.shutdown(Duration::from_secs(1)).await;
        assert_eq!((stats.sent(), stats.dropped()), (10, 0));
    }

    /// A Logstash that accepts every connection and never reads from it. The small receive
    /// buffer makes the shipper's writes block sooner.
    async fn never_reading_logstash() -> (String, JoinHandle<()>) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = socket.local_addr().unwrap().to_string();
        let listener = socket.listen(16).unwrap();
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        (addr, hold)
    }

    /// Writes 1000 lines at a time, pausing so the shipper can drain the queue, until `done`.
    async fn feed(sink: &LogstashSink, mut done: impl FnMut() -> bool) -> u64 {
        let payload = "x".repeat(200);
        let mut written = 0;
        let fed = timeout(PATIENCE, async {
            while !done() {
                for _ in 0..1000 {
                    sink.write_line(payload.as_bytes());
                }
                written += 1000;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        assert!(fed.await.is_ok(), "still feeding after {written} lines");
        written
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_logstash_that_accepts_but_never_reads_does_not_block_writers() {
        let (addr, hold) = never_reading_logstash().await;
        // Writes never time out here, so the only way out of a blocked write is shutdown's.
        let config = ShipperConfig {
            write_timeout: Duration::from_secs(60),
            ..config(1000)
        };
        let (sink, shipper) = LogstashSink::start(addr, config);
        let stats = shipper.stats();
        // Feed until the shipper is stuck: no line sent during 20 rounds while lines are
        // refused, which only a write blocked on full socket buffers explains.
        let (mut last_sent, mut idle_rounds) = (0, 0);
        let mut written = feed(&sink, || {
            let sent = stats.sent();
            idle_rounds = if sent == last_sent && stats.0.refused.load(Relaxed) > 0 {
                idle_rounds + 1
            } else {
                0
            };
            last_sent = sent;
            idle_rounds >= 20
        })
        .await;
        for _ in 0..200_000 {
            sink.write_line(&[b'x'; 200]);
        }
        written += 200_000;
        let shutdown = timeout(PATIENCE, shipper.shutdown(Duration::from_millis(500))).await;
        assert!(shutdown.is_ok(), "shutdown hung");
        assert!(stats.dropped() > 0);
        // Only shutdown's give-up counts lines as lost here: it really did give up.
        assert!(stats.0.lost.load(Relaxed) > 0, "{stats:?}");
        assert_eq!(
            stats.sent() + stats.dropped(),
            written,
            "every line is accounted for"
        );
        hold.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_that_times_out_drops_the_connection_and_reconnects() {
        let (addr, hold) = never_reading_logstash().await;
        let (sink, shipper) = LogstashSink::start(addr, config(1000));
        let stats = shipper.stats();
        // A write timeout shows as lines lost with their connection.
        let mut written = feed(&sink, || stats.0.lost.load(Relaxed) > 0).await;
        // The shipper reconnected, so the next (held) connection takes lines again.
        let sent = stats.sent();
        written += feed(&sink, || stats.sent() > sent).await;
        shipper.shutdown(Duration::from_millis(500)).await;
        assert_eq!(
            stats.sent() + stats.dropped(),
            written,
            "every line is accounted for"
        );
        hold.abort();
    }

    #[tokio::test]
    async fn shutdown_flushes_queued_lines() {
        let (listener, addr) = listener().await;
        let (sink, shipper) = LogstashSink::start(addr, ShipperConfig::default());
        for n in 0..100 {
            sink.write_line(line(n).as_bytes());
        }
        let stats = shipper.stats();
        timeout(PATIENCE, shipper.shutdown(Duration::from_secs(2)))
            .await
            .expect("shutdown returns");
        assert_eq!(stats.sent(), 100);
        let received = read_lines(&listener, 100).await;
        assert_eq!(received.last().map(String::as_str), Some("{\"n\":99}\n"));
        // Lines written after shutdown have nowhere to go and are counted.
        sink.write_line(b"late");
        assert_eq!(stats.dropped(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_under_constant_logging_drains_and_returns() {
        let (listener, addr) = listener().await;
        let reader = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            tokio::io::copy(&mut stream, &mut tokio::io::sink())
                .await
                .unwrap()
        });
        let (sink, shipper) = LogstashSink::start(addr, ShipperConfig::default());
        let stats = shipper.stats();
        let logging = Arc::new(std::sync::atomic::AtomicBool::new(true));
        // Several writers keep the queue from ever being momentarily empty.
        let writers: Vec<_> = (0..4)
            .map(|_| {
                let (sink, logging) = (sink.clone(), logging.clone());
                std::thread::spawn(move || {
                    let mut written = 0u64;
                    while logging.load(Relaxed) {
                        sink.write_line(line(0).as_bytes());
                        written += 1;
                    }
                    written
                })
            })
            .collect();
        // The queue never stays empty now, yet shutdown must close it and finish the drain.
        while stats.sent() < 10_000 {
            tokio::task::yield_now().await;
        }
        let shutdown = timeout(PATIENCE, shipper.shutdown(Duration::from_secs(5))).await;
        logging.store(false, Relaxed);
        assert!(shutdown.is_ok(), "shutdown hung");
        let written: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
        // Nothing was abandoned at the timeout: the drain ended by itself.
        assert_eq!(stats.0.lost.load(Relaxed), 0, "{stats:?}");
        assert_eq!(stats.sent() + stats.dropped(), written);
        drop(sink);
        let bytes = timeout(PATIENCE, reader).await.unwrap().unwrap();
        assert_eq!(bytes, stats.sent() * (line(0).len() as u64 + 1));
    }

    /// Collects lines in memory.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<serde_json::Value>>>);

    impl LineSink for Captured {
        fn write_line(&self, line: &[u8]) {
            self.0
                .lock()
                .unwrap()
                .push(serde_json::from_slice(line).unwrap());
        }
    }

    impl Captured {
        fn with_message(&self, message: &str) -> Vec<serde_json::Value> {
            let lines = self.0.lock().unwrap();
            lines
                .iter()
                .filter(|line| line["message"] == message)
                .cloned()
                .collect()
        }
    }

    #[tokio::test]
    async fn loss_and_recovery_are_reported_once_through_the_sink_itself() {
        let addr = refused_addr().await;
        let (sink, shipper) = LogstashSink::start(addr.clone(), config(10));
        // The shipper's own events go back into the shipper, as they do in the services. The
        // runtime is single-threaded, so the task emits them on this thread's subscriber.
        let captured = Captured::default();
        let layer = EcsLayer::new(
            ServiceIdentity::new("test"),
            vec![Box::new(sink.clone()), Box::new(captured.clone())],
        );
        let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
        for n in 0..100 {
            sink.write_line(line(n).as_bytes());
        }
        let listener = TcpListener::bind(addr.as_str()).await.unwrap();
        let received = read_lines(&listener, 11).await;
        let recovered: serde_json::Value = serde_json::from_str(&received[10]).unwrap();
        assert_eq!(recovered["message"], "log shipping to logstash recovered");

        let failing = captured.with_message("log shipping to logstash failing; lines are dropped");
        assert_eq!(failing.len(), 1, "{failing:?}");
        assert_eq!(failing[0]["telemetry.dropped"], 90);
        // The warning found the queue full too, and was dropped and counted.
        assert_eq!(recovered["telemetry.dropped"], 91);
        assert_eq!(
            captured
                .with_message("log shipping to logstash recovered")
                .len(),
            1
        );
        drop(_guard);
        shipper.shutdown(Duration::from_secs(1)).await;
    }
}
