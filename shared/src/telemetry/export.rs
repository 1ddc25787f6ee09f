//! Span processing around the OTLP exporter: baggage copied onto spans, every lost span counted.
//!
//! A finished span can be lost in three places, and each loss is counted exactly once in
//! [`ExportStats::dropped`]:
//!
//! 1. the export queue is full when the span ends: [`CountingBatchProcessor`] drops it;
//! 2. the batch carrying it fails to export: [`CountingExporter`] counts the batch;
//! 3. it is still queued when shutdown's time is up: [`CountingBatchProcessor`]'s shutdown
//!    counts what was never settled.
//!
//! Why the queue bound is enforced here and not left to the SDK: its `BatchSpanProcessor`
//! counts its own queue-full drops, but privately, and only logs the total at shutdown, so a
//! service under a slow collector would lose spans without a word. [`CountingBatchProcessor`]
//! owns the SDK processor and admits a span only while fewer than `capacity` spans are
//! unsettled, counting from the moment it forwards a span until [`CountingExporter`] sees the
//! batch carrying it succeed or fail. The SDK's own queue has the same capacity and holds a
//! subset of those spans (the batch being exported has already left it), so it never
//! overflows and never drops a span we did not count.
//!
//! Loss is reported with one `warn` when it starts and one `info` when a batch exports with no
//! new loss since the previous one. Both come from the exporter's thread, never from the
//! request thread that ended a span inside the `tracing` subscriber.
//!
//! Spans that end after shutdown has begun are discarded by the SDK before any processor sees
//! them; by then the service has stopped taking requests.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry::baggage::BaggageExt;
use opentelemetry::trace::Span as _;
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Span, SpanData, SpanExporter, SpanProcessor,
};

/// Copies chosen baggage entries onto every span as attributes when it starts, so that a
/// `customer.id` set by the gateway is on every span of every service downstream.
///
/// Only the listed keys are copied: baggage comes from the caller and must not be able to add
/// arbitrary attributes.
#[derive(Debug)]
pub struct BaggageSpanProcessor {
    keys: Vec<&'static str>,
}

impl BaggageSpanProcessor {
    /// A processor copying the baggage entries named in `keys`.
    pub fn new(keys: &[&'static str]) -> Self {
        Self {
            keys: keys.to_vec(),
        }
    }
}

impl SpanProcessor for BaggageSpanProcessor {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        let baggage = cx.baggage();
        for key in &self.keys {
            if let Some(value) = baggage.get(*key) {
                span.set_attribute(KeyValue::new(*key, value.as_str().to_owned()));
            }
        }
    }
    fn on_end(&self, _span: SpanData) {}
    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }
    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// The value of [`StatsInner::queued`] once shutdown has settled every span: nothing is
/// admitted any more, and an export finishing late is not counted a second time.
const SETTLED: u64 = u64::MAX;

/// Counters of what the exporter delivered and lost; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct ExportStats {
    inner: Arc<StatsInner>,
}

#[derive(Debug, Default)]
struct StatsInner {
    exported: AtomicU64,
    dropped: AtomicU64,
    /// Spans admitted to the queue, and of the dropped ones those refused by a full (or
    /// closed) queue and those in failed batches: read by the health metrics.
    admitted: AtomicU64,
    queue_full: AtomicU64,
    failed: AtomicU64,
    /// Spans forwarded to the batch processor and not yet settled (exported, failed, or
    /// abandoned at shutdown): queued or in the batch being exported. [`SETTLED`] after
    /// shutdown.
    queued: AtomicU64,
    /// Whether loss was reported and recovery was not yet.
    losing: AtomicBool,
    /// `dropped` when the last batch was settled.
    seen_dropped: AtomicU64,
}

impl ExportStats {
    /// Spans the collector accepted.
    pub fn exported(&self) -> u64 {
        self.inner.exported.load(Ordering::Relaxed)
    }

    /// Spans lost: dropped because the export queue was full, in a batch the collector could
    /// not be reached for or refused, or still queued when shutdown ran out of time.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Spans admitted to the export queue.
    pub fn admitted(&self) -> u64 {
        self.inner.admitted.load(Ordering::Relaxed)
    }

    /// Spans dropped because the export queue was full (or closed, at shutdown).
    pub fn queue_full(&self) -> u64 {
        self.inner.queue_full.load(Ordering::Relaxed)
    }

    /// Spans in batches that failed to export.
    pub fn failed(&self) -> u64 {
        self.inner.failed.load(Ordering::Relaxed)
    }

    /// Spans waiting in the export queue or being exported.
    pub fn queued(&self) -> u64 {
        match self.inner.queued.load(Ordering::Relaxed) {
            SETTLED => 0,
            queued => queued,
        }
    }

    /// Takes a place in a queue of `capacity` spans, if one is free.
    fn try_enqueue(&self, capacity: u64) -> bool {
        let admitted = self
            .inner
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                (queued < capacity).then_some(queued + 1)
            })
            .is_ok();
        if admitted {
            self.inner.admitted.fetch_add(1, Ordering::Relaxed);
        }
        admitted
    }

    fn count_dropped(&self, spans: u64) {
        self.inner.dropped.fetch_add(spans, Ordering::Relaxed);
    }

    /// Settles a batch of `spans` with the export's `result`, then reports loss starting or
    /// ending.
    fn settle(&self, spans: u64, result: &OTelSdkResult) {
        // Release the batch's places in the queue. Saturating: an exporter used without a
        // `CountingBatchProcessor` in front never took any.
        let released =
            self.inner
                .queued
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                    (queued != SETTLED).then(|| queued.saturating_sub(spans))
                });
        if released.is_err() {
            // Shutdown gave up on this batch and already counted it as dropped.
            return;
        }
        match result {
            Ok(()) => self.inner.exported.fetch_add(spans, Ordering::Relaxed),
            Err(_) => {
                self.inner.failed.fetch_add(spans, Ordering::Relaxed);
                self.inner.dropped.fetch_add(spans, Ordering::Relaxed)
            }
        };
        self.report(result);
    }

    /// One `warn` when spans start being lost, one `info` when a batch is exported with no
    /// loss since the previous batch. Waiting for a loss-free batch keeps a sustained overload,
    /// which exports and drops at once, from logging a warning and a recovery per batch.
    fn report(&self, result: &OTelSdkResult) {
        let dropped = self.dropped();
        let seen = self.inner.seen_dropped.swap(dropped, Ordering::Relaxed);
        if dropped > seen {
            if !self.inner.losing.swap(true, Ordering::Relaxed) {
                let cause = match result {
                    Err(err) => err.to_string(),
                    Ok(()) => "the span export queue is full".to_owned(),
                };
                tracing::warn!(
                    telemetry.dropped = dropped,
                    error.message = %cause,
                    "span export failing; spans are dropped"
                );
            }
        } else if result.is_ok() && self.inner.losing.swap(false, Ordering::Relaxed) {
            tracing::info!(telemetry.dropped = dropped, "span export recovered");
        }
    }

    /// Counts every span not settled yet as dropped, and stops counting: called once the batch
    /// processor has been given its shutdown time.
    fn abandon_queued(&self) {
        let left = self.inner.queued.swap(SETTLED, Ordering::AcqRel);
        if left != SETTLED {
            self.count_dropped(left);
        }
    }

    pub(super) fn report_total(&self) {
        if self.dropped() > 0 {
            eprintln!(
                "telemetry: {} spans exported, {} dropped",
                self.exported(),
                self.dropped()
            );
        }
    }
}

/// Wraps an exporter and settles every batch it is given in [`ExportStats`]: exported, or
/// dropped when delivery failed.
///
/// It releases the batch's places in the queue of the [`CountingBatchProcessor`] sharing the
/// same stats.
#[derive(Debug)]
pub struct CountingExporter<E> {
    inner: E,
    stats: ExportStats,
}

impl<E> CountingExporter<E> {
    /// Wraps `inner`, counting into `stats`.
    pub fn new(inner: E, stats: ExportStats) -> Self {
        Self { inner, stats }
    }
}

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len() as u64;
        let result = self.inner.export(batch).await;
        self.stats.settle(spans, &result);
        result
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }
    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The SDK's [`BatchSpanProcessor`] behind a gate that counts every span it cannot take.
///
/// At most `capacity` spans are queued or being exported; a span ending when the queue is full
/// is dropped here and counted in [`ExportStats::dropped`], so memory stays bounded while the
/// collector is slow or down, the request thread never waits, and the loss is visible. The
/// other batch settings (`OTEL_BSP_SCHEDULE_DELAY`, `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`) are the
/// SDK's, from the environment. See the module documentation for why the count is exact.
#[derive(Debug)]
pub struct CountingBatchProcessor {
    inner: BatchSpanProcessor,
    /// Copies baggage onto spans as they start, here rather than as a processor of its own:
    /// the SDK clones every finished span once for each processor but the last.
    baggage: Option<BaggageSpanProcessor>,
    capacity: u64,
    /// Set when shutdown starts: later spans would find the batch thread gone.
    closed: AtomicBool,
    stats: ExportStats,
}

impl CountingBatchProcessor {
    /// Batches spans for `exporter` through a queue of `capacity` spans, counting into `stats`.
    pub fn new<E: SpanExporter + 'static>(
        exporter: E,
        capacity: usize,
        stats: ExportStats,
    ) -> Self {
        // The SDK's queue gets the same capacity, set explicitly: it reads
        // OTEL_BSP_MAX_QUEUE_SIZE itself, and must never be the smaller of the two.
        let config = BatchConfigBuilder::default()
            .with_max_queue_size(capacity)
            .build();
        let exporter = CountingExporter::new(exporter, stats.clone());
        Self {
            inner: BatchSpanProcessor::new(exporter, config),
            baggage: None,
            capacity: capacity as u64,
            closed: AtomicBool::new(false),
            stats,
        }
    }
}

impl CountingBatchProcessor {
    /// Also copies baggage onto every span as `baggage` does.
    pub fn with_baggage(mut self, baggage: BaggageSpanProcessor) -> Self {
        self.baggage = Some(baggage);
        self
    }
}

impl SpanProcessor for CountingBatchProcessor {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        if let Some(baggage) = &self.baggage {
            baggage.on_start(span, cx);
        }
        self.inner.on_start(span, cx);
    }
    fn on_end(&self, span: SpanData) {
        if self.closed.load(Ordering::Acquire) || !self.stats.try_enqueue(self.capacity) {
            // Counted only: a log line per dropped span would make an overload worse. The
            // exporter's thread reports the loss after its next batch.
            self.stats.inner.queue_full.fetch_add(1, Ordering::Relaxed);
            self.stats.count_dropped(1);
            return;
        }
        self.inner.on_end(span);
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.closed.store(true, Ordering::Release);
        let result = self.inner.shutdown_with_timeout(timeout);
        // What the batch thread did not settle in time is lost: the process is about to exit.
        self.stats.abandon_queued();
        result
    }
    fn set_resource(&mut self, resource: &Resource) {
        // The exporter needs the resource (service.name and the rest) to send with each batch.
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Condvar, Mutex};

    use opentelemetry::trace::{Tracer as _, TracerProvider as _};
    use opentelemetry_sdk::error::OTelSdkError;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;
    use crate::telemetry::ecs::tests::Captured;
    use crate::telemetry::{EcsLayer, ServiceIdentity};

    /// An exporter whose exports wait until the test opens it.
    #[derive(Debug, Clone, Default)]
    struct Stalled(Arc<(Mutex<bool>, Condvar)>);

    impl Stalled {
        fn open(&self) {
            let (open, changed) = &*self.0;
            *open.lock().unwrap() = true;
            changed.notify_all();
        }
    }

    impl SpanExporter for Stalled {
        async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
            // The SDK's batch thread blocks on the export, so blocking here is what a hung
            // collector looks like to it.
            let (open, changed) = &*self.0;
            drop(
                changed
                    .wait_while(open.lock().unwrap(), |open| !*open)
                    .unwrap(),
            );
            Ok(())
        }
    }

    fn provider(exporter: Stalled, capacity: usize, stats: &ExportStats) -> SdkTracerProvider {
        SdkTracerProvider::builder()
            .with_span_processor(CountingBatchProcessor::new(
                exporter,
                capacity,
                stats.clone(),
            ))
            .build()
    }

    fn end_spans(provider: &SdkTracerProvider, n: usize) {
        let tracer = provider.tracer("test");
        for _ in 0..n {
            drop(tracer.start("span"));
        }
    }

    #[test]
    fn spans_beyond_the_queue_are_dropped_and_counted_at_once() {
        let (exporter, stats) = (Stalled::default(), ExportStats::default());
        let provider = provider(exporter.clone(), 4, &stats);
        // The fourth span fills a batch, whose export hangs; it still holds its places.
        end_spans(&provider, 10);
        assert_eq!((stats.queued(), stats.dropped()), (4, 6));

        exporter.open();
        provider.force_flush().unwrap();
        provider.shutdown().unwrap();
        assert_eq!(
            (stats.exported(), stats.dropped(), stats.queued()),
            (4, 6, 0)
        );
    }

    #[test]
    fn shutdown_counts_what_it_could_not_export_once() {
        let (exporter, stats) = (Stalled::default(), ExportStats::default());
        let provider = provider(exporter.clone(), 4, &stats);
        end_spans(&provider, 6);
        assert!(
            provider
                .shutdown_with_timeout(Duration::from_millis(100))
                .is_err()
        );
        assert_eq!((stats.exported(), stats.dropped()), (0, 6));

        // The hung export completes after shutdown gave up on it: not counted again.
        exporter.open();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            (stats.exported(), stats.dropped(), stats.queued()),
            (0, 6, 0)
        );
    }

    #[test]
    fn loss_and_recovery_are_reported_once_each() {
        let captured = Captured::default();
        let layer = EcsLayer::new(ServiceIdentity::new("test"), Box::new(captured.clone()));
        let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
        let stats = ExportStats::default();
        let refused = || Err(OTelSdkError::InternalFailure("connection refused".into()));

        stats.settle(3, &refused());
        stats.settle(2, &refused());
        stats.settle(4, &Ok(()));
        stats.settle(4, &Ok(()));
        // A full queue while exports succeed is loss too.
        stats.count_dropped(1);
        stats.settle(4, &Ok(()));
        stats.settle(4, &Ok(()));

        let messages: Vec<(String, u64, String)> = captured
            .lines()
            .iter()
            .map(|l| {
                (
                    l["message"].as_str().unwrap().to_owned(),
                    l["telemetry.dropped"].as_u64().unwrap(),
                    l["error.message"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        let failing = "span export failing; spans are dropped".to_owned();
        let recovered = "span export recovered".to_owned();
        assert_eq!(
            messages,
            [
                (
                    failing.clone(),
                    3,
                    "Operation failed: connection refused".to_owned()
                ),
                (recovered.clone(), 5, String::new()),
                (failing, 6, "the span export queue is full".to_owned()),
                (recovered, 6, String::new()),
            ]
        );
        assert_eq!((stats.exported(), stats.dropped()), (16, 6));
    }
}
