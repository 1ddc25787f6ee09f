//! Telemetry set-up: traces exported over OTLP/gRPC, logs as ECS JSON lines, W3C propagation.
//!
//! [`init`] installs everything once per process and returns a [`TelemetryGuard`] whose drop
//! flushes and shuts the exporter down. Telemetry is best effort by design: an unreachable
//! collector means spans are dropped and counted, never a slow or failed request.

mod ecs;
mod export;
pub mod logstash;
pub mod receiver;

use std::time::Duration;

use opentelemetry::propagation::TextMapCompositePropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::{Context, KeyValue, global};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::resource::EnvResourceDetector;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

pub use ecs::{EcsLayer, LineSink, ServiceIdentity, Stdout};
pub use export::{BaggageSpanProcessor, CountingExporter, ExportStats};

/// How long shutdown may spend flushing spans before giving up.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);

/// The default filter for log lines when `RUST_LOG` is not set.
const DEFAULT_LOG_FILTER: &str = "info,sqlx=warn,hyper=warn,h2=warn,tower=warn,tonic=warn,reqwest=warn,opentelemetry=warn,opentelemetry_sdk=warn";

/// The environment variables telemetry reads, itself or through the OpenTelemetry SDK and
/// exporter (which also honour the other standard `OTEL_EXPORTER_OTLP_*` and `OTEL_BSP_*`
/// variables).
pub const VARIABLES: &[&str] = &[
    "OTEL_SERVICE_NAME",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_SDK_DISABLED",
    "LOG_FORMAT",
    "RUST_LOG",
    "LOGSTASH_ADDR",
];

/// Log line format, from `LOG_FORMAT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// ECS JSON, one object per line (the default).
    #[default]
    Json,
    /// Human-readable lines, for a terminal.
    Pretty,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "json" => Ok(Self::Json),
            "pretty" => Ok(Self::Pretty),
            other => Err(format!(
                "unknown LOG_FORMAT {other:?}: expected json or pretty"
            )),
        }
    }
}

/// Everything telemetry needs, read from the standard OpenTelemetry environment variables.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// `service.name`: `OTEL_SERVICE_NAME`, else the role's name.
    pub service_name: String,
    /// OTLP/gRPC endpoint: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`,
    /// default `http://localhost:4317`. `None` disables export (`OTEL_SDK_DISABLED=true`).
    pub otlp_endpoint: Option<String>,
    /// `LOG_FORMAT`: `json` (default) or `pretty`.
    pub log_format: LogFormat,
    /// `RUST_LOG`, default [`DEFAULT_LOG_FILTER`].
    pub log_filter: String,
    /// `LOGSTASH_ADDR`: `host:port` of a Logstash `tcp` input to ship log lines to as well.
    pub logstash_addr: Option<String>,
}

impl TelemetryConfig {
    /// Reads the configuration from the environment, with `default_service_name` for
    /// `service.name` when `OTEL_SERVICE_NAME` is not set.
    pub fn from_env(default_service_name: &str) -> anyhow::Result<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        if let Some(protocol) = var("OTEL_EXPORTER_OTLP_PROTOCOL")
            && protocol != "grpc"
        {
            anyhow::bail!("OTEL_EXPORTER_OTLP_PROTOCOL={protocol} is not supported: use grpc");
        }
        let endpoint = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"))
            .unwrap_or_else(|| "http://localhost:4317".to_owned());
        Ok(Self {
            service_name: var("OTEL_SERVICE_NAME")
                .unwrap_or_else(|| default_service_name.to_owned()),
            otlp_endpoint: (!disabled).then_some(endpoint),
            log_format: var("LOG_FORMAT")
                .map(|v| v.parse())
                .transpose()
                .map_err(anyhow::Error::msg)?
                .unwrap_or_default(),
            log_filter: var("RUST_LOG").unwrap_or_else(|| DEFAULT_LOG_FILTER.to_owned()),
            logstash_addr: var("LOGSTASH_ADDR"),
        })
    }
}

/// Flushes and shuts down the tracer provider when dropped.
#[must_use = "telemetry shuts down when the guard is dropped: bind it to a named variable"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
    shipper: Option<logstash::LogstashShipper>,
    stats: ExportStats,
}

impl TelemetryGuard {
    /// Counters of exported and dropped spans.
    pub fn stats(&self) -> &ExportStats {
        &self.stats
    }
}

impl Drop for TelemetryGuard {
    /// Flushes spans, then log lines, each within [`SHUTDOWN_TIMEOUT`].
    fn drop(&mut self) {
        let provider = self.provider.take();
        let shipper = self.shipper.take();
        let runtime = tokio::runtime::Handle::try_current().ok();
        let shutdown = {
            let runtime = runtime.clone();
            move || {
                if let Some(provider) = provider
                    && let Err(err) = provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT)
                {
                    eprintln!("telemetry shutdown: {err}");
                }
                // Blocking on the shipper is only possible from `block_in_place`; on a
                // current-thread runtime its queued lines are dropped with it.
                if let (Some(shipper), Some(runtime)) = (shipper, runtime)
                    && runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
                {
                    runtime.block_on(shipper.shutdown(SHUTDOWN_TIMEOUT));
                }
            }
        };
        // The batch exporter's last flush runs gRPC on the tokio runtime, so a multi-threaded
        // runtime must keep driving I/O while this thread waits.
        match runtime {
            Some(handle)
                if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread =>
            {
                tokio::task::block_in_place(shutdown);
            }
            _ => shutdown(),
        }
        self.stats.report_total();
    }
}

/// Installs the global propagator, the tracer provider and the `tracing` subscriber.
///
/// Call it once, first thing in `main`, inside the tokio runtime.
pub fn init(config: &TelemetryConfig) -> anyhow::Result<TelemetryGuard> {
    global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ]));

    let stats = ExportStats::default();
    let provider = match &config.otlp_endpoint {
        Some(endpoint) => Some(tracer_provider(config, endpoint, stats.clone())?),
        None => None,
    };
    let otel_layer = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("ordertrail"))
            .with_target(false)
            .with_level(false)
            .with_filter(span_filter())
    });

    let env_filter = EnvFilter::try_new(&config.log_filter)?;
    let identity = ServiceIdentity::new(&config.service_name);
    let mut sinks: Vec<Box<dyn LineSink>> = vec![Box::new(Stdout)];
    let shipper = config.logstash_addr.as_ref().map(|addr| {
        let (sink, shipper) =
            logstash::LogstashSink::start(addr.clone(), logstash::ShipperConfig::default());
        sinks.push(Box::new(sink));
        shipper
    });
    let log_layer = match config.log_format {
        LogFormat::Json => EcsLayer::new(identity, sinks)
            .with_filter(env_filter)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(env_filter)
            .boxed(),
    };
    Registry::default()
        .with(otel_layer)
        .with(log_layer)
        .try_init()?;
    Ok(TelemetryGuard {
        provider,
        shipper,
        stats,
    })
}

/// Spans of our own crates only: the exporter's HTTP/2 and gRPC stack must not trace itself.
fn span_filter() -> Targets {
    Targets::new()
        .with_default(tracing::Level::INFO)
        .with_target("h2", tracing::level_filters::LevelFilter::OFF)
        .with_target("hyper", tracing::level_filters::LevelFilter::OFF)
        .with_target("hyper_util", tracing::level_filters::LevelFilter::OFF)
        .with_target("tonic", tracing::level_filters::LevelFilter::OFF)
        .with_target("tower", tracing::level_filters::LevelFilter::OFF)
        .with_target("reqwest", tracing::level_filters::LevelFilter::OFF)
        .with_target("sqlx", tracing::level_filters::LevelFilter::OFF)
        .with_target("opentelemetry", tracing::level_filters::LevelFilter::OFF)
        .with_target(
            "opentelemetry_sdk",
            tracing::level_filters::LevelFilter::OFF,
        )
        .with_target(
            "opentelemetry_otlp",
            tracing::level_filters::LevelFilter::OFF,
        )
}

fn tracer_provider(
    config: &TelemetryConfig,
    endpoint: &str,
    stats: ExportStats,
) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()?;
    // The sampler comes from OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG, read by the SDK,
    // whose default is parent-based always-on.
    Ok(SdkTracerProvider::builder()
        .with_resource(resource(&config.service_name))
        .with_span_processor(BaggageSpanProcessor::new(&[crate::CUSTOMER_ID]))
        .with_batch_exporter(CountingExporter::new(exporter, stats))
        .build())
}

/// `service.*` and `deployment.environment.name`, overridable by `OTEL_RESOURCE_ATTRIBUTES`;
/// `service.name` last, because `OTEL_SERVICE_NAME` (already in it) wins over everything.
pub fn resource(service_name: &str) -> Resource {
    Resource::builder_empty()
        .with_attributes([
            KeyValue::new("service.namespace", "ordertrail"),
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("service.instance.id", uuid::Uuid::new_v4().to_string()),
            KeyValue::new("deployment.environment.name", "development"),
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

/// Marks `span` failed: status Error, `error.type`, and an `exception` event carrying the
/// error's message and cause chain. It writes no log line; the caller decides on that.
pub fn record_error(span: &tracing::Span, error_type: &str, error: &dyn std::error::Error) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message = format!("{message}: {cause}");
        source = cause.source();
    }
    span.set_status(opentelemetry::trace::Status::error(message.clone()));
    span.set_attribute("error.type", error_type.to_owned());
    span.add_event(
        "exception",
        vec![
            KeyValue::new("exception.type", error_type.to_owned()),
            KeyValue::new("exception.message", message),
        ],
    );
}
