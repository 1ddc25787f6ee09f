//! Telemetry backends down or slow never hurt a request: spans are dropped and counted, log
//! lines still reach stdout, and Logstash gets the same lines when it listens.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;

use crate::support::{GOOD_CARD, Setup, Telemetry, TestStack, order, refusing_socket};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_collector_down_orders_succeed_and_the_lost_spans_are_counted() {
    let logstash = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = refusing_socket(0);
    let telemetry = Telemetry {
        otlp_endpoint: Some(format!("http://{}", collector.local_addr().unwrap())),
        logstash_addr: Some(logstash.local_addr().unwrap().to_string()),
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

    // Logstash receives the same JSON lines (here: from the first service to connect).
    let (socket, _) = tokio::time::timeout(Duration::from_secs(10), logstash.accept())
        .await
        .unwrap()
        .unwrap();
    let mut lines = BufReader::new(socket).lines();
    let shipped = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let line: Value = serde_json::from_str(&line).expect("a JSON line");
            if line["trace.id"] == trace_id.as_str() {
                return line;
            }
        }
        panic!("the connection closed before a line of the trace arrived");
    })
    .await
    .expect("a line of the trace reaches Logstash");
    assert!(shipped["span.id"].is_string());
}
