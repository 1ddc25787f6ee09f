//! A confirmed order: one trace across four services, correctly parented, with logs that join
//! it, and no card number anywhere.

use std::collections::BTreeSet;

use ordertrail_testkit::topology::topology_problems;
use serde_json::json;

use crate::support::{
    GOOD_CARD, TestStack, assert_every_span_carries_the_customer, named, names, order, parent,
};

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmed_order_is_one_trace_across_four_services_and_its_logs_join_it() {
    let mut stack = TestStack::start().await;
    let stock_before = stack.stock("TRAIL-MUG").await;

    let traceparent = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let answer = stack
        .post_order(&order("TRAIL-MUG", 2, GOOD_CARD), None, Some(&traceparent))
        .await;

    assert_eq!(answer.status, 201, "{}", answer.body);
    assert_eq!(answer.body["status"], "confirmed");
    assert_eq!(answer.body["total_cents"], 2 * 1450);
    assert_eq!(
        answer.body["card"],
        json!({"brand": "visa", "last4": "4242"})
    );
    assert_eq!(
        answer.trace_id(),
        CALLER_TRACE,
        "the caller's trace is continued"
    );
    assert_eq!(answer.body["trace_id"], CALLER_TRACE);
    assert_eq!(stack.stock("TRAIL-MUG").await, stock_before - 2);

    let spans = stack
        .trace(
            CALLER_TRACE,
            &[
                "POST /api/orders",
                "checkout",
                "payment.charge",
                "inventory.reserve",
                "inventory.commit",
            ],
        )
        .await;
    assert_eq!(topology_problems(&spans), Vec::<String>::new());
    let services: BTreeSet<&str> = spans.iter().map(|s| s.service_name.as_str()).collect();
    assert_eq!(
        services,
        BTreeSet::from(["gateway", "inventory", "order", "payment"]),
        "{:#?}",
        names(&spans)
    );

    // The gateway's server span continues the caller's span.
    let root = named(&spans, "POST /api/orders");
    assert_eq!(
        (root.service_name.as_str(), root.kind),
        ("gateway", "server")
    );
    assert_eq!(root.parent_span_id, CALLER_SPAN);
    assert_eq!(root.attribute("http.request.method"), Some("POST"));
    assert_eq!(root.attribute("http.route"), Some("/api/orders"));
    assert_eq!(root.attribute("url.path"), Some("/api/orders"));
    assert_eq!(root.attribute("http.response.status_code"), Some("201"));

    // Every other server span's parent is a client span of the service that called it.
    for server in spans
        .iter()
        .filter(|s| s.kind == "server" && s.span_id != root.span_id)
    {
        let client = parent(&spans, server);
        assert_eq!(
            client.kind, "client",
            "parent of {} is {}",
            server.name, client.name
        );
        assert_ne!(client.service_name, server.service_name);
        assert_eq!(
            client.attribute("server.port").map(str::to_owned),
            Some(stack.ports[server.service_name.as_str()].to_string())
        );
        assert!(
            client
                .attribute("url.full")
                .is_some_and(|u| u.ends_with(server.attribute("url.path").unwrap()))
        );
    }
    let server_spans: Vec<&str> = spans
        .iter()
        .filter(|s| s.kind == "server")
        .map(|s| s.service_name.as_str())
        .collect();
    let mut server_spans = server_spans;
    server_spans.sort_unstable();
    assert_eq!(
        server_spans,
        ["gateway", "inventory", "inventory", "order", "payment"],
        "reserve and commit on inventory"
    );

    // Business spans sit under the server span of their service.
    for (name, service) in [
        ("checkout", "order"),
        ("inventory.reserve", "inventory"),
        ("payment.charge", "payment"),
        ("inventory.commit", "inventory"),
    ] {
        let span = named(&spans, name);
        assert_eq!(span.service_name, service);
        assert_eq!(
            span.attribute("order.id"),
            answer.body["order_id"].as_str(),
            "{name}"
        );
        assert!(!span.is_error, "{name} failed");
    }
    assert_eq!(
        named(&spans, "checkout").attribute("order.total_cents"),
        Some("2900")
    );

    // Database spans are client spans under a span of the same service.
    for service in ["order", "payment", "inventory"] {
        let db: Vec<_> = spans
            .iter()
            .filter(|s| s.service_name == service && s.attribute("db.system.name").is_some())
            .collect();
        assert!(!db.is_empty(), "{service} made no database span");
        for span in db {
            assert_eq!(span.kind, "client");
            assert_eq!(span.attribute("db.system.name"), Some("sqlite"));
            assert_eq!(
                span.name,
                format!(
                    "{} {}",
                    span.attribute("db.operation.name").unwrap(),
                    span.attribute("db.collection.name").unwrap()
                )
            );
            assert_eq!(parent(&spans, span).service_name, service);
        }
    }

    // The gateway's baggage reaches every span of every service: server, client, business and
    // database spans alike.
    assert_every_span_carries_the_customer(&spans, "c-42");

    // Every log line a request caused carries a trace; those of this order carry its trace. Only
    // the start-up lines ("… listening") are written outside any request.
    let logs = stack.logs();
    let order_id = answer.body["order_id"].as_str().unwrap();
    for line in logs
        .iter()
        .filter(|l| !l["message"].as_str().unwrap().ends_with("listening"))
    {
        assert!(
            line["trace.id"].as_str().is_some_and(|t| t.len() == 32),
            "no trace.id: {line}"
        );
        assert!(
            line["span.id"].as_str().is_some_and(|s| s.len() == 16),
            "no span.id: {line}"
        );
        if line["order.id"] == order_id {
            assert_eq!(line["trace.id"], CALLER_TRACE, "{line}");
        }
    }
    let of_trace: Vec<_> = logs
        .iter()
        .filter(|l| l["trace.id"] == CALLER_TRACE)
        .collect();
    let logged_by: BTreeSet<&str> = of_trace
        .iter()
        .map(|l| l["service.name"].as_str().unwrap())
        .collect();
    assert_eq!(
        logged_by,
        BTreeSet::from(["gateway", "inventory", "order", "payment"])
    );
    let span_ids: BTreeSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    for line in &of_trace {
        let span_id = line["span.id"].as_str().expect("span.id");
        assert!(
            span_ids.contains(span_id),
            "log line points at a span the trace lacks: {line}"
        );
        assert_eq!(line["customer.id"], "c-42", "{line}");
        assert_eq!(line["ecs.version"], "8.11.0");
        assert!(line["@timestamp"].as_str().unwrap().ends_with('Z'));
        let dataset = line["event.dataset"].as_str().unwrap();
        assert!(
            dataset == "ordertrail.audit"
                || dataset == format!("ordertrail.{}", line["service.name"].as_str().unwrap())
        );
    }
    let audit: BTreeSet<&str> = of_trace
        .iter()
        .filter(|l| l["event.dataset"] == "ordertrail.audit")
        .map(|l| l["event.action"].as_str().unwrap())
        .collect();
    assert_eq!(
        audit,
        BTreeSet::from(["order-created", "payment-captured", "order-confirmed"])
    );

    // The card number is nowhere: not in a log line, in anything exported (span names,
    // attributes, events) or in a database file.
    let exported = serde_json::to_string(&stack.raw).unwrap();
    assert!(exported.contains(order_id), "the export holds the order");
    stack.assert_card_nowhere(GOOD_CARD).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_idempotency_key_replays_the_first_answer_and_orders_once() {
    let stack = TestStack::start().await;
    let stock_before = stack.stock("TRAIL-TEE").await;
    let body = order("TRAIL-TEE", 1, GOOD_CARD);

    let first = stack.post_order(&body, Some("key-1"), None).await;
    let again = stack.post_order(&body, Some("key-1"), None).await;
    let other = stack
        .post_order(&order("TRAIL-TEE", 3, GOOD_CARD), Some("key-1"), None)
        .await;

    assert_eq!(first.status, 201);
    assert_eq!(
        (again.status, &again.body),
        (201, &first.body),
        "the first answer, replayed"
    );
    assert_eq!(
        stack.stock("TRAIL-TEE").await,
        stock_before - 1,
        "ordered once"
    );
    assert_eq!(other.status, 422, "{}", other.body);
    assert_eq!(other.body["title"], "idempotency key reused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_make_no_spans() {
    let mut stack = TestStack::start().await;
    for role in ["gateway", "order", "payment", "inventory"] {
        assert_eq!(stack.get_from(role, "/health/live").await.status, 200);
        assert_eq!(stack.get_from(role, "/health/ready").await.status, 200);
    }
    // A traced request afterwards, so that waiting for it proves earlier spans were flushed.
    let answer = stack.get("/api/products").await;
    let spans = stack
        .trace(&answer.trace_id(), &["GET /api/products", "GET /products"])
        .await;
    assert_eq!(spans.len(), 4, "{:#?}", names(&spans));
    let all = stack.all_spans();
    assert!(
        !all.iter().any(|s| s
            .attribute("url.path")
            .is_some_and(|p| p.starts_with("/health"))),
        "{:#?}",
        names(&all)
    );
}
