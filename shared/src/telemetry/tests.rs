//! Tests of the set-up in `mod.rs`: configuration, the assembled subscriber, the exporters and
//! the guard's shutdown.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::InstrumentationScope;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState, Tracer as _,
};
use opentelemetry_sdk::trace::{
    OTEL_BSP_MAX_QUEUE_SIZE_DEFAULT, SpanData, SpanEvents, SpanExporter, SpanLinks,
};

use serde_json::Value;

use super::*;
use crate::telemetry::ecs::tests::Captured;

/// An error with a cause, for the cause-chain tests.
#[derive(Debug, thiserror::Error)]
#[error("charge failed")]
pub(crate) struct Failed(#[source] pub(crate) std::io::Error);

fn config(vars: &[(&str, &str)]) -> TelemetryConfig {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    TelemetryConfig::from_vars("order", |name| vars.get(name).cloned())
}

/// A port on 127.0.0.1 where nothing listens.
fn refused_endpoint() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}")
}

fn span_data() -> SpanData {
    SpanData {
        span_context: SpanContext::new(
            TraceId::from(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736),
            SpanId::from(0x00f0_67aa_0ba9_02b7),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: SpanId::INVALID,
        parent_span_is_remote: false,
        span_kind: SpanKind::Internal,
        name: "test".into(),
        start_time: SystemTime::now(),
        end_time: SystemTime::now(),
        attributes: Vec::new(),
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: Status::Unset,
        instrumentation_scope: InstrumentationScope::builder("test").build(),
    }
}

#[test]
fn error_chain_joins_the_causes_outermost_first() {
    let error = Failed(std::io::Error::other("connection reset"));
    assert_eq!(error_chain(&error), "charge failed: connection reset");
}

#[test]
fn defaults_are_grpc_on_localhost_with_json_logs() {
    let config = config(&[]);
    assert_eq!(config.service_name, "order");
    assert_eq!(config.otlp_protocol, OtlpProtocol::Grpc);
    assert_eq!(
        config.otlp_endpoint.as_deref(),
        Some("http://localhost:4317")
    );
    assert_eq!(config.span_queue_size, OTEL_BSP_MAX_QUEUE_SIZE_DEFAULT);
    assert_eq!(config.log_format, LogFormat::Json);
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
}

#[test]
fn settings_that_cannot_be_used_are_warned_about_and_defaulted() {
    let config = config(&[
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "zipkin"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "lots"),
        ("LOG_FORMAT", "xml"),
        ("RUST_LOG", "info,[{=broken"),
    ]);
    assert_eq!(config.otlp_protocol, OtlpProtocol::Grpc);
    assert_eq!(
        config.otlp_endpoint.as_deref(),
        Some("http://collector:4317")
    );
    assert_eq!(config.span_queue_size, OTEL_BSP_MAX_QUEUE_SIZE_DEFAULT);
    assert_eq!(config.log_format, LogFormat::Json);
    assert_eq!(config.log_filter, DEFAULT_LOG_FILTER);
    let warnings = config.warnings.join("\n");
    for variable in [
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_BSP_MAX_QUEUE_SIZE",
        "LOG_FORMAT",
        "RUST_LOG",
    ] {
        assert!(warnings.contains(variable), "{variable} in {warnings}");
    }
}

#[test]
fn http_endpoints_follow_the_otlp_http_rules() {
    let http = |vars: &[(&str, &str)]| {
        let mut vars = vars.to_vec();
        vars.push(("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"));
        let config = config(&vars);
        assert_eq!(config.otlp_protocol, OtlpProtocol::HttpProtobuf);
        config.otlp_endpoint.unwrap()
    };
    assert_eq!(http(&[]), "http://localhost:4318/v1/traces");
    // The generic endpoint is a base for every signal; the traces one is used as it is.
    assert_eq!(
        http(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")]),
        "http://collector:4318/v1/traces"
    );
    assert_eq!(
        http(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://collector/otlp"
        )]),
        "http://collector/otlp"
    );
    // The traces-specific protocol wins.
    let config = config(&[
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
    ]);
    assert_eq!(config.otlp_protocol, OtlpProtocol::HttpJson);
}

#[test]
fn with_the_sdk_disabled_spans_still_get_ids_that_logs_and_propagation_carry() {
    let config = config(&[("OTEL_SDK_DISABLED", "true")]);
    assert_eq!(config.otlp_endpoint, None);
    let captured = Captured::default();
    let (subscriber, guard, warnings) = build(&config, Box::new(captured.clone()));
    assert!(warnings.is_empty(), "{warnings:?}");

    let (trace_id, headers) = tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("request");
        let _entered = span.enter();
        tracing::info!("inside");
        let mut headers = HashMap::new();
        TraceContextPropagator::new().inject_context(&Context::current(), &mut headers);
        (current_trace_id(), headers)
    });

    let trace_id = trace_id.expect("a trace id with the SDK disabled");
    let line = &captured.lines()[0];
    assert_eq!(line["trace.id"], trace_id.as_str());
    assert!(line["span.id"].is_string(), "{line}");
    assert!(headers["traceparent"].contains(&trace_id), "{:?}", headers);
    drop(guard);
}

#[test]
fn log_lines_name_the_service_as_its_spans_do() {
    let config = config(&[("OTEL_SDK_DISABLED", "true")]);
    let captured = Captured::default();
    let (subscriber, _guard, _) = build(&config, Box::new(captured.clone()));
    tracing::subscriber::with_default(subscriber, || tracing::info!("hello"));
    let spans_say = resource("order");
    let line = &captured.lines()[0];
    for (log_field, resource_key) in [
        ("service.name", "service.name"),
        ("service.version", "service.version"),
        ("service.namespace", "service.namespace"),
        ("service.environment", "deployment.environment.name"),
    ] {
        let expected = spans_say
            .get(&opentelemetry::Key::from_static_str(resource_key))
            .unwrap()
            .to_string();
        assert_eq!(line[log_field], expected.as_str(), "{log_field}: {line}");
    }
}

#[tokio::test]
async fn a_refused_grpc_export_fails_at_once_without_retrying() {
    let exporter = otlp_exporter(OtlpProtocol::Grpc, &refused_endpoint()).unwrap();
    let started = Instant::now();
    let result = exporter.export(vec![span_data()]).await;
    assert!(result.is_err());
    // The exporter's default policy would sleep at least 100 + 200 + 400 ms between retries.
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "took {:?}",
        started.elapsed()
    );
}

/// One OTLP/HTTP request as a collector saw it.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    content_type: String,
    body: Vec<u8>,
}

/// An OTLP/HTTP collector on 127.0.0.1 accepting every request.
async fn http_collector() -> (String, Arc<Mutex<Vec<Received>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let store = received.clone();
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let store = store.clone();
        async move {
            let (parts, body) = request.into_parts();
            let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
            store.lock().unwrap().push(Received {
                path: parts.uri.path().to_owned(),
                content_type: parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned(),
                body: body.to_vec(),
            });
            ""
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_otlp_http_from_the_batch_thread() {
    let (base, received) = http_collector().await;
    for (protocol, name, content_type) in [
        ("http/protobuf", "over-protobuf", "application/x-protobuf"),
        ("http/json", "over-json", "application/json"),
    ] {
        let config = config(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &base),
        ]);
        let stats = ExportStats::default();
        let mut warnings = Vec::new();
        let provider = tracer_provider(&config, resource("order"), &stats, &mut warnings);
        assert!(warnings.is_empty(), "{warnings:?}");
        drop(provider.tracer("test").start(name));
        // The batch thread exports with reqwest's blocking client, outside the runtime.
        let provider = tokio::task::spawn_blocking(move || {
            provider.force_flush().unwrap();
            provider
        })
        .await
        .unwrap();
        assert_eq!((stats.exported(), stats.dropped()), (1, 0), "{protocol}");
        let request = received.lock().unwrap().pop().expect("a request");
        assert_eq!(request.path, "/v1/traces");
        assert_eq!(request.content_type, content_type);
        let body = String::from_utf8_lossy(&request.body);
        assert!(body.contains(name), "{protocol}: {body}");
        tokio::task::spawn_blocking(move || provider.shutdown().unwrap())
            .await
            .unwrap();
    }
}

/// An exporter that never finishes a batch, like a collector that accepts and never answers.
#[derive(Debug)]
struct Hung;

impl SpanExporter for Hung {
    async fn export(&self, _batch: Vec<SpanData>) -> opentelemetry_sdk::error::OTelSdkResult {
        std::future::pending().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_gives_up_on_a_hung_export_within_its_budget() {
    let stats = ExportStats::default();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(CountingBatchProcessor::new(Hung, 1, stats.clone()))
        .build();
    // The first span's export hangs; the second finds the queue full.
    drop(provider.tracer("test").start("hung"));
    drop(provider.tracer("test").start("dropped"));
    let guard = TelemetryGuard {
        provider: Some(provider),
        meter_provider: None,
        metric_stats: MetricExportStats::default(),
        stats: stats.clone(),
        sampled_out: SampledOut::default(),
        stdout: None,
    };

    let started = Instant::now();
    drop(guard);
    let took = started.elapsed();
    assert!(
        took >= SHUTDOWN_TIMEOUT && took < SHUTDOWN_TIMEOUT + Duration::from_secs(1),
        "took {took:?}"
    );
    assert_eq!((stats.exported(), stats.dropped()), (0, 2));
}

/// What `log::log_enabled!(target: "sqlx::postgres::notice", Info)` does once tracing-log's
/// `LogTracer` is the `log` logger (`try_init` installs it): it asks the dispatcher whether a
/// record of that target and level is enabled, bypassing the call-site cache, and nothing is
/// dispatched after it when no layer wants the record. sqlx makes this check on every
/// PostgreSQL notice, such as the "relation \"_sqlx_migrations\" already exists, skipping"
/// that every start against a migrated database gets.
fn sqlx_checks_whether_notices_are_logged() -> bool {
    use tracing::callsite::{DefaultCallsite, Identifier};
    use tracing::field::FieldSet;
    use tracing::metadata::Kind;
    // tracing-log's metadata for a `log` record: a call site of its own, never registered.
    static CALLSITE: DefaultCallsite = DefaultCallsite::new(&NOTICE);
    static NOTICE: tracing::Metadata<'static> = tracing::Metadata::new(
        "log record",
        "sqlx::postgres::notice",
        tracing::Level::INFO,
        None,
        None,
        None,
        FieldSet::new(&["message"], Identifier(&CALLSITE)),
        Kind::EVENT,
    );
    tracing::dispatcher::get_default(|dispatch| dispatch.enabled(&NOTICE))
}

#[test]
fn a_line_logged_after_a_check_for_a_filtered_out_target_is_written() {
    let config = config(&[("OTEL_SDK_DISABLED", "true")]);
    let captured = Captured::default();
    let (subscriber, _guard, _) = build(&config, Box::new(captured.clone()));

    tracing::subscriber::with_default(subscriber, || {
        sqlx_checks_whether_notices_are_logged();
        tracing::info!("inventory listening");
    });

    let messages: Vec<Value> = captured
        .lines()
        .iter()
        .map(|l| l["message"].clone())
        .collect();
    assert_eq!(messages, ["inventory listening"]);
}

#[test]
fn a_span_started_after_a_check_for_a_filtered_out_target_is_traced() {
    let config = config(&[("OTEL_SDK_DISABLED", "true")]);
    let captured = Captured::default();
    let (subscriber, _guard, _) = build(&config, Box::new(captured.clone()));

    tracing::subscriber::with_default(subscriber, || {
        sqlx_checks_whether_notices_are_logged();
        let span = tracing::info_span!("request", order.id = 7);
        let _entered = span.enter();
        tracing::info!("inside");
    });

    let lines = captured.lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    // The span reached both layers: OpenTelemetry gave it ids, the log layer its fields.
    assert!(lines[0]["trace.id"].is_string(), "{}", lines[0]);
    assert_eq!(lines[0]["order.id"], 7, "{}", lines[0]);
}

/// Set in the copy of the test binary that [`in_own_process`] starts.
const IN_OWN_PROCESS: &str = "ORDERTRAIL_TEST_IN_OWN_PROCESS";

/// Runs the test `name` (of this module) again, alone, in a child process, and asserts that it
/// passed there; returns `true` in that child, which runs the test's body.
///
/// For tests that install the global subscriber: the SDK exports and logs from a thread of its
/// own, which only the global subscriber reaches, and a global subscriber in the test process
/// would also collect the lines of every other test's threads.
fn in_own_process(name: &str) -> bool {
    if std::env::var_os(IN_OWN_PROCESS).is_some() {
        return true;
    }
    let module = module_path!().split_once("::").unwrap().1;
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .arg(format!("{module}::{name}"))
        .args(["--exact", "--nocapture", "--test-threads=1"])
        .env(IN_OWN_PROCESS, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "{name} in its own process:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_batches_are_reported_by_the_loss_warning_alone() {
    if !in_own_process("failed_batches_are_reported_by_the_loss_warning_alone") {
        return;
    }
    let config = config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", &refused_endpoint())]);
    let captured = Captured::default();
    let (subscriber, guard, warnings) = build(&config, Box::new(captured.clone()));
    assert!(warnings.is_empty(), "{warnings:?}");
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let provider = guard.provider.clone().unwrap();
    for batch in 0..3 {
        tracing::info_span!("request", batch).in_scope(|| {});
        let provider = provider.clone();
        // Each flush is one export, from the SDK's thread, which blocks on it.
        let flushed = tokio::task::spawn_blocking(move || provider.force_flush());
        assert!(flushed.await.unwrap().is_err(), "batch {batch} exported");
    }
    assert_eq!(guard.stats().dropped(), 3);
    drop(guard);

    let lines = captured.lines();
    let reported: Vec<&Value> = lines
        .iter()
        .filter(|l| l["log.level"] != "INFO" && l["log.level"] != "DEBUG")
        .collect();
    assert_eq!(reported.len(), 1, "{reported:#?}");
    assert_eq!(
        reported[0]["message"],
        "span export failing; spans are dropped"
    );
    let cause = reported[0]["error.message"].as_str().unwrap_or_default();
    assert!(cause.contains("Connection refused"), "{}", reported[0]);
    let sdk_lines: Vec<&Value> = lines
        .iter()
        .filter(|l| {
            l["log.logger"]
                .as_str()
                .is_some_and(|logger| logger.starts_with("opentelemetry"))
        })
        .collect();
    assert!(sdk_lines.is_empty(), "{sdk_lines:#?}");
}

#[test]
fn rust_log_selects_log_lines_and_leaves_spans_alone() {
    let config = config(&[
        ("OTEL_SDK_DISABLED", "true"),
        ("RUST_LOG", "warn,[checkout]=debug"),
    ]);
    let captured = Captured::default();
    let (subscriber, _guard, _) = build(&config, Box::new(captured.clone()));

    tracing::subscriber::with_default(subscriber, || {
        let request = tracing::info_span!("request");
        let _request = request.enter();
        tracing::info!("below warn");
        tracing::warn!("warned");
        tracing::info_span!("checkout").in_scope(|| tracing::debug!("inside checkout"));
    });

    let lines = captured.lines();
    let messages: Vec<&Value> = lines.iter().map(|l| &l["message"]).collect();
    assert_eq!(messages, ["warned", "inside checkout"]);
    // The span RUST_LOG filters out of the log lines is still traced.
    assert!(lines[0]["trace.id"].is_string(), "{}", lines[0]);
}
