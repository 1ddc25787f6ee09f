//! `stack-check`: the end-to-end check of a running stack, compose's
//! (`docker compose --profile test run --rm e2e`) or Kubernetes' (the Job of
//! `deploy/k8s/components/stack-check`).
//!
//! It places orders through the gateway, reads each answer's `traceresponse`, waits until
//! Jaeger holds the trace with spans of all four services, correctly parented, and until
//! Elasticsearch holds log lines of that trace from all four services, as Filebeat ships them
//! from the containers' stdout: each names the container it was read from, none carries
//! Filebeat's own fields, and every field is there once, decoded from the JSON line. It exits 0
//! when every check passed and 1 with the reasons otherwise. It also checks that Jaeger's
//! Monitor tab has metrics for each service and Prometheus the services' own ([`metrics`]).

mod alerts;
mod forget;
mod metrics;

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use clap::Parser;
use ordertrail_testkit::receiver::from_jaeger_json;
use ordertrail_testkit::topology::topology_problems;
use serde_json::{Value, json};

/// The four services every order's trace and logs must come from.
const SERVICES: [&str; 4] = ["gateway", "inventory", "order", "payment"];
/// How long telemetry may take to become searchable (Filebeat's polling and queue, Logstash
/// batches, Elasticsearch refreshes).
const PATIENCE: Duration = Duration::from_secs(120);

#[derive(Debug, Parser)]
#[command(about = "Checks a running ordertrail stack end to end")]
struct Config {
    /// The gateway (`GATEWAY_URL`).
    #[arg(long, env = "GATEWAY_URL", default_value = "http://localhost:8080")]
    gateway_url: String,
    /// Jaeger's query service (`JAEGER_QUERY_URL`).
    #[arg(
        long,
        env = "JAEGER_QUERY_URL",
        default_value = "http://localhost:16686"
    )]
    jaeger_query_url: String,
    /// Elasticsearch (`ELASTICSEARCH_URL`).
    #[arg(
        long,
        env = "ELASTICSEARCH_URL",
        default_value = "http://localhost:9200"
    )]
    elasticsearch_url: String,
    /// Elasticsearch user (`ELASTIC_USERNAME`).
    #[arg(long, env = "ELASTIC_USERNAME", default_value = "elastic")]
    elastic_username: String,
    /// Elasticsearch password (`ELASTIC_PASSWORD`).
    #[arg(long, env = "ELASTIC_PASSWORD", hide_env_values = true)]
    elastic_password: String,
    /// Prometheus (`PROMETHEUS_URL`).
    #[arg(long, env = "PROMETHEUS_URL", default_value = "http://localhost:9090")]
    prometheus_url: String,
    /// Password of the read-only user ordertrail_viewer (`ORDERTRAIL_VIEWER_PASSWORD`): when
    /// given, the check also shows that it reads the alerts and the logs and cannot write.
    #[arg(long, env = "ORDERTRAIL_VIEWER_PASSWORD", hide_env_values = true)]
    viewer_password: Option<String>,
}

fn main() -> ExitCode {
    let config = Config::parse();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    match runtime.block_on(check(&config)) {
        Ok(()) => {
            println!("stack-check: all checks passed");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("stack-check: FAILED: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn check(config: &Config) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let sku = sku_in_stock(&http, config).await?;
    for (card, expected) in [("4242424242424242", 201), ("4000000000000002", 402)] {
        let trace_id = place_order(&http, config, &sku, card, expected).await?;
        println!(
            "order with card …{} answered {expected}, trace {trace_id}",
            &card[12..]
        );
        let spans = eventually(|| jaeger_trace(&http, config, &trace_id))
            .await
            .context("trace in Jaeger")?;
        println!("  Jaeger: {spans} spans from {SERVICES:?}");
        let logs = eventually(|| logs_of(&http, config, &trace_id))
            .await
            .context("logs in Elasticsearch")?;
        println!("  Elasticsearch: {logs} log lines from {SERVICES:?}");
    }
    forget::check(&http, config).await.context("forget")?;
    alerts::check(&http, config).await.context("alerts")?;
    metrics::check(&http, config).await.context("metrics")?;
    Ok(())
}

async fn sku_in_stock(http: &reqwest::Client, config: &Config) -> anyhow::Result<String> {
    let products: Vec<Value> = http
        .get(format!("{}/api/products", config.gateway_url))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    products
        .iter()
        .filter(|p| p["stock"].as_i64().unwrap_or(0) > 0)
        .find_map(|p| p["sku"].as_str().map(str::to_owned))
        .context("no product in stock")
}

/// Places an order and returns the trace id from its `traceresponse`.
async fn place_order(
    http: &reqwest::Client,
    config: &Config,
    sku: &str,
    card: &str,
    expected: u16,
) -> anyhow::Result<String> {
    let body = json!({
        "customer_id": "stack-check",
        "items": [{"sku": sku, "quantity": 1}],
        "payment": {"card_number": card, "expiry": "12/30", "cvc": "123"}
    });
    let response = http
        .post(format!("{}/api/orders", config.gateway_url))
        .json(&body)
        .send()
        .await?;
    let status = response.status().as_u16();
    let traceresponse = response
        .headers()
        .get("traceresponse")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    ensure!(
        status == expected,
        "expected {expected}, got {status}: {answer}"
    );
    let traceresponse = traceresponse.context("no traceresponse header")?;
    let trace_id = traceresponse
        .split('-')
        .nth(1)
        .context("malformed traceresponse")?
        .to_owned();
    ensure!(
        answer["trace_id"] == trace_id.as_str(),
        "the body's trace_id differs from traceresponse"
    );
    Ok(trace_id)
}

/// The trace from Jaeger's `/api/v3/traces/{id}` once it holds spans of all four services,
/// correctly parented; returns the number of spans.
async fn jaeger_trace(
    http: &reqwest::Client,
    config: &Config,
    trace_id: &str,
) -> anyhow::Result<usize> {
    let response = http
        .get(format!(
            "{}/api/v3/traces/{trace_id}",
            config.jaeger_query_url
        ))
        .send()
        .await?;
    ensure!(
        response.status().is_success(),
        "Jaeger answered {}",
        response.status()
    );
    let spans = from_jaeger_json(&response.text().await?)?;
    let services: BTreeSet<&str> = spans.iter().map(|s| s.service_name.as_str()).collect();
    ensure!(
        services == BTreeSet::from(SERVICES),
        "spans from {services:?} only"
    );
    let problems = topology_problems(&spans);
    ensure!(problems.is_empty(), "malformed trace: {problems:?}");
    Ok(spans.len())
}

/// The number of log lines of the trace in Elasticsearch, once all four services have some.
async fn logs_of(http: &reqwest::Client, config: &Config, trace_id: &str) -> anyhow::Result<usize> {
    let query = json!({"size": 500, "query": {"term": {"trace.id": trace_id}}});
    let response = http
        .post(format!(
            "{}/ordertrail-logs,ordertrail-audit/_search",
            config.elasticsearch_url
        ))
        .basic_auth(&config.elastic_username, Some(&config.elastic_password))
        .json(&query)
        .send()
        .await?;
    ensure!(
        response.status().is_success(),
        "Elasticsearch answered {}",
        response.status()
    );
    let answer: Value = response.json().await?;
    let hits = answer["hits"]["hits"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let services: BTreeSet<&str> = hits
        .iter()
        .filter_map(|hit| text(&hit["_source"], "service.name"))
        .collect();
    ensure!(
        services.iter().copied().eq(SERVICES),
        "log lines from {services:?} only"
    );
    let problems: Vec<String> = hits
        .iter()
        .filter_map(|hit| shipping_problem(&hit["_source"]))
        .collect();
    ensure!(
        problems.is_empty(),
        "{} of {} log lines not shipped as Filebeat should: {:?}",
        problems.len(),
        hits.len(),
        &problems[..problems.len().min(3)]
    );
    Ok(hits.len())
}

/// What is wrong with a log document, if it did not come the Filebeat way: read from its
/// service's container (`container.name`, which only Filebeat adds), without the fields every
/// Beat and input adds (deploy/filebeat/filebeat.yml drops them), its JSON line decoded, and
/// no field written twice (a dotted key beside its expanded object).
fn shipping_problem(source: &Value) -> Option<String> {
    let service = text(source, "service.name").unwrap_or_default();
    let Some(container) = text(source, "container.name") else {
        return Some(format!("a line of {service} without container.name"));
    };
    // Compose names containers <project>-<service>-<n> (v1: with underscores).
    if !container.split(['-', '_']).any(|part| part == service) {
        return Some(format!("a line of {service} from container {container}"));
    }
    if let Some(field) = ["agent", "input"]
        .into_iter()
        .find(|field| !values(source, field).is_empty())
    {
        return Some(format!("a line of {service} with Filebeat's {field}"));
    }
    if text(source, "message").is_some_and(|message| message.starts_with('{')) {
        return Some(format!("a line of {service} whose JSON was not decoded"));
    }
    [
        "@timestamp",
        "message",
        "log.level",
        "ecs.version",
        "trace.id",
    ]
    .into_iter()
    .find(|field| values(source, field).len() != 1)
    .map(|field| format!("a line of {service} with {field} not exactly once"))
}

/// A text field of a log document.
fn text<'a>(source: &'a Value, name: &str) -> Option<&'a str> {
    values(source, name)
        .first()
        .and_then(|value| value.as_str())
}

/// Every value of a field in a log document: under its dotted key, expanded into objects, or a
/// mix of the two. More than one means the field was written twice.
fn values<'a>(source: &'a Value, name: &str) -> Vec<&'a Value> {
    let mut found: Vec<&Value> = source.get(name).into_iter().collect();
    for (dot, _) in name.match_indices('.') {
        if let Some(inner) = source.get(&name[..dot]) {
            found.extend(values(inner, &name[dot + 1..]));
        }
    }
    found
}

/// Retries `attempt` every two seconds until it succeeds or [`PATIENCE`] runs out, then
/// returns the last error.
async fn eventually<T, F>(mut attempt: impl FnMut() -> F) -> anyhow::Result<T>
where
    F: Future<Output = anyhow::Result<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(err) if tokio::time::Instant::now() > deadline => {
                bail!("gave up after {PATIENCE:?}: {err:#}")
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(2)).await,
        }
    }
}
