//! The business instruments (`ordertrail.*`) as the services export them over OTLP: orders
//! and revenue, declines, compensations and the sweep's recoveries counted once each, with
//! their units and bounded attribute sets, and the stock gauge agreeing with the database.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use ordertrail_testkit::received_metrics::{PointValue, ReceivedMetric, ReceivedMetrics};
use ordertrail_testkit::receiver::{self, Otlp};
use serde_json::json;

use crate::support::{DECLINED_CARD, GOOD_CARD, Setup, Telemetry, TestStack, order, sweep};

/// A series: its attributes (key, value), sorted by key, and its value.
type Series = (Vec<(String, String)>, i64);

/// The series of `name` in the latest export of `service`, sorted; each value must be an
/// integer on the wire.
fn series(received: &ReceivedMetrics, service: &str, name: &str) -> Vec<Series> {
    let Some(metric) = received.latest(service, name) else {
        return Vec::new();
    };
    let mut series: Vec<Series> = metric
        .points
        .iter()
        .map(|point| {
            let PointValue::Int(value) = point.value else {
                panic!("{name} sends {:?}, not an integer", point.value);
            };
            let attributes = point.attributes.clone().into_iter().collect();
            (attributes, value)
        })
        .collect();
    series.sort();
    series
}

/// `(attributes, value)` as [`series`] gives it.
fn one(attributes: &[(&str, &str)], value: i64) -> Series {
    let mut attributes: Vec<(String, String)> = attributes
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    attributes.sort();
    (attributes, value)
}

/// Reads what `otlp` receives until `expected` (service, instrument, every series in any
/// order) all hold, or panics after 20 s with what differs.
async fn until_metrics_are(
    otlp: &mut Otlp,
    received: &mut ReceivedMetrics,
    expected: &[(&str, &str, Vec<Series>)],
) {
    let differences = |received: &ReceivedMetrics| -> Vec<String> {
        expected
            .iter()
            .filter_map(|(service, name, want)| {
                let got = series(received, service, name);
                let mut want = want.clone();
                want.sort();
                (got != want).then(|| format!("{service} {name}: {got:?}, expected {want:?}"))
            })
            .collect()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left = differences(received);
        if left.is_empty() {
            return;
        }
        let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(wait, otlp.metrics.recv()).await {
            Ok(Some(request)) => received.extend(request),
            _ => panic!("after 20 s:\n{}", left.join("\n")),
        }
    }
}

/// After [`until_metrics_are`] matched `expected`: waits one sweep interval (`sweep_every`),
/// then two more exports of each of its instruments, and asserts that `expected` still holds.
/// A count made twice (a recovery counted again by the next sweep, a compensation counted
/// again when its undo ran again) would show up then, where the first match alone would pass.
async fn still_after_more_exports(
    otlp: &mut Otlp,
    received: &mut ReceivedMetrics,
    expected: &[(&str, &str, Vec<Series>)],
    sweep_every: Duration,
) {
    tokio::time::sleep(sweep_every).await;
    while let Ok(request) = otlp.metrics.try_recv() {
        received.extend(request);
    }
    let exports = |received: &ReceivedMetrics| -> Vec<usize> {
        expected
            .iter()
            .map(|(service, name, _)| {
                received
                    .all
                    .iter()
                    .filter(|m| m.service_name == *service && m.name == *name)
                    .count()
            })
            .collect()
    };
    let before = exports(received);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while exports(received)
        .iter()
        .zip(&before)
        .any(|(now, before)| *now < before + 2)
    {
        let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(wait, otlp.metrics.recv()).await {
            Ok(Some(request)) => received.extend(request),
            _ => panic!("no two more exports of every instrument within 20 s"),
        }
    }
    for (service, name, want) in expected {
        let mut want = want.clone();
        want.sort();
        assert_eq!(
            series(received, service, name),
            want,
            "{service} {name} changed after it matched: counted twice"
        );
    }
}

/// A counter's shape: a monotonic cumulative sum in `unit`, on the suite's meter.
fn assert_counter(metric: Option<&ReceivedMetric>, unit: &str) {
    let metric = metric.expect("exported");
    assert_eq!(
        (metric.kind, metric.monotonic, metric.temporality),
        ("sum", true, "cumulative"),
        "{}",
        metric.name
    );
    assert_eq!(metric.unit, unit, "{}", metric.name);
    assert_eq!(metric.scope, "ordertrail", "{}", metric.name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_outcome_of_a_checkout_is_counted_once_and_the_stock_gauge_follows_the_database() {
    let mut otlp = receiver::start_otlp(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    // Orders idle for 5 s go to the sweep: beyond the slowest checkout seen on a loaded CI
    // machine (see `kill.rs`), so that it finishes only the order left paid.
    let sweep_every = Duration::from_millis(200);
    let mut env = sweep("200ms", "5s");
    env.push(("OTEL_METRIC_EXPORT_INTERVAL", "250".to_owned()));
    let stack = TestStack::start_with(Setup {
        telemetry: Telemetry {
            otlp_endpoint: Some(format!("http://{}", otlp.addr)),
        },
        env,
        ..Setup::default()
    })
    .await;
    let http = reqwest::Client::new();
    let inventory_faults = format!(
        "http://127.0.0.1:{}/internal/faults",
        stack.ports["inventory"]
    );

    let confirmed = stack
        .post_order(&order("TRAIL-MUG", 2, GOOD_CARD), None, None)
        .await;
    let declined = stack
        .post_order(&order("TRAIL-TEE", 1, DECLINED_CARD), None, None)
        .await;
    let out_of_stock = stack
        .post_order(&order("TRAIL-MAP", 4, GOOD_CARD), None, None)
        .await;
    // Paid, but inventory fails every commit: the order stays `paid` (202) for the sweep,
    // which confirms it once the fault is gone.
    let commit_fails = json!([{"kind": "error", "route": "POST /reservations/{order_id}/commit"}]);
    let set = http.put(&inventory_faults).json(&commit_fails).send().await;
    assert!(set.unwrap().status().is_success());
    let recovered = stack
        .post_order(&order("TRAIL-CAP", 3, GOOD_CARD), None, None)
        .await;
    let cleared = http.delete(&inventory_faults).send().await;
    assert!(cleared.unwrap().status().is_success());

    assert_eq!(confirmed.status, 201, "{}", confirmed.body);
    assert_eq!(declined.status, 402, "{}", declined.body);
    assert_eq!(out_of_stock.status, 409, "{}", out_of_stock.body);
    assert_eq!(recovered.status, 202, "{}", recovered.body);
    let revenue = confirmed.body["total_cents"].as_i64().unwrap()
        + recovered.body["total_cents"].as_i64().unwrap();
    assert_eq!(revenue, 2 * 1450 + 3 * 2200);
    let mut received = ReceivedMetrics::default();
    let counted = [
        (
            "order",
            "ordertrail.orders",
            vec![
                one(&[("order.status", "confirmed")], 2),
                one(
                    &[("order.status", "failed"), ("error.type", "card_declined")],
                    1,
                ),
                one(
                    &[("order.status", "failed"), ("error.type", "out_of_stock")],
                    1,
                ),
            ],
        ),
        ("order", "ordertrail.revenue", vec![one(&[], revenue)]),
        (
            "order",
            "ordertrail.saga.compensations",
            vec![one(&[("saga.compensation", "release")], 1)],
        ),
        (
            "order",
            "ordertrail.saga.recoveries",
            vec![one(&[("order.status", "confirmed")], 1)],
        ),
        (
            "payment",
            "ordertrail.payment.declines",
            vec![one(&[("error.type", "card_declined")], 1)],
        ),
    ];
    until_metrics_are(&mut otlp, &mut received, &counted).await;
    still_after_more_exports(&mut otlp, &mut received, &counted, sweep_every).await;
    let order_id = recovered.body["order_id"].as_str().unwrap();
    let now = stack.get(&format!("/api/orders/{order_id}")).await;
    assert_eq!(now.body["status"], "confirmed", "{}", now.body);

    // Every order has ended, so the stock stands still: the gauge catches up with it.
    let in_database: Vec<Series> = stack
        .stocks()
        .await
        .into_iter()
        .map(|(sku, stock)| one(&[("product.sku", &sku)], stock))
        .collect();
    assert_eq!(in_database.len(), 6);
    until_metrics_are(
        &mut otlp,
        &mut received,
        &[("inventory", "ordertrail.inventory.stock", in_database)],
    )
    .await;

    assert_counter(received.latest("order", "ordertrail.orders"), "{order}");
    assert_counter(received.latest("order", "ordertrail.revenue"), "{cent}");
    assert_counter(
        received.latest("order", "ordertrail.saga.compensations"),
        "{compensation}",
    );
    assert_counter(
        received.latest("order", "ordertrail.saga.recoveries"),
        "{order}",
    );
    assert_counter(
        received.latest("payment", "ordertrail.payment.declines"),
        "{payment}",
    );
    let stock = received
        .latest("inventory", "ordertrail.inventory.stock")
        .unwrap();
    assert_eq!((stock.kind, stock.unit.as_str()), ("gauge", "{item}"));
    // Only the service that owns a business fact reports it.
    let reporters: BTreeMap<&str, Vec<&str>> = [
        "ordertrail.orders",
        "ordertrail.payment.declines",
        "ordertrail.inventory.stock",
    ]
    .into_iter()
    .map(|name| (name, received.services_sending(name)))
    .collect();
    assert_eq!(
        reporters,
        BTreeMap::from([
            ("ordertrail.orders", vec!["order"]),
            ("ordertrail.payment.declines", vec!["payment"]),
            ("ordertrail.inventory.stock", vec!["inventory"]),
        ])
    );
}
