//! Telemetry set-up: traces exported over OTLP (gRPC, or HTTP), logs as ECS JSON lines, W3C
//! propagation.
//!
//! [`init`] installs everything once per process and returns a [`TelemetryGuard`] whose drop
//! flushes spans and the lines still queued for stdout. Log lines go to stdout only: shipping
//! them is a log shipper's job (Filebeat, in compose), which keeps its place on disk and so
//! survives what an in-process shipper would not. Telemetry is best effort by design: an
//! unreachable collector means spans are dropped and counted, never a slow or failed request,
//! and a telemetry setting that cannot be honoured is logged as a warning and replaced by its
//! default, never a reason for a service not to start.

mod config;
mod ecs;
mod events;
mod export;
mod fields;
mod filter;
mod log_sampling;
mod metrics;
mod otlp;
mod proto;
mod sampling;
mod stdout;

use std::time::Duration;

use opentelemetry::propagation::TextMapCompositePropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::{Context, KeyValue, global};
use opentelemetry_otlp::{
    ExporterBuildError, Protocol, RetryPolicy, WithExportConfig, WithHttpConfig, WithTonicConfig,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::resource::EnvResourceDetector;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanExporter};
use opentelemetry_semantic_conventions::attribute::{
    DEPLOYMENT_ENVIRONMENT_NAME, ERROR_TYPE, EXCEPTION_MESSAGE, EXCEPTION_TYPE,
    SERVICE_INSTANCE_ID, SERVICE_NAMESPACE, SERVICE_VERSION,
};
use tokio::runtime::{Handle, RuntimeFlavor};
use tracing_subscriber::filter::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

use config::DEFAULT_LOG_FILTER;
pub use config::{LogFormat, OtlpProtocol, TelemetryConfig, VARIABLES};
pub use ecs::{EcsLayer, LineSink, ServiceIdentity};
pub use events::AUDIT_DATASET;
pub use export::{BaggageSpanProcessor, CountingBatchProcessor, CountingExporter, ExportStats};
pub use log_sampling::{LogSampling, SampledOut};
pub use metrics::instruments::{DB_DURATION_BUCKETS, HTTP_DURATION_BUCKETS};
pub(crate) use metrics::instruments::{INSTRUMENTS, Server as MetricServer};
pub use metrics::{CountingMetricExporter, METER_NAME, MetricExportStats, MetricsConfig, meter};
pub use sampling::{JaegerRemote, Sampling};
pub use stdout::{Stdout, StdoutGuard};

/// How long shutdown may spend flushing spans and metrics (both at once): services are killed 10 s after SIGTERM and need
/// most of that to drain their requests first.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);

/// Flushes spans, then the lines queued for stdout, when dropped.
#[must_use = "telemetry shuts down when the guard is dropped: bind it to a named variable"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
    /// Also the global meter provider, when metrics are exported.
    meter_provider: Option<SdkMeterProvider>,
    metric_stats: MetricExportStats,
    stats: ExportStats,
    /// Log lines the log-volume policy left out (not lost: never written).
    sampled_out: SampledOut,
    /// Dropped after the rest (fields drop after `Drop::drop`), so that the lines written while
    /// flushing spans still reach stdout.
    stdout: Option<StdoutGuard>,
}

impl TelemetryGuard {
    /// Counters of exported and dropped spans.
    pub fn stats(&self) -> &ExportStats {
        &self.stats
    }

    /// Log lines left out by the log-volume policy (`ORDERTRAIL_LOG_SAMPLE`), as opposed to
    /// lines lost because stdout did not keep up.
    pub fn log_lines_sampled_out(&self) -> u64 {
        self.sampled_out.get()
    }
}

impl Drop for TelemetryGuard {
    /// Flushes spans and metrics within [`SHUTDOWN_TIMEOUT`]; the stdout writer then writes
    /// what is queued.
    fn drop(&mut self) {
        let provider = self.provider.take();
        let meter_provider = self.meter_provider.take();
        // The batch processor's thread exports, and waiting for it blocks. The gRPC channel it
        // sends on is driven by tasks on the runtime, so it can only finish while this thread
        // waits if other threads run them: a multi-threaded runtime, with `block_in_place`
        // handing this worker's other tasks away meanwhile. Elsewhere the export still gets
        // its bounded attempt.
        match Handle::try_current() {
            Ok(runtime) if runtime.runtime_flavor() == RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| shut_down(provider, meter_provider));
            }
            _ => shut_down(provider, meter_provider),
        }
        self.stats.report_total();
        let sampled_out = self.sampled_out.get();
        if sampled_out > 0 {
            eprintln!(
                "telemetry: {sampled_out} log lines left out by the log sampling policy (not lost)"
            );
        }
    }
}

/// Shuts spans and metrics down at once, and waits at most [`SHUTDOWN_TIMEOUT`] for both.
///
/// The meter provider's shutdown (a last collection and export) waits for its reader up to a
/// fixed five seconds, longer than the budget: it runs on a thread of its own, and is left
/// behind if the spans' shutdown and the rest of the budget pass first.
fn shut_down(provider: Option<SdkTracerProvider>, meter_provider: Option<SdkMeterProvider>) {
    let deadline = std::time::Instant::now() + SHUTDOWN_TIMEOUT;
    let metrics_done = meter_provider.map(|meter_provider| {
        let (done, wait) = std::sync::mpsc::sync_channel(1);
        let spawned = std::thread::Builder::new()
            .name("ordertrail-metrics-shutdown".into())
            .spawn(move || {
                if let Err(err) = meter_provider.shutdown() {
                    eprintln!("telemetry shutdown (metrics): {err}");
                }
                let _ = done.send(());
            });
        (spawned, wait)
    });
    shut_down_spans(provider);
    if let Some((Ok(_thread), wait)) = metrics_done {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if wait.recv_timeout(left).is_err() {
            eprintln!("telemetry shutdown (metrics): gave up after {SHUTDOWN_TIMEOUT:?}");
        }
    }
}

fn shut_down_spans(provider: Option<SdkTracerProvider>) {
    if let Some(provider) = provider
        && let Err(err) = provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT)
    {
        eprintln!("telemetry shutdown: {err}");
    }
}

/// Installs the process-wide W3C propagators: trace context (`traceparent`, `tracestate`) and
/// `baggage`.
pub fn install_propagator() {
    global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ]));
}

/// Installs the global propagator, the tracer provider and the `tracing` subscriber.
///
/// Call it once, first thing in `main`, inside the tokio runtime. It fails only when a global
/// subscriber is already installed; settings it cannot honour are logged as warnings.
pub fn init(config: &TelemetryConfig) -> anyhow::Result<TelemetryGuard> {
    install_propagator();
    let (stdout, stdout_guard) = Stdout::start();
    let log_lines_dropped = stdout.dropped_count();
    let resource = resource(&config.service_name);
    let (subscriber, mut guard, mut warnings) =
        build_with(config, resource.clone(), Box::new(stdout));
    guard.stdout = Some(stdout_guard);
    subscriber.try_init()?;
    guard.meter_provider = metrics::meter_provider(
        &config.metrics,
        resource,
        &guard.metric_stats,
        &mut warnings,
    );
    if let Some(meter_provider) = &guard.meter_provider {
        global::set_meter_provider(meter_provider.clone());
        metrics::observe_health(
            &meter(),
            metrics::Health {
                spans: guard.stats.clone(),
                span_queue_capacity: config.span_queue_size,
                span_exporter: span_exporter_type(config.otlp_protocol),
                log_lines_dropped: std::sync::Arc::new(move || {
                    log_lines_dropped.load(std::sync::atomic::Ordering::Relaxed)
                }),
                metrics: guard.metric_stats.clone(),
                metric_exporter: config.metrics.exporter_type(),
            },
        );
    }
    for warning in warnings {
        tracing::warn!("telemetry: {warning}");
    }
    Ok(guard)
}

/// `otel.component.type` of the span exporter, as the conventions name OTLP exporters.
fn span_exporter_type(protocol: OtlpProtocol) -> &'static str {
    match protocol {
        OtlpProtocol::Grpc => "otlp_grpc_span_exporter",
        OtlpProtocol::HttpProtobuf => "otlp_http_span_exporter",
        OtlpProtocol::HttpJson => "otlp_http_json_span_exporter",
    }
}

/// [`build_with`] the service's [`resource`].
#[cfg(test)]
fn build(
    config: &TelemetryConfig,
    stdout: Box<dyn LineSink>,
) -> (
    impl tracing::Subscriber + Send + Sync + 'static,
    TelemetryGuard,
    Vec<String>,
) {
    build_with(config, resource(&config.service_name), stdout)
}

/// The subscriber [`init`] installs, its guard (without a meter provider, which [`init`]
/// adds), and the warnings to log once it is installed. Spans carry `resource`; JSON lines go
/// to `stdout`.
fn build_with(
    config: &TelemetryConfig,
    resource: Resource,
    stdout: Box<dyn LineSink>,
) -> (
    impl tracing::Subscriber + Send + Sync + 'static,
    TelemetryGuard,
    Vec<String>,
) {
    let mut warnings = config.warnings.clone();
    let stats = ExportStats::default();
    let provider = tracer_provider(config, resource.clone(), &stats, &mut warnings);
    // Each span carries the attributes the services give it and nothing per call site or
    // thread: the layer's defaults add seven more to every span (`code.file.path`,
    // `code.module.name`, `code.line.number`, `thread.id`, `thread.name`, `busy_ns`,
    // `idle_ns`), each converted, queued, encoded and sent, and the timings cost two clock
    // reads per poll of every instrumented future. A span's name and `url.template` or
    // `db.query.text` already say which code made it.
    let otel_layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("ordertrail"))
        .with_target(false)
        .with_level(false)
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_filter(filter::span_filter());

    let env_filter = EnvFilter::try_new(&config.log_filter).unwrap_or_else(|err| {
        warnings.push(format!(
            "log filter {:?}: {err}; using {DEFAULT_LOG_FILTER}",
            config.log_filter
        ));
        EnvFilter::new(DEFAULT_LOG_FILTER)
    });
    let log_filter = filter::log_filter(env_filter);
    let sampled_out = SampledOut::default();
    let log_layer = match config.log_format {
        LogFormat::Json => {
            // Log lines name the service exactly as its spans do.
            let identity = ServiceIdentity::from_resource(&resource);
            EcsLayer::new(identity, stdout)
                .with_sampling(config.log_sampling.clone(), sampled_out.clone())
                .with_filter(log_filter)
                .boxed()
        }
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(log_filter)
            .boxed(),
    };
    let subscriber = Registry::default().with(otel_layer).with(log_layer);
    let guard = TelemetryGuard {
        provider: Some(provider),
        meter_provider: None,
        metric_stats: MetricExportStats::default(),
        stats,
        sampled_out,
        stdout: None,
    };
    (subscriber, guard, warnings)
}

/// The tracer provider: spans sampled as [`TelemetryConfig::sampling`] says (parent-based
/// always), then batched and exported.
///
/// Without an endpoint (`OTEL_SDK_DISABLED=true`), or when the exporter cannot be built, it has
/// no processor at all: spans still get ids, so logs, `traceresponse`, problem `trace_id` and
/// outgoing `traceparent` still work, but nothing is queued or exported.
fn tracer_provider(
    config: &TelemetryConfig,
    resource: Resource,
    stats: &ExportStats,
    warnings: &mut Vec<String>,
) -> SdkTracerProvider {
    let sampler = config.sampling.sampler(&config.service_name, warnings);
    let provider = SdkTracerProvider::builder()
        .with_resource(resource)
        .with_sampler(sampler);
    let Some(endpoint) = &config.otlp_endpoint else {
        return provider.build();
    };
    // One processor: the SDK hands each finished span to every processor, cloning it for all
    // but the last, so the baggage copy lives in the batching processor.
    fn batched<E: SpanExporter + 'static>(
        exporter: E,
        config: &TelemetryConfig,
        stats: &ExportStats,
    ) -> CountingBatchProcessor {
        CountingBatchProcessor::new(exporter, config.span_queue_size, stats.clone())
            .with_baggage(BaggageSpanProcessor::new(&[crate::CUSTOMER_ID]))
    }
    let built = if config.otlp_protocol == OtlpProtocol::Grpc && !config.otlp_needs_sdk_exporter {
        otlp::GrpcSpanExporter::new(endpoint, config.otlp_timeout)
            .map(|exporter| batched(exporter, config, stats))
    } else {
        otlp_exporter(config.otlp_protocol, endpoint)
            .map(|exporter| batched(exporter, config, stats))
            .map_err(|err| err.to_string())
    };
    match built {
        Ok(processor) => provider.with_span_processor(processor).build(),
        Err(err) => {
            warnings.push(format!(
                "cannot export spans to {endpoint}: {err}; spans are not exported"
            ));
            provider.build()
        }
    }
}

/// opentelemetry-otlp's span exporter for `protocol`, sending to `endpoint` as given: for
/// HTTP, and for gRPC with headers, compression or TLS (see [`otlp`] for the plain gRPC case).
///
/// It never retries. The exporter's default policy retries a failed batch up to three times
/// with backoff, during which its single thread exports nothing else, the queue fills and, at
/// shutdown, the flush spends its whole budget on a collector that refuses connections.
/// Telemetry is best effort: the next batch is the retry.
///
/// gRPC needs to be built inside the tokio runtime, whose tasks drive its channel. HTTP uses
/// reqwest's blocking client, which runs on its own thread: the batch processor's thread calls
/// the exporter outside any runtime.
fn otlp_exporter(
    protocol: OtlpProtocol,
    endpoint: &str,
) -> Result<opentelemetry_otlp::SpanExporter, ExporterBuildError> {
    let builder = opentelemetry_otlp::SpanExporter::builder;
    let http = |protocol| {
        builder()
            .with_http()
            .with_protocol(protocol)
            .with_endpoint(endpoint)
            .with_retry_policy(RetryPolicy::disabled())
            .build()
    };
    match protocol {
        OtlpProtocol::Grpc => builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_retry_policy(RetryPolicy::disabled())
            .build(),
        OtlpProtocol::HttpProtobuf => http(Protocol::HttpBinary),
        OtlpProtocol::HttpJson => http(Protocol::HttpJson),
    }
}

/// `service.*` and `deployment.environment.name`, overridable by `OTEL_RESOURCE_ATTRIBUTES`;
/// `service.name` last, because `OTEL_SERVICE_NAME` (already in it) wins over everything.
pub fn resource(service_name: &str) -> Resource {
    Resource::builder_empty()
        .with_attributes([
            KeyValue::new(SERVICE_NAMESPACE, "ordertrail"),
            KeyValue::new(SERVICE_VERSION, env!("CARGO_PKG_VERSION")),
            KeyValue::new(SERVICE_INSTANCE_ID, uuid::Uuid::new_v4().to_string()),
            KeyValue::new(DEPLOYMENT_ENVIRONMENT_NAME, "development"),
        ])
        .with_detector(Box::new(EnvResourceDetector::new()))
        .with_service_name(service_name.to_owned())
        .build()
}

/// The trace id of the current span as 32 lowercase hex digits, if there is a valid one.
pub fn current_trace_id() -> Option<String> {
    let cx = Context::current();
    let span = cx.span();
    let span_context = span.span_context();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

/// `error` and its causes, outermost first, joined by `": "`: the one rendering of an error
/// that spans (status, `exception.message`) and log lines (`error.message`) share.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// Marks `span` failed: status Error, `error.type`, and an `exception` event carrying the
/// error's message and cause chain. It writes no log line; to write the one that goes with it,
/// use [`record_failure!`](crate::record_failure).
pub fn record_error(span: &tracing::Span, error_type: &str, error: &dyn std::error::Error) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let message = error_chain(error);
    span.set_status(opentelemetry::trace::Status::error(message.clone()));
    span.set_attribute(ERROR_TYPE, error_type.to_owned());
    span.add_event(
        "exception",
        vec![
            KeyValue::new(EXCEPTION_TYPE, error_type.to_owned()),
            KeyValue::new(EXCEPTION_MESSAGE, message),
        ],
    );
}

#[cfg(test)]
pub(crate) mod tests;
