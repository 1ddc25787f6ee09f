//! The right to be forgotten, for real: an order of a customer made up for this run, its log
//! and audit lines waited for in Elasticsearch, `ordertrail forget` run on that customer (the
//! library call the command makes), and no document with that `customer.id` left in any
//! ordertrail data stream.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use ordertrail::forget::{DATA_STREAMS, Elasticsearch, forget};
use ordertrail_shared::api::CustomerId;
use serde_json::{Value, json};

use super::{Config, sku_in_stock};

/// Log shipping: Filebeat's polling, Logstash's batches, Elasticsearch's refresh.
const PATIENCE: Duration = Duration::from_secs(120);
/// How long the count of a customer's documents must stay the same before it is taken as
/// complete: an order's lines come from four containers, each shipped on its own.
const SETTLED: Duration = Duration::from_secs(6);

/// Places an order for a throwaway customer, waits for its documents, forgets the customer
/// and checks that none is left.
pub async fn check(http: &reqwest::Client, config: &Config) -> anyhow::Result<()> {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let customer = CustomerId::try_from(format!("stack-check-forget-{nanos}"))?;
    let sku = sku_in_stock(http, config).await?;
    place_order(http, config, &customer, &sku).await?;
    let stored = settled_count(http, config, &customer).await?;
    println!(
        "forget: customer {} has {stored} documents in {DATA_STREAMS:?}",
        customer.as_str()
    );

    let elasticsearch = Elasticsearch::new(
        config.elasticsearch_url.parse()?,
        config.elastic_username.clone(),
        config.elastic_password.clone().into(),
        Duration::from_secs(60),
    )?;
    let report = forget(&elasticsearch, &customer).await;
    report.ensure_complete()?;
    ensure!(
        report.deleted() >= stored,
        "forget deleted {} documents, {stored} were stored:\n{report}",
        report.deleted()
    );
    let left = count(http, config, &customer).await?;
    ensure!(
        left == 0,
        "{left} documents of customer {} left after forget:\n{report}",
        customer.as_str()
    );
    println!("  forget deleted {}, none left", report.deleted());
    Ok(())
}

/// Places a paid order for `customer`.
async fn place_order(
    http: &reqwest::Client,
    config: &Config,
    customer: &CustomerId,
    sku: &str,
) -> anyhow::Result<()> {
    let body = json!({
        "customer_id": customer.as_str(),
        "items": [{"sku": sku, "quantity": 1}],
        "payment": {"card_number": "4242424242424242", "expiry": "12/30", "cvc": "123"}
    });
    let response = http
        .post(format!("{}/api/orders", config.gateway_url))
        .json(&body)
        .send()
        .await?;
    let status = response.status();
    ensure!(
        status.as_u16() == 201,
        "the order for {} answered {status}: {}",
        customer.as_str(),
        response.text().await.unwrap_or_default()
    );
    Ok(())
}

/// The number of the customer's documents once there are some in every data stream and the
/// number has not changed for [`SETTLED`].
async fn settled_count(
    http: &reqwest::Client,
    config: &Config,
    customer: &CustomerId,
) -> anyhow::Result<u64> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut last = None;
    loop {
        let counts = per_stream(http, config, customer).await;
        match &counts {
            Ok(counts) if counts.iter().all(|&n| n > 0) => {
                let total = counts.iter().sum();
                if last == Some(total) {
                    return Ok(total);
                }
                last = Some(total);
            }
            _ => last = None,
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "the documents of customer {} did not settle within {PATIENCE:?}: {counts:?}",
                customer.as_str()
            );
        }
        tokio::time::sleep(SETTLED).await;
    }
}

/// The customer's documents in each data stream, [`DATA_STREAMS`] order.
async fn per_stream(
    http: &reqwest::Client,
    config: &Config,
    customer: &CustomerId,
) -> anyhow::Result<Vec<u64>> {
    let mut counts = Vec::new();
    for stream in DATA_STREAMS {
        counts.push(count_in(http, config, stream, customer).await?);
    }
    Ok(counts)
}

/// The customer's documents in every data stream.
async fn count(
    http: &reqwest::Client,
    config: &Config,
    customer: &CustomerId,
) -> anyhow::Result<u64> {
    Ok(per_stream(http, config, customer).await?.iter().sum())
}

async fn count_in(
    http: &reqwest::Client,
    config: &Config,
    stream: &str,
    customer: &CustomerId,
) -> anyhow::Result<u64> {
    let response = http
        .post(format!("{}/{stream}/_count", config.elasticsearch_url))
        .basic_auth(&config.elastic_username, Some(&config.elastic_password))
        .json(&json!({"query": {"term": {"customer.id": customer.as_str()}}}))
        .send()
        .await?;
    let status = response.status();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    ensure!(
        status.is_success(),
        "{stream}: Elasticsearch answered {status}: {answer}"
    );
    answer["count"]
        .as_u64()
        .with_context(|| format!("{stream}: no count in {answer}"))
}
