//! The stack checker reads traces from Jaeger's query API as OTLP JSON. Here that parsing is
//! run on OTLP JSON made from export requests the receiver really got from the services.

use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, TracesData};
use ordertrail_shared::telemetry::receiver::{ReceivedSpan, from_jaeger_json, topology_problems};
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
