//! The alerts: declined orders, more than the checkout failure rate allows, make the rule
//! `ordertrail-checkout-failure-rate` fire, and its index connector writes a document to
//! `ordertrail-alerts` with the rule, the window, the value and a sample `trace.id`. The test
//! profile runs the rules every 10 s (service `alerts-test-setup`), so it comes within a minute.
//!
//! Given the viewer's password (`ORDERTRAIL_VIEWER_PASSWORD`), it also checks the read-only user: it can search the
//! alerts and the logs, and cannot write.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};

use super::{Config, place_order, sku_in_stock};

/// The rule the declined orders provoke.
const RULE: &str = "ordertrail-checkout-failure-rate";
const ALERTS_INDEX: &str = "ordertrail-alerts";
const DECLINED_CARD: &str = "4000000000000002";
/// Enough declined orders to lift the failure rate of the last five minutes above its
/// threshold (0.25 by default) even after a few hundred successful orders elsewhere.
const DECLINED_ORDERS: usize = 12;
/// Log shipping, then one or two rule runs and the connector's write.
const PATIENCE: Duration = Duration::from_secs(180);
const VIEWER: &str = "ordertrail_viewer";

/// Provokes the checkout failure rate alert and waits for its document.
pub async fn check(http: &reqwest::Client, config: &Config) -> anyhow::Result<()> {
    // The containers share the host's clock; a few seconds of slack for the rounding.
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)?
        .saturating_sub(Duration::from_secs(5))
        .as_millis();
    let sku = sku_in_stock(http, config).await?;
    let mut traces = Vec::new();
    for _ in 0..DECLINED_ORDERS {
        traces.push(place_order(http, config, &sku, DECLINED_CARD, 402).await?);
    }
    println!("{DECLINED_ORDERS} declined orders placed; waiting for the alert {RULE}");

    let deadline = tokio::time::Instant::now() + PATIENCE;
    let alert = loop {
        match newest_alert(http, config, since).await {
            Ok(Some(alert)) => break alert,
            Ok(None) | Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
            Ok(None) => bail!("no {RULE} alert in {ALERTS_INDEX} after {PATIENCE:?}"),
            Err(err) => return Err(err.context(format!("no {RULE} alert after {PATIENCE:?}"))),
        }
    };
    let value: f64 = alert["alert"]["value"]
        .as_f64()
        .or_else(|| {
            alert["alert"]["value"]
                .as_str()
                .and_then(|v| v.parse().ok())
        })
        .context("an alert without a value")?;
    ensure!(value > 0.0, "the alert's value is {value}");
    ensure!(
        alert["alert"]["window"]
            .as_str()
            .is_some_and(|w| !w.is_empty()),
        "an alert without its window: {alert}"
    );
    let trace = alert["trace"]["id"].as_str().unwrap_or_default();
    ensure!(
        trace.len() == 32 && trace.bytes().all(|b| b.is_ascii_hexdigit()),
        "the alert's sample trace.id is {trace:?}: {alert}"
    );
    let ours = if traces.iter().any(|t| t == trace) {
        "one of the declined orders"
    } else {
        "another order of the window"
    };
    println!(
        "  alert: {} over {}, value {value:.2}, sample trace {trace} ({ours})",
        alert["rule"]["name"].as_str().unwrap_or(RULE),
        alert["alert"]["window"].as_str().unwrap_or("?")
    );

    if let Some(password) = &config.viewer_password {
        viewer_reads_and_cannot_write(http, config, password).await?;
        println!("  {VIEWER}: reads the alerts and the logs, cannot write");
    }
    Ok(())
}

/// The newest alert document of [`RULE`] written since `since` (epoch milliseconds).
async fn newest_alert(
    http: &reqwest::Client,
    config: &Config,
    since: u128,
) -> anyhow::Result<Option<Value>> {
    let answer = search(
        http,
        config,
        &config.elastic_username,
        &config.elastic_password,
        ALERTS_INDEX,
        json!({
            "size": 1,
            "sort": [{"@timestamp": "desc"}],
            "query": {"bool": {"filter": [
                {"term": {"rule.id": RULE}},
                {"range": {"@timestamp": {"gte": since.to_string(), "format": "epoch_millis"}}}
            ]}}
        }),
    )
    .await?;
    Ok(answer["hits"]["hits"][0].get("_source").cloned())
}

/// The viewer can search the alerts and the logs, and its write is refused.
async fn viewer_reads_and_cannot_write(
    http: &reqwest::Client,
    config: &Config,
    password: &str,
) -> anyhow::Result<()> {
    for index in [ALERTS_INDEX, "ordertrail-logs"] {
        search(http, config, VIEWER, password, index, json!({"size": 1}))
            .await
            .with_context(|| format!("{VIEWER} searching {index}"))?;
    }
    let status = http
        .post(format!("{}/{ALERTS_INDEX}/_doc", config.elasticsearch_url))
        .basic_auth(VIEWER, Some(password))
        .json(&json!({"message": "a viewer must not write"}))
        .send()
        .await?
        .status();
    ensure!(
        status == reqwest::StatusCode::FORBIDDEN,
        "{VIEWER} writing to {ALERTS_INDEX}: HTTP {status}, expected 403"
    );
    Ok(())
}

async fn search(
    http: &reqwest::Client,
    config: &Config,
    user: &str,
    password: &str,
    index: &str,
    query: Value,
) -> anyhow::Result<Value> {
    let response = http
        .post(format!("{}/{index}/_search", config.elasticsearch_url))
        .basic_auth(user, Some(password))
        .json(&query)
        .send()
        .await?;
    let status = response.status();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    ensure!(status.is_success(), "{index}: HTTP {status}: {answer}");
    Ok(answer)
}
