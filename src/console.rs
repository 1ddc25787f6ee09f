//! The trace console of `ordertrail up`: an OTLP receiver that prints each finished trace as
//! a waterfall, so a curl shows its trace without Jaeger.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use ordertrail_testkit::receiver::{self, ReceivedSpan};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// A trace is printed once no span of it has arrived for this long. The batch exporters send
/// every few seconds, so this waits a little longer than their schedule delay.
const QUIET: Duration = Duration::from_secs(6);
/// Width of the bar column.
const BAR_WIDTH: usize = 32;

/// A running console.
pub struct Console {
    /// Where the services send their spans.
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// Starts the receiver on `addr` and the printer behind it.
pub async fn start(addr: SocketAddr) -> std::io::Result<Console> {
    let mut receiver = receiver::start(addr).await?;
    let (stop, mut stopped) = oneshot::channel();
    let task = tokio::spawn(async move {
        let mut traces: HashMap<String, (Vec<ReceivedSpan>, Instant)> = HashMap::new();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                Some(span) = receiver.spans.recv() => {
                    let entry = traces.entry(span.trace_id.clone()).or_insert_with(|| (Vec::new(), Instant::now()));
                    entry.0.push(span);
                    entry.1 = Instant::now();
                }
                _ = tick.tick() => {
                    let quiet: Vec<String> = traces
                        .iter()
                        .filter(|(_, (_, last))| last.elapsed() >= QUIET)
                        .map(|(id, _)| id.clone())
                        .collect();
                    for id in quiet {
                        if let Some((spans, _)) = traces.remove(&id) {
                            print!("{}", render(&spans));
                        }
                    }
                }
                _ = &mut stopped => break,
            }
        }
        // Whatever arrived before the stop is printed too, so the last request is not lost.
        while let Ok(span) = receiver.spans.try_recv() {
            traces
                .entry(span.trace_id.clone())
                .or_insert_with(|| (Vec::new(), Instant::now()))
                .0
                .push(span);
        }
        for (spans, _) in traces.into_values() {
            print!("{}", render(&spans));
        }
    });
    Ok(Console {
        addr: receiver.addr,
        stop,
        task,
    })
}

impl Console {
    /// Prints every trace still waiting and stops. Call it after the services have stopped,
    /// when their last spans have been flushed.
    pub async fn finish(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// One trace as a waterfall: a header with the trace id, then one line per span in tree
/// order: service, indented name, offset and duration, a bar on the trace's time axis, and
/// `✗` for an error.
pub fn render(spans: &[ReceivedSpan]) -> String {
    let Some(first) = spans.first() else {
        return String::new();
    };
    let start = spans
        .iter()
        .map(|s| s.start_unix_nanos)
        .min()
        .unwrap_or_default();
    let end = spans
        .iter()
        .map(|s| s.end_unix_nanos)
        .max()
        .unwrap_or_default();
    let total = end.saturating_sub(start).max(1);
    let services: HashSet<&str> = spans.iter().map(|s| s.service_name.as_str()).collect();
    let ids: HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();

    let mut out = String::new();
    let _ = writeln!(
        out,
        "\ntrace {}  {} spans, {} services, {:.1} ms",
        first.trace_id,
        spans.len(),
        services.len(),
        total as f64 / 1e6
    );
    // Roots are spans whose parent is not in this trace: the first span, or one continued
    // from a caller that sent a traceparent.
    let mut roots: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| !ids.contains(s.parent_span_id.as_str()))
        .collect();
    roots.sort_by_key(|s| s.start_unix_nanos);
    for root in roots {
        write_tree(&mut out, spans, root, 0, start, total);
    }
    out
}

fn write_tree(
    out: &mut String,
    spans: &[ReceivedSpan],
    span: &ReceivedSpan,
    depth: usize,
    start: u64,
    total: u64,
) {
    let offset = span.start_unix_nanos.saturating_sub(start);
    let from = (offset as u128 * BAR_WIDTH as u128 / total as u128) as usize;
    let width =
        ((span.duration_nanos() as u128 * BAR_WIDTH as u128 / total as u128) as usize).max(1);
    let bar: String = (0..BAR_WIDTH)
        .map(|i| {
            if i >= from && i < from + width {
                '█'
            } else {
                '·'
            }
        })
        .collect();
    let name = format!("{}{}", "  ".repeat(depth), span.name);
    let _ = writeln!(
        out,
        "  {:<10} {:<44} {:>8.1} ms {:>8.1} ms {} {}",
        span.service_name,
        name,
        offset as f64 / 1e6,
        span.duration_nanos() as f64 / 1e6,
        bar,
        if span.is_error { "✗" } else { "" }
    );
    let mut children: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.parent_span_id == span.span_id)
        .collect();
    children.sort_by_key(|s| s.start_unix_nanos);
    for child in children {
        write_tree(out, spans, child, depth + 1, start, total);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(
        service: &str,
        id: &str,
        parent: &str,
        name: &str,
        start_ms: u64,
        end_ms: u64,
        is_error: bool,
    ) -> ReceivedSpan {
        ReceivedSpan {
            service_name: service.into(),
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            span_id: id.into(),
            parent_span_id: parent.into(),
            name: name.into(),
            kind: "server",
            start_unix_nanos: start_ms * 1_000_000,
            end_unix_nanos: end_ms * 1_000_000,
            is_error,
            attributes: Default::default(),
            attribute_kinds: Default::default(),
            events: Vec::new(),
        }
    }

    #[test]
    fn a_trace_renders_as_an_indented_waterfall_with_error_marks() {
        let spans = [
            span("order", "b", "a", "POST /orders", 2, 10, true),
            span("gateway", "a", "", "POST /api/orders", 0, 12, false),
            span("payment", "c", "b", "payment.charge", 4, 8, true),
        ];
        let text = render(&spans);
        let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
        assert!(
            lines[0]
                .contains("trace 4bf92f3577b34da6a3ce929d0e0e4736  3 spans, 3 services, 12.0 ms"),
            "{text}"
        );
        assert!(
            lines[1].contains("gateway") && lines[1].contains(" POST /api/orders"),
            "{text}"
        );
        assert!(
            lines[2].contains("order")
                && lines[2].contains("  POST /orders")
                && lines[2].ends_with('✗'),
            "{text}"
        );
        assert!(
            lines[3].contains("payment") && lines[3].contains("    payment.charge"),
            "{text}"
        );
        assert!(!lines[1].ends_with('✗'));
    }

    #[test]
    fn a_span_continued_from_an_outside_caller_is_a_root() {
        let spans = [span(
            "gateway",
            "a",
            "00f067aa0ba902b7",
            "GET /api/products",
            0,
            5,
            false,
        )];
        assert!(render(&spans).contains("GET /api/products"));
    }
}
