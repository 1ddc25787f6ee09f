//! Log lines to standard output from a thread of their own, through a bounded, lossy queue: a
//! reader of stdout that stalls (a full pipe, a slow log driver) costs lines, never a request
//! thread.
//!
//! Written here rather than taken from tracing-appender, whose writer thread is woken for every
//! line and writes each one with a system call of its own: under load that was a wake-up (a
//! futex call on the request thread, a context switch) and a `write` per line. This writer
//! wakes for the first line after a quiet spell, then writes whatever has queued in one
//! `write` every [`BATCH_EVERY`] while lines keep coming, and request threads only push onto
//! the queue.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::Duration;

use super::ecs::LineSink;

/// Lines waiting to be written; more are dropped and counted.
const QUEUE_LINES: usize = 128_000;
/// How long the writer lets lines gather before writing them, once it is awake. A line
/// reaches stdout at most this much later than without batching.
const BATCH_EVERY: Duration = Duration::from_millis(10);

/// A sink writing lines to stdout from the writer thread; cheap to clone.
#[derive(Debug, Clone)]
pub struct Stdout {
    queue: SyncSender<Message>,
    dropped: Arc<AtomicU64>,
}

/// Stops the writer thread when dropped, once it has written every queued line.
#[derive(Debug)]
pub struct StdoutGuard {
    queue: SyncSender<Message>,
    thread: Option<JoinHandle<()>>,
    dropped: Arc<AtomicU64>,
}

enum Message {
    Line(Vec<u8>),
    Stop,
}

impl Stdout {
    /// Starts the writer thread.
    pub fn start() -> (Self, StdoutGuard) {
        Self::start_with(std::io::stdout())
    }

    /// Starts a writer thread writing to `out`.
    fn start_with(out: impl Write + Send + 'static) -> (Self, StdoutGuard) {
        let (queue, lines) = sync_channel(QUEUE_LINES);
        let thread = std::thread::Builder::new()
            .name("ordertrail-stdout".into())
            .spawn(move || write_lines(lines, out))
            .ok();
        let dropped = Arc::new(AtomicU64::new(0));
        let guard = StdoutGuard {
            queue: queue.clone(),
            thread,
            dropped: dropped.clone(),
        };
        (Self { queue, dropped }, guard)
    }
}

impl Stdout {
    /// The count of lines dropped so far, to read from elsewhere (the health metrics).
    pub(super) fn dropped_count(&self) -> Arc<AtomicU64> {
        self.dropped.clone()
    }
}

impl LineSink for Stdout {
    fn write_line(&self, line: &[u8]) {
        // One message per line, so that a line is queued (or dropped) whole.
        let mut owned = Vec::with_capacity(line.len() + 1);
        owned.extend_from_slice(line);
        owned.push(b'\n');
        match self.queue.try_send(Message::Line(owned)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl Drop for StdoutGuard {
    fn drop(&mut self) {
        // The stop waits behind the queued lines; blocking is fine here, at shutdown.
        let _ = self.queue.send(Message::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let dropped = self.dropped.load(Ordering::Relaxed);
        if dropped > 0 {
            eprintln!("telemetry: {dropped} log lines dropped, stdout was not keeping up");
        }
    }
}

/// The writer thread: asleep until a line comes; then it writes what is queued, lets the next
/// lines gather for [`BATCH_EVERY`] and writes those, until an interval passes with none and
/// it goes back to sleep. It stops at [`Message::Stop`] or when every sender is gone.
fn write_lines(lines: Receiver<Message>, out: impl Write) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    while let Ok(first) = lines.recv() {
        let mut next = Some(first);
        loop {
            while let Some(message) = next.take() {
                match message {
                    Message::Line(line) => {
                        let _ = out.write_all(&line);
                    }
                    Message::Stop => {
                        let _ = out.flush();
                        return;
                    }
                }
                next = lines.try_recv().ok();
            }
            let _ = out.flush();
            std::thread::sleep(BATCH_EVERY);
            match lines.try_recv() {
                Ok(message) => next = Some(message),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Collects what the writer writes.
    #[derive(Clone, Default)]
    struct Written(Arc<Mutex<Vec<u8>>>);

    impl Write for Written {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_is_written_whole_and_in_order_by_the_time_the_guard_drops() {
        let written = Written::default();
        let (stdout, guard) = Stdout::start_with(written.clone());
        for i in 0..1000 {
            stdout.write_line(format!("line {i}").as_bytes());
        }
        drop(guard);
        let text = String::from_utf8(written.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1000);
        assert!(
            lines
                .iter()
                .enumerate()
                .all(|(i, l)| *l == format!("line {i}"))
        );
    }
}
