use std::collections::HashMap;
use std::time::Instant;

use http::{Method, StatusCode};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::error::OTelSdkError;
use opentelemetry_sdk::metrics::InMemoryMetricExporter;
use opentelemetry_sdk::metrics::data::HistogramDataPoint;
use tracing_subscriber::layer::SubscriberExt as _;

use super::instruments::{DB_DURATION_BUCKETS, HTTP_DURATION_BUCKETS, Instruments, Server};
use super::*;
use crate::telemetry::ecs::tests::Captured;
use crate::telemetry::{EcsLayer, SHUTDOWN_TIMEOUT, ServiceIdentity, TelemetryGuard};

fn read(vars: &[(&str, &str)]) -> (MetricsConfig, Vec<String>) {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let mut warnings = Vec::new();
    let config = MetricsConfig::from_vars(|name| vars.get(name).cloned(), false, &mut warnings);
    (config, warnings)
}

#[test]
fn metrics_go_where_spans_go_every_minute_by_default() {
    let (config, warnings) = read(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://jaeger:4317")]);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(config.endpoint.as_deref(), Some("http://jaeger:4317"));
    assert_eq!(config.protocol, OtlpProtocol::Grpc);
    assert_eq!(config.interval, Duration::from_secs(60));
    assert_eq!(config.timeout, Duration::from_secs(10));
}

#[test]
fn the_metrics_variables_override_the_generic_ones() {
    let (config, warnings) = read(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000"),
        ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "500"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "15000"),
    ]);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        config.endpoint.as_deref(),
        Some("http://collector:4318/v1/metrics")
    );
    assert_eq!(config.protocol, OtlpProtocol::HttpProtobuf);
    assert_eq!(config.timeout, Duration::from_millis(500));
    assert_eq!(config.interval, Duration::from_secs(15));

    let (metrics, _) = read(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
        ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/json"),
        (
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
            "http://metrics:4318/v1/metrics",
        ),
    ]);
    assert_eq!(metrics.protocol, OtlpProtocol::HttpJson);
    assert_eq!(
        metrics.endpoint.as_deref(),
        Some("http://metrics:4318/v1/metrics")
    );
}

#[test]
fn none_turns_metrics_off_and_what_cannot_be_used_is_warned_about() {
    let (off, warnings) = read(&[("OTEL_METRICS_EXPORTER", "none")]);
    assert_eq!((off.endpoint, warnings.len()), (None, 0));

    let (config, warnings) = read(&[
        ("OTEL_METRICS_EXPORTER", "prometheus"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "0"),
        ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "carrier-pigeon"),
    ]);
    assert_eq!(config.endpoint.as_deref(), Some("http://localhost:4317"));
    assert_eq!(config.interval, Duration::from_secs(60));
    assert_eq!(warnings.len(), 3, "{warnings:?}");

    let mut warnings = Vec::new();
    let disabled = MetricsConfig::from_vars(|_| None, true, &mut warnings);
    assert_eq!(disabled.endpoint, None);
}

/// A meter provider read in memory, and the three instruments on it.
fn instruments() -> (SdkMeterProvider, InMemoryMetricExporter, Instruments) {
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    let instruments = Instruments::new(&provider.meter(METER_NAME));
    (provider, exporter, instruments)
}

/// A histogram point: its attributes as text (sorted), its bounds and its count.
type Point = (Vec<(String, String)>, Vec<f64>, u64);

/// The histogram points of `name`, each with its attributes as text.
fn histogram(
    provider: &SdkMeterProvider,
    exporter: &InMemoryMetricExporter,
    name: &str,
) -> (String, Vec<Point>) {
    provider.force_flush().unwrap();
    let exported = exporter.get_finished_metrics().unwrap();
    let metric = exported
        .iter()
        .flat_map(|rm| rm.scope_metrics())
        .flat_map(|sm| sm.metrics())
        .filter(|m| m.name() == name)
        .last()
        .unwrap_or_else(|| panic!("no {name}"));
    let AggregatedMetrics::F64(MetricData::Histogram(histogram)) = metric.data() else {
        panic!("{name} is not an f64 histogram");
    };
    let point = |p: &HistogramDataPoint<f64>| {
        let mut attributes: Vec<(String, String)> = p
            .attributes()
            .map(|kv| (kv.key.to_string(), format!("{:?}", kv.value)))
            .collect();
        attributes.sort();
        (attributes, p.bounds().collect(), p.count())
    };
    (
        metric.unit().to_owned(),
        histogram.data_points().map(point).collect(),
    )
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn a_server_request_is_measured_with_the_conventions_attributes_and_buckets() {
    let (provider, exporter, instruments) = instruments();
    let took = Duration::from_millis(30);

    instruments.http_server(
        took,
        &Method::POST,
        Some("/api/orders".into()),
        StatusCode::CREATED,
    );
    instruments.http_server(took, &Method::GET, None, StatusCode::SERVICE_UNAVAILABLE);
    let odd = Method::from_bytes(b"BREW").unwrap();
    instruments.http_server(took, &odd, None, StatusCode::NOT_FOUND);

    let (unit, points) = histogram(&provider, &exporter, "http.server.request.duration");
    assert_eq!(unit, "s");
    let mut sets: Vec<_> = points.iter().map(|(a, _, _)| a.clone()).collect();
    sets.sort();
    assert_eq!(
        sets,
        [
            owned(&[
                ("error.type", "String(Owned(\"503\"))"),
                ("http.request.method", "String(Static(\"GET\"))"),
                ("http.response.status_code", "I64(503)"),
                ("url.scheme", "String(Static(\"http\"))"),
            ]),
            owned(&[
                ("http.request.method", "String(Static(\"POST\"))"),
                ("http.response.status_code", "I64(201)"),
                ("http.route", "String(Owned(\"/api/orders\"))"),
                ("url.scheme", "String(Static(\"http\"))"),
            ]),
            owned(&[
                ("http.request.method", "String(Static(\"_OTHER\"))"),
                ("http.response.status_code", "I64(404)"),
                ("url.scheme", "String(Static(\"http\"))"),
            ]),
        ]
    );
    assert!(
        points
            .iter()
            .all(|(_, bounds, count)| bounds == &HTTP_DURATION_BUCKETS && *count == 1)
    );
}

#[test]
fn a_call_and_a_query_are_measured_with_the_conventions_attributes_and_buckets() {
    let (provider, exporter, instruments) = instruments();
    let server = Server::of(&"http://payment:8082".parse().unwrap());
    let took = Duration::from_millis(3);

    instruments.http_client(
        took,
        &Method::POST,
        &server,
        "/charges",
        Ok(StatusCode::PAYMENT_REQUIRED),
    );
    instruments.http_client(took, &Method::POST, &server, "/charges", Err("connect"));
    instruments.db_client(took, "sqlite", "INSERT", "orders", false);
    instruments.db_client(took, "sqlite", "INSERT", "orders", true);

    let (unit, calls) = histogram(&provider, &exporter, "http.client.request.duration");
    assert_eq!(unit, "s");
    let keys = |points: &[Point]| {
        let mut keys: Vec<Vec<String>> = points
            .iter()
            .map(|(a, _, _)| a.iter().map(|(k, _)| k.clone()).collect())
            .collect();
        keys.sort();
        keys
    };
    assert_eq!(
        keys(&calls),
        [
            vec![
                "error.type",
                "http.request.method",
                "http.response.status_code",
                "server.address",
                "server.port",
                "url.template"
            ],
            vec![
                "error.type",
                "http.request.method",
                "server.address",
                "server.port",
                "url.template"
            ],
        ]
    );
    assert!(
        calls
            .iter()
            .all(|(a, bounds, _)| bounds == &HTTP_DURATION_BUCKETS
                && a.contains(&("server.port".to_owned(), "I64(8082)".to_owned())))
    );

    let (unit, queries) = histogram(&provider, &exporter, "db.client.operation.duration");
    assert_eq!(unit, "s");
    assert_eq!(
        keys(&queries),
        [
            vec!["db.collection.name", "db.operation.name", "db.system.name"],
            vec![
                "db.collection.name",
                "db.operation.name",
                "db.system.name",
                "error.type"
            ],
        ]
    );
    assert!(
        queries
            .iter()
            .all(|(_, bounds, _)| bounds == &DB_DURATION_BUCKETS)
    );
}

/// A metric exporter that fails every export, or hangs in it.
#[derive(Debug, Clone, Copy)]
enum Broken {
    Refusing,
    Hung,
}

impl PushMetricExporter for Broken {
    async fn export(&self, _metrics: &ResourceMetrics) -> OTelSdkResult {
        match self {
            Self::Refusing => Err(OTelSdkError::InternalFailure("connection refused".into())),
            Self::Hung => std::future::pending().await,
        }
    }
    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }
    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
    fn temporality(&self) -> Temporality {
        Temporality::Cumulative
    }
}

fn provider_exporting_to(exporter: Broken, stats: &MetricExportStats) -> SdkMeterProvider {
    let reader = PeriodicReader::builder(CountingMetricExporter::new(exporter, stats))
        .with_interval(Duration::from_secs(3600))
        .build();
    SdkMeterProvider::builder().with_reader(reader).build()
}

#[test]
fn failed_exports_are_counted_and_reported_once_until_one_succeeds() {
    let captured = Captured::default();
    let layer = EcsLayer::new(ServiceIdentity::new("test"), Box::new(captured.clone()));
    let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
    let stats = MetricExportStats::default();
    let refused = || Err(OTelSdkError::InternalFailure("connection refused".into()));

    stats.settle(3, &refused());
    stats.settle(3, &refused());
    stats.settle(4, &Ok(()));
    stats.settle(4, &Ok(()));

    assert_eq!((stats.exported(), stats.failed()), (8, 6));
    let messages: Vec<String> = captured
        .lines()
        .iter()
        .map(|l| l["message"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        messages,
        [
            "metric export failing; data points are dropped",
            "metric export recovered"
        ]
    );
}

#[test]
fn a_refused_export_counts_the_data_points_it_carried() {
    let stats = MetricExportStats::default();
    let provider = provider_exporting_to(Broken::Refusing, &stats);
    let counter = provider.meter("test").u64_counter("things").build();
    counter.add(1, &[KeyValue::new("kind", "a")]);
    counter.add(1, &[KeyValue::new("kind", "b")]);

    assert!(provider.force_flush().is_err());
    assert_eq!((stats.exported(), stats.failed()), (0, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_gives_up_on_a_hung_metric_export_within_the_budget() {
    let stats = MetricExportStats::default();
    let provider = provider_exporting_to(Broken::Hung, &stats);
    provider
        .meter("test")
        .u64_counter("things")
        .build()
        .add(1, &[]);
    let guard = TelemetryGuard {
        provider: None,
        meter_provider: Some(provider),
        metric_stats: stats,
        stats: ExportStats::default(),
        sampled_out: Default::default(),
        stdout: None,
    };

    let started = Instant::now();
    drop(guard);

    let took = started.elapsed();
    assert!(
        took >= SHUTDOWN_TIMEOUT && took < SHUTDOWN_TIMEOUT + Duration::from_secs(1),
        "took {took:?}"
    );
}
