//! Metrics over OTLP from the four services, read by the test kit's receiver: the
//! semantic-convention durations (names, units, buckets, attribute sets and kinds), telemetry's
//! own health counters, `OTEL_METRICS_EXPORTER=none`, and a collector that refuses them. Also
//! that numeric span attributes are integers on the wire.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use ordertrail_shared::telemetry::{DB_DURATION_BUCKETS, HTTP_DURATION_BUCKETS};
use ordertrail_testkit::received_metrics::{
    DataPoint, PointValue, ReceivedMetric, ReceivedMetrics,
};
use ordertrail_testkit::receiver::{self, Otlp, ReceivedSpan, ValueKind};
use serde_json::Value;

use crate::support::{
    DECLINED_CARD, GOOD_CARD, ROLES, Setup, Telemetry, TestStack, order, refusing_socket,
};

const SERVER: &str = "http.server.request.duration";
const CLIENT: &str = "http.client.request.duration";
const DB: &str = "db.client.operation.duration";
/// Health counters every exporting service sends.
const HEALTH: [(&str, &str); 4] = [
    ("otel.sdk.processor.span.processed", "{span}"),
    ("otel.sdk.exporter.span.exported", "{span}"),
    (
        "otel.sdk.exporter.metric_data_point.exported",
        "{data_point}",
    ),
    ("otel.sdk.processor.log.processed", "{log_record}"),
];

/// A stack exporting to a receiver of both signals, metrics every `interval_ms`.
async fn stack_with_metrics(env: &[(&'static str, &str)]) -> (TestStack, Otlp) {
    let otlp = receiver::start_otlp(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let stack = TestStack::start_with(Setup {
        telemetry: Telemetry {
            otlp_endpoint: Some(format!("http://{}", otlp.addr)),
        },
        env: env.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
        ..Setup::default()
    })
    .await;
    (stack, otlp)
}

/// Reads what `otlp` received until `done` holds for the metrics, or panics after 20 s.
async fn metrics_until(
    otlp: &mut Otlp,
    received: &mut ReceivedMetrics,
    done: impl Fn(&ReceivedMetrics) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done(received) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, otlp.metrics.recv()).await {
            Ok(Some(request)) => received.extend(request),
            _ => panic!(
                "metrics incomplete after 20 s; received {:?}",
                received
                    .all
                    .iter()
                    .map(|m| (&m.service_name, &m.name))
                    .collect::<BTreeSet<_>>()
            ),
        }
    }
}

/// Every span received so far.
fn spans(otlp: &mut Otlp) -> Vec<ReceivedSpan> {
    let mut spans = Vec::new();
    while let Ok(request) = otlp.traces.try_recv() {
        spans.extend(receiver::flatten(request));
    }
    spans
}

fn point<'a>(metric: &'a ReceivedMetric, pairs: &[(&str, &str)]) -> &'a DataPoint {
    metric
        .points
        .iter()
        .find(|p| pairs.iter().all(|(k, v)| p.attribute(k) == Some(*v)))
        .unwrap_or_else(|| panic!("no point of {} with {pairs:?}: {metric:#?}", metric.name))
}

fn assert_histogram(metric: &ReceivedMetric, bounds: &[f64]) {
    assert_eq!(metric.unit, "s", "{}", metric.name);
    assert_eq!(metric.kind, "histogram", "{}", metric.name);
    assert_eq!(metric.temporality, "cumulative", "{}", metric.name);
    assert_eq!(metric.scope, "ordertrail");
    for point in &metric.points {
        let PointValue::Histogram {
            count,
            bounds: got,
            bucket_counts,
            ..
        } = &point.value
        else {
            panic!("{} is not a histogram point: {point:?}", metric.name);
        };
        assert_eq!(got, bounds, "{} buckets", metric.name);
        assert_eq!(bucket_counts.len(), bounds.len() + 1);
        assert_eq!(bucket_counts.iter().sum::<u64>(), *count);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_exports_the_convention_durations_and_its_telemetry_health() {
    let (stack, mut otlp) = stack_with_metrics(&[("OTEL_METRIC_EXPORT_INTERVAL", "300")]).await;

    let confirmed = stack
        .post_order(&order("TRAIL-TEE", 1, GOOD_CARD), None, None)
        .await;
    let declined = stack
        .post_order(&order("TRAIL-TEE", 1, DECLINED_CARD), None, None)
        .await;
    let unknown = stack.get("/api/nowhere").await;

    assert_eq!(confirmed.status, 201, "{}", confirmed.body);
    assert_eq!(declined.status, 402, "{}", declined.body);
    assert_eq!(unknown.status, 404);
    let mut received = ReceivedMetrics::default();
    metrics_until(&mut otlp, &mut received, |m| {
        m.services_sending(SERVER).len() == 4
            && m.services_sending(CLIENT) == ["gateway", "order"]
            && m.services_sending(DB) == ["inventory", "order", "payment"]
            && HEALTH.iter().all(|(name, _)| m.services_sending(name).len() == 4)
            && m.latest("gateway", SERVER).is_some_and(|s| {
                s.points.iter().any(|p| p.attribute("http.response.status_code") == Some("404"))
            })
            // The data points of the exports before the last one.
            && ROLES.iter().all(|role| {
                m.latest(role, HEALTH[2].0)
                    .is_some_and(|h| h.points.iter().any(|p| p.number() > Some(0.0)))
            })
    })
    .await;

    // The server duration: one series per method, route, status (an integer) and scheme.
    for role in ROLES {
        assert_histogram(
            received.latest(role, SERVER).unwrap(),
            &HTTP_DURATION_BUCKETS,
        );
    }
    let gateway = received.latest("gateway", SERVER).unwrap();
    let created = point(
        gateway,
        &[
            ("http.route", "/api/orders"),
            ("http.response.status_code", "201"),
        ],
    );
    assert_eq!(
        created.keys(),
        [
            "http.request.method",
            "http.response.status_code",
            "http.route",
            "url.scheme"
        ]
    );
    assert_eq!(created.attribute("http.request.method"), Some("POST"));
    assert_eq!(created.attribute("url.scheme"), Some("http"));
    assert_eq!(
        created.attribute_kind("http.response.status_code"),
        Some(ValueKind::Int)
    );
    assert_eq!(
        created.attribute_kind("http.route"),
        Some(ValueKind::String)
    );
    // No route matched: no `http.route`; a 4xx is not a server error.
    let not_found = point(gateway, &[("http.response.status_code", "404")]);
    assert_eq!(
        not_found.keys(),
        [
            "http.request.method",
            "http.response.status_code",
            "url.scheme"
        ]
    );
    // Health checks make no spans and no measurements.
    assert!(
        received
            .all
            .iter()
            .filter(|m| m.name == SERVER)
            .all(|m| m.points.iter().all(|p| !p
                .attribute("http.route")
                .unwrap_or_default()
                .starts_with("/health"))),
        "a health check was measured"
    );

    // The client duration: the callee's address and port (an integer), the answer's status;
    // a declined charge (402) is an error of the call.
    let order_client = received.latest("order", CLIENT).unwrap();
    assert_histogram(order_client, &HTTP_DURATION_BUCKETS);
    let declined = point(order_client, &[("http.response.status_code", "402")]);
    assert_eq!(
        declined.keys(),
        [
            "error.type",
            "http.request.method",
            "http.response.status_code",
            "server.address",
            "server.port",
            "url.template"
        ]
    );
    assert_eq!(declined.attribute("error.type"), Some("402"));
    assert_eq!(declined.attribute("server.address"), Some("127.0.0.1"));
    assert_eq!(
        declined.attribute("server.port"),
        Some(stack.ports["payment"].to_string().as_str())
    );
    assert_eq!(declined.attribute_kind("server.port"), Some(ValueKind::Int));
    assert_eq!(
        declined.attribute_kind("http.response.status_code"),
        Some(ValueKind::Int)
    );

    // The database duration: system, operation and table, for each database service.
    for role in ["order", "payment", "inventory"] {
        let db = received.latest(role, DB).unwrap();
        assert_histogram(db, &DB_DURATION_BUCKETS);
        for point in &db.points {
            assert_eq!(
                point.keys(),
                ["db.collection.name", "db.operation.name", "db.system.name"],
                "{role}: {point:?}"
            );
            assert_eq!(point.attribute("db.system.name"), Some("sqlite"));
        }
    }
    let inventory = received.latest("inventory", DB).unwrap();
    point(
        inventory,
        &[
            ("db.operation.name", "UPDATE"),
            ("db.collection.name", "products"),
        ],
    );

    // Telemetry's own health: counters under the conventions' names and units.
    for role in ROLES {
        for (name, unit) in HEALTH {
            let metric = received.latest(role, name).unwrap();
            assert_eq!(
                (metric.unit.as_str(), metric.kind, metric.monotonic),
                (unit, "sum", true),
                "{role} {name}"
            );
        }
        let exported = received
            .latest(role, "otel.sdk.exporter.span.exported")
            .unwrap();
        let ok = exported
            .points
            .iter()
            .find(|p| p.attribute("error.type").is_none())
            .unwrap();
        assert_eq!(
            ok.attribute("otel.component.type"),
            Some("otlp_grpc_span_exporter")
        );
        assert!(ok.number() > Some(0.0), "{role}: {exported:?}");
        let failed = exported
            .points
            .iter()
            .find(|p| p.attribute("error.type").is_some())
            .unwrap();
        assert_eq!(failed.number(), Some(0.0), "{role}: no failed export");
        let processed = received
            .latest(role, "otel.sdk.processor.span.processed")
            .unwrap();
        let full = point(processed, &[("error.type", "queue_full")]);
        assert_eq!(full.number(), Some(0.0), "{role}: nothing dropped");
    }

    // Spans carry the same numbers as integers, not their text.
    let spans = spans(&mut otlp);
    let server_span = spans
        .iter()
        .find(|s| s.service_name == "gateway" && s.name == "POST /api/orders")
        .expect("the gateway's server span");
    assert_eq!(
        server_span.attribute_kind("http.response.status_code"),
        Some(ValueKind::Int)
    );
    let client_span = spans
        .iter()
        .find(|s| s.service_name == "gateway" && s.kind == "client")
        .expect("a client span of the gateway");
    assert_eq!(
        client_span.attribute_kind("server.port"),
        Some(ValueKind::Int)
    );
    assert_eq!(
        client_span.attribute_kind("http.response.status_code"),
        Some(ValueKind::Int)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_otel_metrics_exporter_none_no_metric_is_sent() {
    let (mut stack, mut otlp) = stack_with_metrics(&[
        ("OTEL_METRICS_EXPORTER", "none"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "100"),
    ])
    .await;

    let answer = stack
        .post_order(&order("TRAIL-TEE", 1, GOOD_CARD), None, None)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A stop flushes what a meter provider holds; there is none.
    for role in ROLES {
        stack.stop(role).await;
    }

    assert_eq!(answer.status, 201, "{}", answer.body);
    let services: BTreeSet<String> = spans(&mut otlp)
        .into_iter()
        .map(|s| s.service_name)
        .collect();
    assert_eq!(services.len(), 4, "spans still go out: {services:?}");
    assert!(otlp.metrics.try_recv().is_err(), "a metric was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_collector_refusing_metric_export_fails_apart_from_requests() {
    let collector = refusing_socket(0);
    let stack = TestStack::start_with(Setup {
        telemetry: Telemetry {
            otlp_endpoint: Some(format!("http://{}", collector.local_addr().unwrap())),
        },
        env: vec![("OTEL_METRIC_EXPORT_INTERVAL", "100".to_owned())],
        ..Setup::default()
    })
    .await;

    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.push(
            stack
                .post_order(&order("TRAIL-TEE", 1, GOOD_CARD), None, None)
                .await
                .status,
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    assert_eq!(answers, [201, 201, 201]);
    // Each service says so once, however many exports failed, and the SDK's own line per
    // failed export is not written.
    let reported = |logs: &[Value]| {
        logs.iter()
            .filter(|l| l["message"] == "metric export failing; data points are dropped")
            .cloned()
            .collect::<Vec<Value>>()
    };
    let mut lines = stack.logs();
    for _ in 0..100 {
        if reported(&lines).len() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        lines = stack.logs();
    }
    let reported = reported(&lines);
    let services: BTreeSet<&str> = reported
        .iter()
        .map(|l| l["service.name"].as_str().unwrap())
        .collect();
    assert_eq!((reported.len(), services.len()), (4, 4), "{reported:#?}");
    assert!(reported.iter().all(|l| l["log.level"] == "WARN"));
    let sdk_lines: Vec<&Value> = lines
        .iter()
        .filter(|l| {
            l["log.logger"]
                .as_str()
                .is_some_and(|t| t.starts_with("opentelemetry"))
        })
        .collect();
    assert!(sdk_lines.is_empty(), "{sdk_lines:#?}");
}
