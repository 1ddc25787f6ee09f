//! Span processing around the OTLP exporter: baggage copied onto spans, lost spans counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry::baggage::BaggageExt;
use opentelemetry::trace::Span as _;
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};

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

/// Counters of what the exporter delivered and lost; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct ExportStats {
    inner: Arc<StatsInner>,
}

#[derive(Debug, Default)]
struct StatsInner {
    exported: AtomicU64,
    dropped: AtomicU64,
    failing: AtomicBool,
}

impl ExportStats {
    /// Spans the collector accepted.
    pub fn exported(&self) -> u64 {
        self.inner.exported.load(Ordering::Relaxed)
    }

    /// Spans lost because the collector could not be reached or refused them.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    fn record(&self, spans: u64, result: &OTelSdkResult) {
        match result {
            Ok(()) => {
                self.inner.exported.fetch_add(spans, Ordering::Relaxed);
                if self.inner.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(telemetry.dropped = self.dropped(), "span export recovered");
                }
            }
            Err(err) => {
                let dropped = self.inner.dropped.fetch_add(spans, Ordering::Relaxed) + spans;
                // One line when loss starts and one when it ends, not one per batch.
                if !self.inner.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(telemetry.dropped = dropped, error.message = %err, "span export failing; spans are dropped");
                }
            }
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

/// Wraps an exporter and counts the spans of every batch it failed to deliver.
///
/// The batch processor in front of it keeps a bounded queue, so a collector that is down costs
/// at most that queue's memory; this wrapper makes the loss visible.
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
        self.stats.record(spans, &result);
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
