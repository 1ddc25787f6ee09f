//! `ordertrail load` as a real process. On the four services every answer is as expected, the
//! report's counts add up, its trace ids name traces that were exported, and restocking puts
//! back exactly what was sold. On a server answering `200 {}` to everything every answer is
//! unexpected and the tool exits 1.

use std::collections::BTreeMap;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::process::Command;

use crate::support::{TestStack, one_load_at_a_time};

/// Runs `ordertrail load --json` with `args`: its exit status, its report and its stderr.
async fn load(args: &[&str]) -> (ExitStatus, Value, String) {
    let run = Command::new(env!("CARGO_BIN_EXE_ordertrail"))
        .arg("load")
        .args(args)
        .arg("--json")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the load ended by itself")
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        let stdout = String::from_utf8_lossy(&output.stdout);
        panic!("no JSON report ({err}): {stdout}\n{stderr}")
    });
    (output.status, report, stderr)
}

/// The report's rows as (scenario, status) → (count, unexpected).
fn rows(report: &Value) -> BTreeMap<(String, String), (u64, u64)> {
    report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let key = (
                row["scenario"].as_str().unwrap().to_owned(),
                row["status"].as_str().unwrap().to_owned(),
            );
            let counts = (
                row["count"].as_u64().unwrap(),
                row["unexpected"].as_u64().unwrap(),
            );
            (key, counts)
        })
        .collect()
}

fn count(rows: &BTreeMap<(String, String), (u64, u64)>, scenario: &str) -> u64 {
    rows.iter()
        .filter(|((s, _), _)| s == scenario)
        .map(|(_, (count, _))| count)
        .sum()
}

#[tokio::test]
async fn a_load_on_the_stack_gets_only_expected_answers_with_trace_ids_and_keeps_the_stock() {
    let _one = one_load_at_a_time().await;
    let mut stack = TestStack::start().await;
    let gateway = stack.gateway("");
    let inventory = format!("http://127.0.0.1:{}", stack.ports["inventory"]);

    let (status, report, stderr) = load(&[
        "--gateway-url",
        &gateway,
        "--inventory-url",
        &inventory,
        "--orders",
        "60",
        "--concurrency",
        "4",
    ])
    .await;

    assert!(status.success(), "{stderr}\n{report:#}");
    assert_eq!(report["unexpected"], 0, "{report:#}");
    let rows = rows(&report);
    // The default mix, 60/10/5/5/10/10, over 60 steps.
    let steps = json!({"captured": 36, "declined": 6, "insufficient": 3,
                       "out_of_stock": 3, "reads": 6, "retried": 6});
    assert_eq!(report["steps"], 60);
    assert_eq!(report["steps_by_scenario"], steps);
    assert_eq!(
        report["requests"].as_u64().unwrap(),
        rows.values().map(|(count, _)| count).sum::<u64>()
    );
    assert_eq!(count(&rows, "captured"), 36);
    assert_eq!(rows[&("declined".into(), "402".into())].0, 6);
    assert_eq!(rows[&("insufficient".into(), "402".into())].0, 3);
    assert_eq!(rows[&("out_of_stock".into(), "409".into())].0, 3);
    assert_eq!(rows[&("reads".into(), "200".into())].0, 6);
    assert_eq!(count(&rows, "retried"), 12, "two copies of each key");
    assert_eq!(count(&rows, "replay"), 6, "one replay of each key");
    assert!(rows.values().all(|(_, unexpected)| *unexpected == 0));

    let slowest = report["slowest"].as_array().unwrap();
    assert_eq!(slowest.len(), 10);
    for slow in slowest {
        let trace_id = slow["trace_id"].as_str().expect("a trace id");
        let root = match slow["scenario"].as_str().unwrap() {
            "reads" => "GET /api/products",
            _ => "POST /api/orders",
        };
        let spans = stack.trace(trace_id, &[root]).await;
        assert!(spans.iter().any(|s| s.name == root), "{trace_id}: {slow}");
    }

    // What the captured orders took was put back: the pool stands at the 500 it was raised
    // to, and the product kept scarce for out-of-stock was never restocked.
    assert_eq!(report["restock"]["enabled"], true, "{report:#}");
    let expected: BTreeMap<String, i64> = [
        ("TRAIL-BOTTLE", 500),
        ("TRAIL-CAP", 500),
        ("TRAIL-LAMP", 500),
        ("TRAIL-MAP", 3),
        ("TRAIL-MUG", 500),
        ("TRAIL-TEE", 500),
    ]
    .into_iter()
    .map(|(sku, stock)| (sku.to_owned(), stock))
    .collect();
    assert_eq!(stack.stocks().await, expected);

    let restock = reqwest::Client::new()
        .post(stack.gateway("/restock"))
        .json(&json!({"items": [{"sku": "TRAIL-MAP", "quantity": 1000}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        restock.status(),
        404,
        "the gateway does not expose restocking"
    );
}

#[tokio::test]
async fn a_load_on_a_server_answering_200_to_everything_reports_every_answer_and_exits_1() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(|| async { axum::Json(json!({})) });
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let (status, report, stderr) = load(&[
        "--gateway-url",
        &url,
        "--inventory-url",
        &url,
        "--orders",
        "20",
        "--concurrency",
        "2",
    ])
    .await;
    server.abort();

    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("unexpected"), "{stderr}");
    assert!(report["requests"].as_u64().unwrap() >= 20);
    assert_eq!(report["unexpected"], report["requests"], "{report:#}");
    for ((scenario, status), (count, unexpected)) in rows(&report) {
        assert_eq!(status, "200", "{scenario}");
        assert_eq!(unexpected, count, "{scenario}");
    }
    let reasons: Vec<&str> = report["unexpected_answers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons.contains(&"expected 201 or 202, got 200"),
        "{reasons:#?}"
    );
    assert!(
        report["restock"]["note"].as_str().is_some(),
        "the restock answers were not products either: {report:#}"
    );
}
