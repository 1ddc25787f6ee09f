//! The stack checker reads traces from Jaeger's query API as OTLP JSON. Here that parsing is
//! run on OTLP JSON made from export requests the receiver really got from the services.

use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, TracesData};
use ordertrail_testkit::receiver::{ReceivedSpan, from_jaeger_json};
use ordertrail_testkit::topology::topology_problems;
use serde_json::json;

use crate::support::{DECLINED_CARD, TestStack};

/// Jaeger's answer to `GET /api/v3/traces/{trace_id}`: the trace's resource spans as OTLP JSON
/// under `result`.
fn jaeger_answer(stack: &TestStack, trace_id: &str) -> String {
    let resource_spans: Vec<ResourceSpans> = stack
        .raw
        .iter()
        .flat_map(|request| request.resource_spans.clone())
        .filter_map(|mut rs| {
            for scope in &mut rs.scope_spans {
                scope.spans.retain(|span| hex(&span.trace_id) == trace_id);
            }
            rs.scope_spans.retain(|scope| !scope.spans.is_empty());
            (!rs.scope_spans.is_empty()).then_some(rs)
        })
        .collect();
    json!({ "result": TracesData { resource_spans } }).to_string()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sorted(mut spans: Vec<ReceivedSpan>) -> Vec<ReceivedSpan> {
    spans.sort_by(|a, b| a.span_id.cmp(&b.span_id));
    spans
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_read_back_as_jaeger_otlp_json_equals_the_trace_received() {
    let mut stack = TestStack::start().await;
    let answer = stack
        .post_order(
            &crate::support::order("TRAIL-CAP", 1, DECLINED_CARD),
            None,
            None,
        )
        .await;
    let trace_id = answer.trace_id();
    let received = stack
        .trace(
            &trace_id,
            &["POST /api/orders", "payment.charge", "inventory.release"],
        )
        .await;

    let body = jaeger_answer(&stack, &trace_id);
    assert!(
        body.contains(&format!("\"traceId\":\"{trace_id}\"")),
        "ids are hex, names camelCase"
    );
    let parsed = from_jaeger_json(&body).expect("OTLP JSON parses");

    assert_eq!(sorted(parsed.clone()), sorted(received));
    assert!(
        parsed
            .iter()
            .any(|s| s.is_error && s.events.iter().any(|e| e == "exception"))
    );
    assert_eq!(topology_problems(&parsed), Vec::<String>::new());
}

/// Jaeger v2's answer as the OTLP JSON encoding defines it (hex ids, integer enums, 64-bit
/// integers as strings, unknown fields ignored), written by hand rather than by the serializer
/// the parser shares a crate with.
const JAEGER_ANSWER: &str = r#"{"result":{"resourceSpans":[
  {"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"gateway"}}]},
   "scopeSpans":[{"scope":{"name":"ordertrail"},"spans":[
     {"traceId":"4bf92f3577b34da6a3ce929d0e0e4736","spanId":"00f067aa0ba902b7","parentSpanId":"",
      "name":"POST /api/orders","kind":2,"startTimeUnixNano":"1700000000000000000",
      "endTimeUnixNano":"1700000000050000000","flags":257,
      "attributes":[{"key":"http.response.status_code","value":{"intValue":"402"}}],
      "status":{}},
     {"traceId":"4bf92f3577b34da6a3ce929d0e0e4736","spanId":"1111111111111111","parentSpanId":"00f067aa0ba902b7",
      "name":"POST /orders","kind":3,"startTimeUnixNano":"1700000000001000000",
      "endTimeUnixNano":"1700000000049000000","status":{"code":2,"message":"402"}}]}]},
  {"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"order"}}]},
   "scopeSpans":[{"spans":[
     {"traceId":"4bf92f3577b34da6a3ce929d0e0e4736","spanId":"2222222222222222","parentSpanId":"1111111111111111",
      "name":"POST /orders","kind":2,"startTimeUnixNano":"1700000000002000000",
      "endTimeUnixNano":"1700000000048000000",
      "events":[{"timeUnixNano":"1700000000040000000","name":"exception"}]}]}]}]}}"#;

#[test]
fn jaeger_v2_otlp_json_is_read_with_services_kinds_parents_and_errors() {
    let spans = from_jaeger_json(JAEGER_ANSWER).expect("parses");

    let shape: Vec<(&str, &str, &str, &str, bool)> = spans
        .iter()
        .map(|s| {
            (
                s.service_name.as_str(),
                s.name.as_str(),
                s.kind,
                s.parent_span_id.as_str(),
                s.is_error,
            )
        })
        .collect();
    assert_eq!(
        shape,
        [
            ("gateway", "POST /api/orders", "server", "", false),
            (
                "gateway",
                "POST /orders",
                "client",
                "00f067aa0ba902b7",
                true
            ),
            ("order", "POST /orders", "server", "1111111111111111", false),
        ]
    );
    assert_eq!(spans[0].attribute("http.response.status_code"), Some("402"));
    assert_eq!(spans[0].duration_nanos(), 50_000_000);
    assert_eq!(spans[2].events, ["exception"]);
    assert_eq!(topology_problems(&spans), Vec::<String>::new());
}
