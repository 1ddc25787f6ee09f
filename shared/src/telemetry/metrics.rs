//! Metrics: the OpenTelemetry metrics SDK, exported over OTLP to where spans go.
//!
//! [`meter_provider`] builds an `SdkMeterProvider` with one periodic reader (a thread of the
//! SDK's own, which collects every `OTEL_METRIC_EXPORT_INTERVAL` and exports) and
//! opentelemetry-otlp's metric exporter, with cumulative temporality (Prometheus, downstream,
//! wants running totals). [`super::init`] installs it as the global meter provider, so that
//! any code takes its instruments from [`meter`] (or `opentelemetry::global::meter`).
//!
//! A request never waits for metrics: recording is an in-memory aggregation, and the export
//! runs on the reader's thread with the exporter's deadline (`OTEL_EXPORTER_OTLP_TIMEOUT`),
//! never retried. A failed export is counted by [`CountingMetricExporter`] and reported once
//! when it starts and once when it ends, like lost spans.
//!
//! The semantic-convention instruments of the HTTP and database layers are in
//! [`instruments`]; telemetry's own health (spans and log lines lost, failed exports) is
//! observed by [`observe_health`].

pub(crate) mod instruments;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry::metrics::Meter;
use opentelemetry::{InstrumentationScope, KeyValue, global};
use opentelemetry_otlp::{
    ExporterBuildError, MetricExporter, Protocol, RetryPolicy, WithExportConfig, WithHttpConfig,
    WithTonicConfig,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{
    OTEL_METRIC_EXPORT_INTERVAL, OTEL_METRIC_EXPORT_INTERVAL_DEFAULT, PeriodicReader,
    SdkMeterProvider, Temporality,
};
use opentelemetry_semantic_conventions::attribute::{ERROR_TYPE, OTEL_COMPONENT_TYPE};
use opentelemetry_semantic_conventions::metric::{
    OTEL_SDK_EXPORTER_METRIC_DATA_POINT_EXPORTED, OTEL_SDK_EXPORTER_SPAN_EXPORTED,
    OTEL_SDK_PROCESSOR_LOG_PROCESSED, OTEL_SDK_PROCESSOR_SPAN_PROCESSED,
    OTEL_SDK_PROCESSOR_SPAN_QUEUE_CAPACITY, OTEL_SDK_PROCESSOR_SPAN_QUEUE_SIZE,
};

use super::{ExportStats, OtlpProtocol};

/// The instrumentation scope of every instrument the suite makes.
pub const METER_NAME: &str = "ordertrail";

/// `error.type` of data lost because a queue was full, as the conventions name it.
const QUEUE_FULL: &str = "queue_full";
/// `error.type` of data in an export that failed (refused, unreachable, timed out).
const EXPORT_FAILED: &str = "export_failed";

/// The meter of the suite's instruments (scope `ordertrail`, the crate's version), from the
/// global meter provider [`super::init`] installs.
///
/// Take instruments from it after `init` (a `LazyLock` or a value built at start-up): before,
/// the global provider is a no-op one, and instruments made from it stay no-ops.
pub fn meter() -> Meter {
    global::meter_with_scope(
        InstrumentationScope::builder(METER_NAME)
            .with_version(env!("CARGO_PKG_VERSION"))
            .build(),
    )
}

/// Where and how metrics are exported, from the standard environment variables.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsConfig {
    /// The OTLP endpoint metrics are sent to. For gRPC: `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`
    /// or `OTEL_EXPORTER_OTLP_ENDPOINT`, default `http://localhost:4317`. For HTTP:
    /// `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`, or `OTEL_EXPORTER_OTLP_ENDPOINT` with
    /// `/v1/metrics` appended, default `http://localhost:4318/v1/metrics`.
    ///
    /// `None` when `OTEL_METRICS_EXPORTER=none` or `OTEL_SDK_DISABLED=true`: instruments
    /// record into no-ops and nothing is sent.
    pub endpoint: Option<String>,
    /// `OTEL_EXPORTER_OTLP_METRICS_PROTOCOL` or `OTEL_EXPORTER_OTLP_PROTOCOL`, default gRPC.
    pub protocol: OtlpProtocol,
    /// How long one export may take: `OTEL_EXPORTER_OTLP_METRICS_TIMEOUT` or
    /// `OTEL_EXPORTER_OTLP_TIMEOUT` (milliseconds), ten seconds by default. Headers and
    /// compression (`OTEL_EXPORTER_OTLP_[METRICS_]HEADERS`, `..._COMPRESSION`) are read by
    /// the exporter itself.
    pub timeout: Duration,
    /// `OTEL_METRIC_EXPORT_INTERVAL` (milliseconds), a minute by default.
    pub interval: Duration,
}

impl MetricsConfig {
    /// Reads the metrics settings from `var`; what cannot be used becomes a warning and its
    /// default. `disabled` is `OTEL_SDK_DISABLED`.
    pub(super) fn from_vars(
        var: impl Fn(&str) -> Option<String>,
        disabled: bool,
        warnings: &mut Vec<String>,
    ) -> Self {
        let exporting = match var("OTEL_METRICS_EXPORTER") {
            None => true,
            Some(value) => match value.trim().to_ascii_lowercase().as_str() {
                "otlp" => true,
                "none" => false,
                _ => {
                    warnings.push(format!(
                        "OTEL_METRICS_EXPORTER={value:?} is not supported (otlp or none); using otlp"
                    ));
                    true
                }
            },
        };
        let protocol = match var("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL").map(|v| v.parse()) {
            Some(Ok(protocol)) => protocol,
            Some(Err(err)) => {
                warnings.push(format!(
                    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL: {err}; using grpc"
                ));
                OtlpProtocol::Grpc
            }
            // The generic variable was read, and warned about, for spans already.
            None => var("OTEL_EXPORTER_OTLP_PROTOCOL")
                .and_then(|v| v.parse().ok())
                .unwrap_or_default(),
        };
        let endpoint = match protocol {
            OtlpProtocol::Grpc => var("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
                .or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"))
                .unwrap_or_else(|| "http://localhost:4317".to_owned()),
            // OTLP/HTTP: the generic endpoint is a base URL for every signal.
            OtlpProtocol::HttpProtobuf | OtlpProtocol::HttpJson => {
                var("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT").unwrap_or_else(|| {
                    let base = var("OTEL_EXPORTER_OTLP_ENDPOINT")
                        .unwrap_or_else(|| "http://localhost:4318".to_owned());
                    format!("{}/v1/metrics", base.trim_end_matches('/'))
                })
            }
        };
        let millis = |name: &str| var(name)?.trim().parse::<u64>().ok();
        let timeout = millis("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT")
            .or_else(|| millis("OTEL_EXPORTER_OTLP_TIMEOUT"))
            .map_or(Duration::from_secs(10), Duration::from_millis);
        let interval = match var(OTEL_METRIC_EXPORT_INTERVAL) {
            None => OTEL_METRIC_EXPORT_INTERVAL_DEFAULT,
            Some(value) => match value.trim().parse::<u64>() {
                Ok(ms) if ms > 0 => Duration::from_millis(ms),
                _ => {
                    warnings.push(format!(
                        "{OTEL_METRIC_EXPORT_INTERVAL}={value:?} is not a positive number of milliseconds; using {}",
                        OTEL_METRIC_EXPORT_INTERVAL_DEFAULT.as_millis()
                    ));
                    OTEL_METRIC_EXPORT_INTERVAL_DEFAULT
                }
            },
        };
        Self {
            endpoint: (exporting && !disabled).then_some(endpoint),
            protocol,
            timeout,
            interval,
        }
    }

    /// `otel.component.type` of the exporter, as the conventions name OTLP exporters.
    pub(super) fn exporter_type(&self) -> &'static str {
        match self.protocol {
            OtlpProtocol::Grpc => "otlp_grpc_metric_exporter",
            OtlpProtocol::HttpProtobuf => "otlp_http_metric_exporter",
            OtlpProtocol::HttpJson => "otlp_http_json_metric_exporter",
        }
    }
}

/// The meter provider: a periodic reader exporting over OTLP as `config` says, or `None` when
/// metrics are off or the exporter cannot be built (then a warning says why, and the global
/// provider stays a no-op one).
///
/// gRPC must be built inside the tokio runtime, whose tasks drive its channel; the reader's
/// thread only waits for each export.
pub(super) fn meter_provider(
    config: &MetricsConfig,
    resource: Resource,
    stats: &MetricExportStats,
    warnings: &mut Vec<String>,
) -> Option<SdkMeterProvider> {
    let endpoint = config.endpoint.as_deref()?;
    match otlp_exporter(config, endpoint) {
        Ok(exporter) => {
            let reader = PeriodicReader::builder(CountingMetricExporter::new(exporter, stats))
                .with_interval(config.interval)
                .build();
            Some(
                SdkMeterProvider::builder()
                    .with_resource(resource)
                    .with_reader(reader)
                    .build(),
            )
        }
        Err(err) => {
            warnings.push(format!(
                "cannot export metrics to {endpoint}: {err}; metrics are not exported"
            ));
            None
        }
    }
}

/// opentelemetry-otlp's metric exporter, without retries (the next interval is the retry, as
/// for spans: a retried export would hold the reader's thread past its interval).
fn otlp_exporter(
    config: &MetricsConfig,
    endpoint: &str,
) -> Result<MetricExporter, ExporterBuildError> {
    let builder = || MetricExporter::builder().with_temporality(Temporality::Cumulative);
    let http = |protocol| {
        builder()
            .with_http()
            .with_protocol(protocol)
            .with_endpoint(endpoint)
            .with_timeout(config.timeout)
            .with_retry_policy(RetryPolicy::disabled())
            .build()
    };
    match config.protocol {
        OtlpProtocol::Grpc => builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(config.timeout)
            .with_retry_policy(RetryPolicy::disabled())
            .build(),
        OtlpProtocol::HttpProtobuf => http(Protocol::HttpBinary),
        OtlpProtocol::HttpJson => http(Protocol::HttpJson),
    }
}

/// Counters of metric data points exported and lost; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct MetricExportStats {
    inner: Arc<MetricStatsInner>,
}

#[derive(Debug, Default)]
struct MetricStatsInner {
    exported: AtomicU64,
    failed: AtomicU64,
    /// Whether a failure was reported and recovery was not yet.
    failing: AtomicBool,
}

impl MetricExportStats {
    /// Data points the collector accepted.
    pub fn exported(&self) -> u64 {
        self.inner.exported.load(Ordering::Relaxed)
    }

    /// Data points in exports that failed.
    pub fn failed(&self) -> u64 {
        self.inner.failed.load(Ordering::Relaxed)
    }

    /// Counts an export of `points` data points with its `result`; one `warn` when exports
    /// start failing, one `info` when one succeeds again.
    fn settle(&self, points: u64, result: &OTelSdkResult) {
        match result {
            Ok(()) => {
                self.inner.exported.fetch_add(points, Ordering::Relaxed);
                if self.inner.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(telemetry.dropped = self.failed(), "metric export recovered");
                }
            }
            Err(err) => {
                self.inner.failed.fetch_add(points, Ordering::Relaxed);
                if !self.inner.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        telemetry.dropped = self.failed(),
                        error.message = %err,
                        "metric export failing; data points are dropped"
                    );
                }
            }
        }
    }
}

/// Wraps a metric exporter and counts what each export carried in [`MetricExportStats`].
#[derive(Debug)]
pub struct CountingMetricExporter<E> {
    inner: E,
    stats: MetricExportStats,
}

impl<E> CountingMetricExporter<E> {
    /// Wraps `inner`, counting into `stats`.
    pub fn new(inner: E, stats: &MetricExportStats) -> Self {
        Self {
            inner,
            stats: stats.clone(),
        }
    }
}

impl<E: PushMetricExporter> PushMetricExporter for CountingMetricExporter<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let points = data_points(metrics);
        let result = self.inner.export(metrics).await;
        self.stats.settle(points, &result);
        result
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }
    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}

/// How many data points `metrics` holds.
fn data_points(metrics: &ResourceMetrics) -> u64 {
    fn count<T>(data: &MetricData<T>) -> usize {
        match data {
            MetricData::Gauge(gauge) => gauge.data_points().count(),
            MetricData::Sum(sum) => sum.data_points().count(),
            MetricData::Histogram(histogram) => histogram.data_points().count(),
            MetricData::ExponentialHistogram(histogram) => histogram.data_points().count(),
        }
    }
    let points: usize = metrics
        .scope_metrics()
        .flat_map(|scope| scope.metrics())
        .map(|metric| match metric.data() {
            AggregatedMetrics::F64(data) => count(data),
            AggregatedMetrics::U64(data) => count(data),
            AggregatedMetrics::I64(data) => count(data),
        })
        .sum();
    points as u64
}

/// What [`observe_health`] reads: the counters telemetry keeps of itself.
pub(super) struct Health {
    /// Spans exported and lost.
    pub spans: ExportStats,
    /// The span export queue's capacity (`OTEL_BSP_MAX_QUEUE_SIZE`).
    pub span_queue_capacity: usize,
    /// `otel.component.type` of the span exporter.
    pub span_exporter: &'static str,
    /// Log lines dropped because stdout did not keep up.
    pub log_lines_dropped: Arc<dyn Fn() -> u64 + Send + Sync>,
    /// Metric data points exported and lost, and the exporter's `otel.component.type`.
    pub metrics: MetricExportStats,
    pub metric_exporter: &'static str,
}

/// Observable instruments reading telemetry's own counters at each collection, under the
/// `otel.sdk.*` names of the conventions: spans processed (and dropped with
/// `error.type=queue_full`), the span queue's size and capacity, spans and metric data points
/// exported (failed ones with `error.type=export_failed`), and log lines dropped by the stdout
/// writer (`otel.sdk.processor.log.processed` with `error.type=queue_full`). They cost nothing
/// between collections.
pub(super) fn observe_health(meter: &Meter, health: Health) {
    let processor = KeyValue::new(OTEL_COMPONENT_TYPE, "batching_span_processor");
    let spans = health.spans.clone();
    let attributes = [
        [processor.clone()].to_vec(),
        [processor.clone(), KeyValue::new(ERROR_TYPE, QUEUE_FULL)].to_vec(),
    ];
    meter
        .u64_observable_counter(OTEL_SDK_PROCESSOR_SPAN_PROCESSED)
        .with_unit("{span}")
        .with_description("Spans that ended and were queued for export, or dropped")
        .with_callback(move |observer| {
            observer.observe(spans.admitted(), &attributes[0]);
            observer.observe(spans.queue_full(), &attributes[1]);
        })
        .build();
    let spans = health.spans.clone();
    let attributes = [processor.clone()];
    meter
        .i64_observable_up_down_counter(OTEL_SDK_PROCESSOR_SPAN_QUEUE_SIZE)
        .with_unit("{span}")
        .with_description("Spans waiting for export or being exported")
        .with_callback(move |observer| observer.observe(spans.queued() as i64, &attributes))
        .build();
    let capacity = health.span_queue_capacity as i64;
    let attributes = [processor];
    meter
        .i64_observable_up_down_counter(OTEL_SDK_PROCESSOR_SPAN_QUEUE_CAPACITY)
        .with_unit("{span}")
        .with_description("Spans the export queue holds at most")
        .with_callback(move |observer| observer.observe(capacity, &attributes))
        .build();

    let exporter = KeyValue::new(OTEL_COMPONENT_TYPE, health.span_exporter);
    let spans = health.spans;
    let attributes = [
        [exporter.clone()].to_vec(),
        [exporter, KeyValue::new(ERROR_TYPE, EXPORT_FAILED)].to_vec(),
    ];
    meter
        .u64_observable_counter(OTEL_SDK_EXPORTER_SPAN_EXPORTED)
        .with_unit("{span}")
        .with_description("Spans whose export finished, successfully or not")
        .with_callback(move |observer| {
            observer.observe(spans.exported(), &attributes[0]);
            observer.observe(spans.failed(), &attributes[1]);
        })
        .build();

    let exporter = KeyValue::new(OTEL_COMPONENT_TYPE, health.metric_exporter);
    let metrics = health.metrics;
    let attributes = [
        [exporter.clone()].to_vec(),
        [exporter, KeyValue::new(ERROR_TYPE, EXPORT_FAILED)].to_vec(),
    ];
    meter
        .u64_observable_counter(OTEL_SDK_EXPORTER_METRIC_DATA_POINT_EXPORTED)
        .with_unit("{data_point}")
        .with_description("Metric data points whose export finished, successfully or not")
        .with_callback(move |observer| {
            observer.observe(metrics.exported(), &attributes[0]);
            observer.observe(metrics.failed(), &attributes[1]);
        })
        .build();

    let dropped = health.log_lines_dropped;
    let attributes = [
        KeyValue::new(OTEL_COMPONENT_TYPE, "ordertrail_stdout_writer"),
        KeyValue::new(ERROR_TYPE, QUEUE_FULL),
    ];
    meter
        .u64_observable_counter(OTEL_SDK_PROCESSOR_LOG_PROCESSED)
        .with_unit("{log_record}")
        .with_description("Log lines dropped because stdout did not keep up")
        .with_callback(move |observer| observer.observe(dropped(), &attributes))
        .build();
}

#[cfg(test)]
mod tests;
