//! Telemetry backends down or slow never hurt a request: spans are dropped and counted, and log
//! lines, which go to stdout only, still carry the trace.

use std::time::Duration;

use serde_json::Value;

use crate::support::{GOOD_CARD, Setup, Telemetry, TestStack, order, refusing_socket};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_collector_down_orders_succeed_and_the_lost_spans_are_counted() {
    let collector = refusing_socket(0);
    let telemetry = Telemetry {
        otlp_endpoint: Some(format!("http://{}", collector.local_addr().unwrap())),
    };
    let stack = TestStack::start_with(Setup {
        telemetry,
        ..Setup::default()
    })
    .await;

    let answer = stack
        .post_order(&order("TRAIL-TEE", 1, GOOD_CARD), None, None)
        .await;

    assert_eq!(answer.status, 201, "{}", answer.body);
    let trace_id = answer.trace_id();
    // Every service reports the loss once, with a count.
    let mut reported = Vec::new();
    for _ in 0..200 {
        reported = stack
            .logs()
            .into_iter()
            .filter(|l| l["message"] == "span export failing; spans are dropped")
            .collect::<Vec<Value>>();
        if reported.len() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(reported.len(), 4, "one report per service");
    assert!(
        reported
            .iter()
            .all(|l| l["telemetry.dropped"].as_u64() > Some(0) && l["log.level"] == "WARN")
    );

    // The spans are lost, yet the order's log lines on stdout still join its trace.
    let of_the_trace: Vec<Value> = stack
        .logs()
        .into_iter()
        .filter(|l| l["trace.id"] == trace_id.as_str())
        .collect();
    assert!(!of_the_trace.is_empty(), "no log line of trace {trace_id}");
    assert!(
        of_the_trace.iter().all(|l| l["span.id"].is_string()),
        "{of_the_trace:#?}"
    );
}
