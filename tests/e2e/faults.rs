//! Injected faults: each one strikes where its rule says, shows as a `feature_flag.evaluation`
//! event on the span it hit and as a `fault injected` log line with `fault.kind`, and leaves
//! the saga's guarantees whole: every order confirmed or failed, no money kept for a failed
//! one, none taken twice, stock exact.

use std::collections::BTreeSet;
use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use serde_json::{Value, json};

use crate::support::ledger::{Ledger, report};
use crate::support::load::{self, Job, Load, Retry, Sent, is_final};
use crate::support::{GOOD_CARD, Setup, TestStack, one_load_at_a_time};

/// The faults of the first test, all set from the environment at start: every service gets
/// the same list, and each rule names the service it is for.
const RULES: &str = r#"[
  {"kind": "latency", "service": "inventory", "route": "POST /reservations/{order_id}/commit",
   "delay_ms": 20, "jitter_ms": 30, "share": 0.5},
  {"kind": "error", "service": "inventory", "route": "POST /reservations", "status": 503,
   "share": 0.3},
  {"kind": "reset", "service": "payment", "route": "POST /payments", "share": 0.3},
  {"kind": "slow_query", "service": "payment", "table": "payments", "operation": "INSERT",
   "delay_ms": 20},
  {"kind": "reset", "service": "gateway", "route": "POST /api/orders", "share": 0.2}
]"#;

const TOKEN: &str = "operator-t0ken";

/// One `feature_flag.evaluation` event exported: where, and what it says.
#[derive(Debug)]
struct FlagEvent {
    service: String,
    span: String,
    trace_id: String,
    key: String,
    value: String,
}

/// Every `feature_flag.evaluation` event the stack exported so far.
fn flag_events(stack: &mut TestStack) -> Vec<FlagEvent> {
    stack.all_spans();
    let text = |attributes: &[KeyValue], key: &str| {
        let value = attributes.iter().find(|kv| kv.key == key)?.value.as_ref();
        match value?.value.as_ref()? {
            AnyValue::StringValue(text) => Some(text.clone()),
            other => Some(format!("{other:?}")),
        }
    };
    let mut found = Vec::new();
    for resource_spans in stack.raw.iter().flat_map(|r| &r.resource_spans) {
        let resource = resource_spans.resource.as_ref();
        let service = resource.and_then(|r| text(&r.attributes, "service.name"));
        for span in resource_spans.scope_spans.iter().flat_map(|s| &s.spans) {
            for event in span.events.iter() {
                if event.name != "feature_flag.evaluation" {
                    continue;
                }
                found.push(FlagEvent {
                    service: service.clone().unwrap_or_default(),
                    span: span.name.clone(),
                    trace_id: span.trace_id.iter().map(|b| format!("{b:02x}")).collect(),
                    key: text(&event.attributes, "feature_flag.key").unwrap_or_default(),
                    value: text(&event.attributes, "feature_flag.result.value").unwrap_or_default(),
                });
            }
        }
    }
    found
}

/// The `feature_flag.evaluation` events, once there are as many as `fault injected` log lines
/// (each fault makes one of each; spans are exported a moment after their log lines), or after
/// ten seconds, when the assertions on them will say what is missing.
async fn exported_flag_events(stack: &mut TestStack) -> Vec<FlagEvent> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let events = flag_events(stack);
        let lines = stack
            .logs()
            .iter()
            .filter(|l| l["message"] == "fault injected")
            .count();
        if events.len() >= lines || tokio::time::Instant::now() > deadline {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `fault injected` log lines of `service` for `kind`.
fn fault_lines(logs: &[Value], service: &str, kind: &str) -> Vec<Value> {
    logs.iter()
        .filter(|l| l["service.name"] == service && l["fault.kind"] == kind)
        .cloned()
        .collect()
}

/// Asserts that `kind` struck in `service`: an event on a span named as `span_is` accepts, and
/// a warning log line with `fault.kind`, `fault.detail` and the trace id of such an event.
fn assert_seen(
    events: &[FlagEvent],
    logs: &[Value],
    service: &str,
    kind: &str,
    span_is: impl Fn(&str) -> bool,
) {
    let key = format!("fault.{kind}");
    let struck: Vec<&FlagEvent> = events
        .iter()
        .filter(|e| e.service == service && e.key == key)
        .collect();
    assert!(
        !struck.is_empty(),
        "no {key} event from {service}; events: {events:#?}"
    );
    for event in &struck {
        assert!(span_is(&event.span), "{key} on span {:?}", event.span);
        assert!(!event.value.is_empty(), "{key} without a value");
    }
    let lines = fault_lines(logs, service, kind);
    assert!(
        !lines.is_empty(),
        "no fault.kind={kind} log line from {service}"
    );
    let traces: BTreeSet<&str> = struck.iter().map(|e| e.trace_id.as_str()).collect();
    for line in &lines {
        assert_eq!(line["log.level"], "WARN", "{line}");
        assert_eq!(line["message"], "fault injected", "{line}");
        assert!(line["fault.detail"].as_str().is_some_and(|d| !d.is_empty()));
        let trace = line["trace.id"].as_str().unwrap_or_default();
        assert!(
            traces.contains(trace),
            "{line} is of no trace with the event"
        );
    }
}

/// Asserts that every field of the faults' own log lines (a fault that struck, the rules set,
/// an operator refused) is mapped in the Elasticsearch template; `deploy.rs` holds the rest.
fn assert_fault_fields_mapped(logs: &[Value]) {
    let mapped = crate::deploy::template_fields("deploy/elasticsearch/ordertrail-mappings.json");
    let messages = [
        "fault injected",
        "fault rules set",
        "operator token missing or wrong",
    ];
    let unmapped: BTreeSet<&String> = logs
        .iter()
        .filter(|line| messages.iter().any(|m| line["message"] == *m))
        .flat_map(|line| line.as_object().unwrap().keys())
        .filter(|field| !mapped.contains(*field))
        .collect();
    assert!(unmapped.is_empty(), "not mapped: {unmapped:?}");
}

/// Asserts the saga's invariants over what the databases hold once every order is settled,
/// and that every key got a final answer.
async fn assert_invariants(
    stack: &TestStack,
    initial: &std::collections::BTreeMap<String, i64>,
    sent: &[Sent],
) {
    let ledger = Ledger::settled(stack, Duration::from_secs(20)).await;
    let violations = ledger.violations(initial, sent);
    println!(
        "{}\n{}\n{}",
        load::summary(sent),
        ledger.figures(initial),
        report(&violations)
    );
    assert!(
        violations.values().all(Vec::is_empty),
        "{}",
        report(&violations)
    );
    let mut last = std::collections::BTreeMap::new();
    for one in sent {
        last.insert(one.key.as_str(), one);
    }
    let unfinished: Vec<String> = last
        .values()
        .filter(|s| !s.outcome.as_ref().is_ok_and(is_final))
        .map(|s| format!("{}: {}", s.key, s.label()))
        .collect();
    assert!(unfinished.is_empty(), "no final answer: {unfinished:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_from_the_environment_strike_show_on_their_spans_and_logs_and_break_no_invariant() {
    let _alone = one_load_at_a_time().await;
    let mut stack = TestStack::start_with(Setup {
        env: vec![("ORDERTRAIL_FAULTS", RULES.to_owned())],
        ..Setup::default()
    })
    .await;
    let initial = stack.stocks().await;

    let load = Load::new(stack.gateway("/api/orders"), 8, Retry::UntilFinal);
    let sent = load.run(load::jobs(40)).await;

    assert_invariants(&stack, &initial, &sent).await;
    // The gateway's resets reach the client as a connection closed without an answer.
    assert!(
        sent.iter().any(|s| s.outcome.is_err()),
        "no request lost its answer"
    );
    let events = exported_flag_events(&mut stack).await;
    let logs = stack.logs();
    let server = |name: &str| name.starts_with("POST /");
    assert_seen(&events, &logs, "inventory", "latency", |s| {
        s == "POST /reservations/{order_id}/commit"
    });
    assert_seen(&events, &logs, "inventory", "error", |s| {
        s == "POST /reservations"
    });
    assert_seen(&events, &logs, "payment", "reset", server);
    assert_seen(&events, &logs, "gateway", "reset", server);
    assert_seen(&events, &logs, "payment", "slow_query", |s| {
        s == "INSERT payments"
    });
    for (service, kind) in [("order", "slow_query"), ("inventory", "reset")] {
        assert!(
            fault_lines(&logs, service, kind).is_empty(),
            "a rule for another service struck in {service}"
        );
    }
    // The rules in force are logged at start, by every service.
    let announced = logs
        .iter()
        .filter(|l| l["message"] == "fault rules set")
        .count();
    assert_eq!(announced, 4);
    assert_fault_fields_mapped(&logs);
}

/// Orders of one unit of a well-stocked product, paid with a card that is captured.
fn captured_jobs(prefix: &str, count: usize) -> Vec<Job> {
    (0..count)
        .map(|i| Job {
            key: format!("{prefix}-{i}"),
            body: json!({
                "customer_id": "c-7",
                "items": [{"sku": "TRAIL-MUG", "quantity": 1}],
                "payment": {"card_number": GOOD_CARD, "expiry": "12/30", "cvc": "123"}
            }),
            copies: 1,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_provider_that_times_out_through_the_operator_route_is_refunded_or_retried() {
    let mut stack = TestStack::start_with(Setup {
        env: vec![("OPERATOR_TOKEN", TOKEN.to_owned())],
        ..Setup::default()
    })
    .await;
    let initial = stack.stocks().await;
    let http = reqwest::Client::new();
    let faults = stack.gateway("/internal/faults/payment");
    let put = |token: &str, rules: &str| {
        http.put(&faults)
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(rules.to_owned())
            .send()
    };

    let refused = put("guess", r#"[{"kind": "provider_timeout"}]"#)
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    // Past the order service's 5 s wait, on every attempt: the saga gives up and refunds.
    let set = put(TOKEN, r#"[{"kind": "provider_timeout"}]"#)
        .await
        .unwrap();
    assert_eq!(set.status(), 200);
    let load = Load::new(stack.gateway("/api/orders"), 4, Retry::Never);
    let mut sent = load.run(captured_jobs("timeout", 3)).await;
    for one in &sent {
        let answer = one.outcome.as_ref().expect("an answer");
        assert_eq!(
            (answer.status, answer.body["reason"].as_str()),
            (503, Some("service_unavailable")),
            "{}",
            answer.body
        );
    }
    let ledger = Ledger::read(&stack).await;
    for one in &sent {
        let order_id = one.outcome.as_ref().unwrap().body["order_id"]
            .as_str()
            .unwrap();
        let payment = &ledger.payments[order_id];
        assert_eq!(
            (payment.status.as_str(), payment.amount_cents > 0),
            ("refunded", true),
            "the charge was taken, then refunded"
        );
    }

    // Shorter than the caller's wait, on half the attempts: most orders go through on a retry.
    let set = put(
        TOKEN,
        r#"[{"kind": "provider_timeout", "delay_ms": 100, "share": 0.5}]"#,
    )
    .await
    .unwrap();
    assert_eq!(set.status(), 200);
    sent.extend(load.run(captured_jobs("flaky", 16)).await);
    let cleared = http
        .delete(&faults)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(cleared.text().await.unwrap(), "[]");
    let direct = stack.get_from("payment", "/internal/faults").await;
    assert_eq!(direct.body, json!([]), "internal services need no token");

    assert_invariants(&stack, &initial, &sent).await;
    assert!(
        sent.iter()
            .any(|s| s.outcome.as_ref().is_ok_and(|a| a.status == 201)),
        "no order went through a retry"
    );
    let events = exported_flag_events(&mut stack).await;
    let logs = stack.logs();
    assert_seen(&events, &logs, "payment", "provider_timeout", |s| {
        s == "payment.charge"
    });
    assert_fault_fields_mapped(&logs);
}
