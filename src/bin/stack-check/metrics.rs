//! The metrics part of the check: Jaeger's Monitor tab has rate, errors and latency for each of
//! the four services (Jaeger's metrics API, which reads the span metrics back from Prometheus),
//! the latency histograms carry exemplars (trace ids) in Prometheus, and Prometheus holds the
//! services' own business metrics (`ordertrail_*`), which they export over OTLP to Jaeger and
//! Prometheus scrapes from Jaeger's prometheus exporter.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use reqwest::Url;
use serde_json::Value;

use crate::{Config, SERVICES, place_order, sku_in_stock};

/// How long metrics may take to show: the spanmetrics connector flushes every 15 s, Prometheus
/// scrapes every 15 s, and a rate needs two scrapes of a counter that moved.
const PATIENCE: Duration = Duration::from_secs(180);
/// The window of each rate, as Jaeger's `ratePer` (ms): four scrapes.
const RATE_PER_MS: u64 = 60_000;
/// The span metrics' latency histogram, as Prometheus names it (deploy/jaeger/config.yaml).
const LATENCY_BUCKETS: &str = "traces_span_metrics_duration_milliseconds_bucket";

/// Checks the metrics, placing a declined order (all four services, no stock taken) each
/// round so that the rates over the last minute have calls to count.
pub(crate) async fn check(http: &reqwest::Client, config: &Config) -> anyhow::Result<()> {
    let sku = sku_in_stock(http, config).await?;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        place_order(http, config, &sku, "4000000000000002", 402).await?;
        match metrics(http, config).await {
            Ok(business) => {
                println!("  Jaeger Monitor: calls, errors and latencies for {SERVICES:?}");
                println!("  Prometheus: exemplars on {LATENCY_BUCKETS}, {business:?}");
                return Ok(());
            }
            Err(err) if tokio::time::Instant::now() > deadline => {
                bail!("gave up after {PATIENCE:?}: {err:#}")
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(5)).await,
        }
    }
}

/// Every metric check once; returns the business metrics Prometheus holds.
async fn metrics(http: &reqwest::Client, config: &Config) -> anyhow::Result<BTreeSet<String>> {
    for kind in ["calls", "errors", "latencies"] {
        monitor(http, config, kind)
            .await
            .with_context(|| format!("Jaeger's /api/metrics/{kind}"))?;
    }
    exemplars(http, config).await.context("exemplars")?;
    business(http, config)
        .await
        .context("business metrics in Prometheus")
}

/// Jaeger's metrics API for `kind` (`calls`, `errors`, `latencies`), the query its Monitor tab
/// makes (cmd/jaeger/internal/extension/jaegerquery/internal/query_parser.go): server spans of
/// the four services over the last five minutes. Fails unless each service has a series with a
/// number in it (a quantile of no calls is NaN).
async fn monitor(http: &reqwest::Client, config: &Config, kind: &str) -> anyhow::Result<()> {
    let end_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    let mut params: Vec<(&str, String)> = SERVICES
        .iter()
        .map(|service| ("service", (*service).to_owned()))
        .collect();
    params.extend([
        ("spanKind", "server".to_owned()),
        ("endTs", end_ms.to_string()),
        ("lookback", "300000".to_owned()),
        ("step", "15000".to_owned()),
        ("ratePer", RATE_PER_MS.to_string()),
    ]);
    if kind == "latencies" {
        params.push(("quantile", "0.95".to_owned()));
    }
    let url = Url::parse_with_params(
        &format!("{}/api/metrics/{kind}", config.jaeger_query_url),
        &params,
    )?;
    let answer = get_json(http, url).await?;
    // A MetricFamily in protobuf's JSON mapping: metrics[].labels[] and metrics[].metricPoints[].
    let with_data: BTreeSet<&str> = answer["metrics"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|metric| {
            metric["metricPoints"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|point| {
                    point["gaugeValue"]["doubleValue"]
                        .as_f64()
                        .is_some_and(f64::is_finite)
                })
        })
        .filter_map(|metric| {
            metric["labels"]
                .as_array()?
                .iter()
                .find(|label| label["name"] == "service_name")?["value"]
                .as_str()
        })
        .collect();
    let missing: Vec<&str> = SERVICES
        .into_iter()
        .filter(|service| !with_data.contains(service))
        .collect();
    ensure!(missing.is_empty(), "no data for {missing:?}");
    Ok(())
}

/// At least one exemplar on the span metrics' latency histogram in the last five minutes, with
/// the trace id a click in Prometheus (or Grafana) opens.
async fn exemplars(http: &reqwest::Client, config: &Config) -> anyhow::Result<()> {
    let end = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let url = Url::parse_with_params(
        &format!("{}/api/v1/query_exemplars", config.prometheus_url),
        &[
            ("query", LATENCY_BUCKETS.to_owned()),
            ("start", (end - 300).to_string()),
            ("end", end.to_string()),
        ],
    )?;
    let answer = get_json(http, url).await?;
    let traced = answer["data"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|series| series["exemplars"].as_array().into_iter().flatten())
        .any(|exemplar| {
            exemplar["labels"]["trace_id"]
                .as_str()
                .is_some_and(|id| id.len() == 32)
        });
    ensure!(traced, "no exemplar with a trace_id");
    Ok(())
}

/// The names of the `ordertrail_*` series Prometheus holds; fails if there are none.
async fn business(http: &reqwest::Client, config: &Config) -> anyhow::Result<BTreeSet<String>> {
    let url = Url::parse_with_params(
        &format!("{}/api/v1/query", config.prometheus_url),
        &[(
            "query",
            r#"count by (__name__) ({__name__=~"ordertrail_.+"})"#,
        )],
    )?;
    let answer = get_json(http, url).await?;
    let names: BTreeSet<String> = answer["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|series| series["metric"]["__name__"].as_str().map(str::to_owned))
        .collect();
    ensure!(!names.is_empty(), "no ordertrail_* series");
    Ok(names)
}

async fn get_json(http: &reqwest::Client, url: Url) -> anyhow::Result<Value> {
    let response = http.get(url.clone()).send().await?;
    let status = response.status();
    let body = response.text().await?;
    ensure!(status.is_success(), "{url} answered {status}: {body}");
    serde_json::from_str(&body).with_context(|| format!("{url}: not JSON"))
}
