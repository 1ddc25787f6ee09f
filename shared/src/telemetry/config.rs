//! Telemetry configuration, read once from the standard OpenTelemetry environment variables.
//! A value that cannot be used becomes a warning and its default: telemetry settings never
//! stop a service from starting.

use std::time::Duration;

use opentelemetry_sdk::trace::{OTEL_BSP_MAX_QUEUE_SIZE, OTEL_BSP_MAX_QUEUE_SIZE_DEFAULT};
use tracing_subscriber::filter::EnvFilter;

use super::log_sampling::{LogSampling, RULES_VARIABLE, SAMPLE_VARIABLE};
use super::sampling::Sampling;

/// The largest span queue `OTEL_BSP_MAX_QUEUE_SIZE` may ask for.
const MAX_SPAN_QUEUE_SIZE: usize = 1 << 20;

/// The default filter for log lines when `RUST_LOG` is not set.
pub(super) const DEFAULT_LOG_FILTER: &str = "info,sqlx=warn,hyper=warn,h2=warn,tower=warn,tonic=warn,reqwest=warn,opentelemetry=warn,opentelemetry_sdk=warn";

/// The environment variables telemetry reads, itself or through the OpenTelemetry SDK and
/// exporter (which also honour the other standard `OTEL_EXPORTER_OTLP_*` and `OTEL_BSP_*`
/// variables).
pub const VARIABLES: &[&str] = &[
    "OTEL_SERVICE_NAME",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_COMPRESSION",
    "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
    "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_METRICS_EXPORTER",
    "OTEL_METRIC_EXPORT_INTERVAL",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
    "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT",
    "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
    "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_SDK_DISABLED",
    "LOG_FORMAT",
    "RUST_LOG",
    super::log_sampling::SAMPLE_VARIABLE,
    super::log_sampling::RULES_VARIABLE,
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

/// The OTLP transport, from `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` or
/// `OTEL_EXPORTER_OTLP_PROTOCOL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OtlpProtocol {
    /// `grpc` (the default).
    #[default]
    Grpc,
    /// `http/protobuf`.
    HttpProtobuf,
    /// `http/json`.
    HttpJson,
}

impl std::str::FromStr for OtlpProtocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "grpc" => Ok(Self::Grpc),
            "http/protobuf" => Ok(Self::HttpProtobuf),
            "http/json" => Ok(Self::HttpJson),
            other => Err(format!(
                "unknown OTLP protocol {other:?}: expected grpc, http/protobuf or http/json"
            )),
        }
    }
}

/// Everything telemetry needs, read from the standard OpenTelemetry environment variables.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// `service.name`: `OTEL_SERVICE_NAME`, else the role's name.
    pub service_name: String,
    /// The OTLP endpoint spans are sent to, as the exporter uses it. For gRPC:
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`, default
    /// `http://localhost:4317`. For HTTP: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` with `/v1/traces` appended, default
    /// `http://localhost:4318/v1/traces`.
    ///
    /// `None` when `OTEL_SDK_DISABLED=true`: spans still get ids, logs carry them and the
    /// context still propagates, but nothing is exported.
    pub otlp_endpoint: Option<String>,
    /// The OTLP transport; an unknown value is warned about and gRPC used.
    pub otlp_protocol: OtlpProtocol,
    /// How long one export may take: `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT` or
    /// `OTEL_EXPORTER_OTLP_TIMEOUT`, in milliseconds; ten seconds by default.
    pub otlp_timeout: Duration,
    /// True when gRPC export needs what only opentelemetry-otlp's exporter implements: headers
    /// (`OTEL_EXPORTER_OTLP_HEADERS`, `..._TRACES_HEADERS`), compression (`..._COMPRESSION`)
    /// or an `https://` endpoint. Otherwise the suite's own, cheaper exporter sends the spans.
    pub otlp_needs_sdk_exporter: bool,
    /// How many spans may wait for export (`OTEL_BSP_MAX_QUEUE_SIZE`, default 2048); more are
    /// dropped and counted.
    pub span_queue_size: usize,
    /// Head sampling, from `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`; always
    /// parent-based, `parentbased_always_on` by default.
    pub sampling: Sampling,
    /// Where and how metrics are exported (`OTEL_METRICS_EXPORTER`,
    /// `OTEL_METRIC_EXPORT_INTERVAL`, `OTEL_EXPORTER_OTLP_METRICS_*`).
    pub metrics: super::metrics::MetricsConfig,
    /// `LOG_FORMAT`: `json` (default) or `pretty`.
    pub log_format: LogFormat,
    /// `RUST_LOG`, default [`DEFAULT_LOG_FILTER`]. Whatever it says, the OpenTelemetry SDK's
    /// own line per failed export is not logged: the span loss warning reports that, once.
    pub log_filter: String,
    /// The log-volume policy, from `ORDERTRAIL_LOG_SAMPLE` and `ORDERTRAIL_LOG_SAMPLE_RULES`
    /// (see [`LogSampling`]); every line by default, and when a value does not parse.
    pub log_sampling: LogSampling,
    /// Settings that could not be honoured, and what is used instead. [`init`] logs each one
    /// as a warning once logging is up.
    pub warnings: Vec<String>,
}

impl TelemetryConfig {
    /// Reads the configuration from the environment, with `default_service_name` for
    /// `service.name` when `OTEL_SERVICE_NAME` is not set.
    ///
    /// It does not fail: a value it cannot use is replaced by the default and described in
    /// [`TelemetryConfig::warnings`]. The `Result` is kept for the callers' `?`.
    pub fn from_env(default_service_name: &str) -> anyhow::Result<Self> {
        Ok(Self::from_vars(default_service_name, |name| {
            std::env::var(name).ok()
        }))
    }

    /// [`TelemetryConfig::from_env`] over any source of variables.
    pub(super) fn from_vars(
        default_service_name: &str,
        var: impl Fn(&str) -> Option<String>,
    ) -> Self {
        let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let mut warnings = Vec::new();
        // The variable's value, when it parses; otherwise a warning and `None`.
        fn parsed<T: std::str::FromStr<Err = String>>(
            name: &str,
            value: Option<String>,
            used: &str,
            warnings: &mut Vec<String>,
        ) -> Option<T> {
            match value?.parse() {
                Ok(parsed) => Some(parsed),
                Err(err) => {
                    warnings.push(format!("{name}: {err}; using {used}"));
                    None
                }
            }
        }
        let mut protocol = |name: &str| parsed(name, var(name), "grpc", &mut warnings);
        let otlp_protocol = protocol("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| protocol("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .unwrap_or_default();
        let log_format =
            parsed("LOG_FORMAT", var("LOG_FORMAT"), "json", &mut warnings).unwrap_or_default();
        let span_queue_size = match var(OTEL_BSP_MAX_QUEUE_SIZE) {
            // The SDK reads the variable the same way, ignoring what does not parse; a size
            // outside 1..=MAX_SPAN_QUEUE_SIZE would lose every span or allocate the queue
            // beyond reason, so it is refused too.
            Some(size) => match size.parse() {
                Ok(size) if (1..=MAX_SPAN_QUEUE_SIZE).contains(&size) => size,
                _ => {
                    warnings.push(format!(
                        "{OTEL_BSP_MAX_QUEUE_SIZE}={size:?} is not a number from 1 to {MAX_SPAN_QUEUE_SIZE}; using {OTEL_BSP_MAX_QUEUE_SIZE_DEFAULT}"
                    ));
                    OTEL_BSP_MAX_QUEUE_SIZE_DEFAULT
                }
            },
            None => OTEL_BSP_MAX_QUEUE_SIZE_DEFAULT,
        };
        let log_filter = match var("RUST_LOG") {
            Some(filter) if EnvFilter::try_new(&filter).is_err() => {
                warnings.push(format!(
                    "RUST_LOG={filter:?} is not a valid filter; using {DEFAULT_LOG_FILTER}"
                ));
                DEFAULT_LOG_FILTER.to_owned()
            }
            Some(filter) => filter,
            None => DEFAULT_LOG_FILTER.to_owned(),
        };
        let endpoint = match otlp_protocol {
            OtlpProtocol::Grpc => var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                .or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"))
                .unwrap_or_else(|| "http://localhost:4317".to_owned()),
            // OTLP/HTTP: the generic endpoint is a base URL for every signal.
            OtlpProtocol::HttpProtobuf | OtlpProtocol::HttpJson => {
                var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").unwrap_or_else(|| {
                    let base = var("OTEL_EXPORTER_OTLP_ENDPOINT")
                        .unwrap_or_else(|| "http://localhost:4318".to_owned());
                    format!("{}/v1/traces", base.trim_end_matches('/'))
                })
            }
        };
        let otlp_needs_sdk_exporter = endpoint
            .get(..8)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
            || [
                "OTEL_EXPORTER_OTLP_HEADERS",
                "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
                "OTEL_EXPORTER_OTLP_COMPRESSION",
                "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
            ]
            .into_iter()
            .any(|name| var(name).is_some());
        let log_sampling = LogSampling::parse(
            var(SAMPLE_VARIABLE).as_deref(),
            var(RULES_VARIABLE).as_deref(),
        )
        .unwrap_or_else(|err| {
            warnings.push(format!("{err}; keeping every log line"));
            LogSampling::default()
        });
        let sampling = Sampling::from_vars(
            var("OTEL_TRACES_SAMPLER").as_deref(),
            var("OTEL_TRACES_SAMPLER_ARG").as_deref(),
            &mut warnings,
        );
        let otlp_timeout = super::otlp::GrpcSpanExporter::timeout_from(var);
        let disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let metrics = super::metrics::MetricsConfig::from_vars(var, disabled, &mut warnings);
        Self {
            service_name: var("OTEL_SERVICE_NAME")
                .unwrap_or_else(|| default_service_name.to_owned()),
            otlp_endpoint: (!disabled).then_some(endpoint),
            otlp_protocol,
            otlp_timeout,
            otlp_needs_sdk_exporter,
            span_queue_size,
            sampling,
            metrics,
            log_format,
            log_filter,
            log_sampling,
            warnings,
        }
    }
}
