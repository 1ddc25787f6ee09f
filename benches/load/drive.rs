//! The client side: a closed loop of `connections` workers, each sending its next request as
//! soon as the previous one is answered, for a fixed time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

/// A card that is captured.
const GOOD_CARD: &str = "4242424242424242";
/// The SKUs ordered, in turn: the catalogue's, less the map whose stock of 3 is there to run
/// out.
pub const SKUS: [&str; 5] = [
    "TRAIL-MUG",
    "TRAIL-TEE",
    "TRAIL-CAP",
    "TRAIL-BOTTLE",
    "TRAIL-LAMP",
];
/// Per-request client timeout: a hung request is counted as an error, not waited on forever.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What a round sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// `POST /api/orders`, one captured unit, a unique `Idempotency-Key` each; `201` expected.
    Orders,
    /// `GET /api/products`; `200` expected.
    Reads,
}

impl Workload {
    /// How it is printed.
    pub fn name(self) -> &'static str {
        match self {
            Self::Orders => "POST /api/orders",
            Self::Reads => "GET /api/products",
        }
    }

    /// Hops per request that carry a server span: the gateway's and each call behind it.
    /// An order calls order, which reserves, charges and commits; a read calls inventory.
    pub fn hops(self) -> u64 {
        match self {
            Self::Orders => 5,
            Self::Reads => 2,
        }
    }
}

/// The answers of one or more rounds.
#[derive(Debug, Default, Clone)]
pub struct Samples {
    /// Latency of every expected answer, send to end of body.
    pub latencies: Vec<Duration>,
    /// Transport errors, timeouts and unexpected statuses.
    pub errors: u64,
    /// Time spent sending.
    pub wall: Duration,
}

impl Samples {
    /// Adds another round's samples.
    pub fn extend(&mut self, other: Samples) {
        self.latencies.extend(other.latencies);
        self.errors += other.errors;
        self.wall += other.wall;
    }

    /// Expected answers per second.
    pub fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.wall.as_secs_f64()
    }

    /// The `p`-th percentile (0–100), nearest rank, in milliseconds.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted
            .get(rank.saturating_sub(1))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    }
}

/// Sends `workload` to `gateway` from `connections` workers for `duration`.
pub async fn run(
    http: &reqwest::Client,
    gateway: &str,
    workload: Workload,
    connections: usize,
    duration: Duration,
) -> Samples {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let started = Instant::now();
    let deadline = started + duration;
    // Unique across rounds and runs, so that no key is ever replayed.
    let run_id = Arc::new(format!(
        "{}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    ));
    let workers = (0..connections).map(|worker| {
        let http = http.clone();
        let run_id = run_id.clone();
        let url = match workload {
            Workload::Orders => format!("{gateway}/api/orders"),
            Workload::Reads => format!("{gateway}/api/products"),
        };
        async move {
            let mut samples = Samples::default();
            let mut i = 0usize;
            while Instant::now() < deadline {
                let request = match workload {
                    Workload::Orders => {
                        let sku = SKUS[(worker + i) % SKUS.len()];
                        http.post(&url)
                            .header("idempotency-key", format!("load-{run_id}-{worker}-{i}"))
                            .json(&json!({
                                "customer_id": "c-load",
                                "items": [{"sku": sku, "quantity": 1}],
                                "payment": {"card_number": GOOD_CARD, "expiry": "12/30", "cvc": "123"}
                            }))
                    }
                    Workload::Reads => http.get(&url),
                };
                let expected = match workload {
                    Workload::Orders => 201,
                    Workload::Reads => 200,
                };
                let sent = Instant::now();
                let answered = match request.send().await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        response.bytes().await.is_ok() && status == expected
                    }
                    Err(_) => false,
                };
                if answered {
                    samples.latencies.push(sent.elapsed());
                } else {
                    samples.errors += 1;
                }
                i += 1;
            }
            samples
        }
    });
    let mut all = Samples::default();
    for samples in futures::future::join_all(workers).await {
        all.extend(samples);
    }
    all.wall = started.elapsed();
    all
}

/// Raises the stock of every ordered SKU by at least `units`, so that a round never runs out.
pub async fn restock(http: &reqwest::Client, inventory: &str, units: u64) -> anyhow::Result<()> {
    // The route takes at most 1000 units a line.
    for _ in 0..units.div_ceil(1000) {
        let items: Vec<_> = SKUS
            .iter()
            .map(|sku| json!({"sku": sku, "quantity": 1000}))
            .collect();
        let response = http
            .post(format!("{inventory}/restock"))
            .json(&json!({ "items": items }))
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "restock answered {}",
            response.status()
        );
    }
    Ok(())
}
