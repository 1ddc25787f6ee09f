//! Load on the gateway: many orders at once, some idempotency keys sent several times together,
//! every answer kept with its timing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

use super::{Answer, DECLINED_CARD, GOOD_CARD};

/// The catalogue (services/inventory/migrations/0001_catalogue.sql): 120, 80, 60, 40, 25 and 3
/// in stock, so that the load sells some products out.
const SKUS: [&str; 6] = [
    "TRAIL-MUG",
    "TRAIL-TEE",
    "TRAIL-CAP",
    "TRAIL-BOTTLE",
    "TRAIL-LAMP",
    "TRAIL-MAP",
];

/// How long a client keeps retrying one key.
const RETRY_FOR: Duration = Duration::from_secs(20);
/// The pause between two tries of a key.
const RETRY_AFTER: Duration = Duration::from_millis(250);

/// One idempotency key: its order, sent `copies` times at once.
pub struct Job {
    pub key: String,
    pub body: Value,
    pub copies: usize,
}

/// `keys` orders, the same on every run: one or two lines of one to three units over the whole
/// catalogue, one in eight paid with a declined card, and one key in ten sent two or three
/// times at once.
pub fn jobs(keys: usize) -> Vec<Job> {
    let mut random = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move |below: u64| {
        // xorshift64: reproducible without a dependency.
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        random % below
    };
    (0..keys)
        .map(|i| {
            let first = next(SKUS.len() as u64) as usize;
            let mut items = vec![json!({"sku": SKUS[first], "quantity": 1 + next(3)})];
            if next(2) == 0 {
                let second = (first + 1 + next(SKUS.len() as u64 - 1) as usize) % SKUS.len();
                items.push(json!({"sku": SKUS[second], "quantity": 1 + next(3)}));
            }
            let card = if next(8) == 0 {
                DECLINED_CARD
            } else {
                GOOD_CARD
            };
            Job {
                key: format!("load-{i:04}"),
                body: json!({
                    "customer_id": format!("c-{}", i % 23),
                    "items": items,
                    "payment": {"card_number": card, "expiry": "12/30", "cvc": "123"}
                }),
                copies: if i % 10 == 3 { 2 + i / 10 % 2 } else { 1 },
            }
        })
        .collect()
}

/// Whether a client sends a key again when its answer says nothing final.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// One request per copy.
    Never,
    /// Again every 250 ms, for up to 20 s, until the answer is final (see [`is_final`]).
    UntilFinal,
}

/// One request and what came of it.
pub struct Sent {
    pub key: String,
    pub started: Instant,
    pub ended: Instant,
    /// The answer, or why there was none (a connection error, a timeout).
    pub outcome: Result<Answer, String>,
}

impl Sent {
    /// The status and the problem's reason (or title), such as `409 out_of_stock`; `no answer`.
    pub fn label(&self) -> String {
        match &self.outcome {
            Err(_) => "no answer".to_owned(),
            Ok(answer) => {
                let reason = answer.body["reason"]
                    .as_str()
                    .or_else(|| answer.body["title"].as_str());
                match reason {
                    Some(reason) => format!("{} {reason}", answer.status),
                    None => answer.status.to_string(),
                }
            }
        }
    }

    /// True when the request overlapped `from..until`.
    pub fn overlaps(&self, from: Instant, until: Instant) -> bool {
        self.started < until && self.ended > from
    }
}

/// True for an answer about the order itself: not `409 request in progress` or `409 checkout
/// unfinished` (the sweep finishes it), and not a gateway's `503` that names no order (the
/// order service could not be reached).
pub fn is_final(answer: &Answer) -> bool {
    let in_progress = answer.status == 409
        && (answer.body["title"] == "request in progress"
            || answer.body["type"] == "/problems/checkout-unfinished");
    let unreached = answer.status == 503 && answer.body["order_id"].is_null();
    !in_progress && !unreached
}

/// The requests that failed although no outage excuses them: no answer, or a `5xx` other than
/// a `503` during the outage (`excused` holds the keys with a request under way meanwhile).
pub fn failed_outside(sent: &[Sent], excused: &BTreeSet<&str>) -> Vec<String> {
    sent.iter()
        .filter(|s| {
            let excused = excused.contains(s.key.as_str());
            match &s.outcome {
                Err(_) => !excused,
                Ok(answer) => answer.status >= 500 && !(answer.status == 503 && excused),
            }
        })
        .map(|s| format!("{}: {}", s.key, s.label()))
        .collect()
}

/// The keys whose last request got no final answer (see [`is_final`]).
pub fn without_final_answer(sent: &[Sent]) -> Vec<String> {
    let mut last = BTreeMap::new();
    for one in sent {
        last.insert(one.key.as_str(), one);
    }
    last.values()
        .filter(|s| !s.outcome.as_ref().is_ok_and(is_final))
        .map(|s| format!("{}: {}", s.key, s.label()))
        .collect()
}

/// Clients sending jobs to the gateway, `concurrency` keys at a time.
#[derive(Clone)]
pub struct Load {
    /// Copies of a key, and a key's retries, go to each in turn.
    gateways: Vec<String>,
    concurrency: usize,
    retry: Retry,
    http: reqwest::Client,
    answered: Arc<AtomicUsize>,
}

impl Load {
    /// A load on the gateway's `POST /api/orders` at `url`.
    pub fn new(url: String, concurrency: usize, retry: Retry) -> Self {
        Self::across(vec![url], concurrency, retry)
    }

    /// A load on several gateways' `POST /api/orders` at `urls`: the copies of a key sent at
    /// once go to different gateways, and each retry to the next.
    pub fn across(urls: Vec<String>, concurrency: usize, retry: Retry) -> Self {
        assert!(!urls.is_empty(), "a load needs a gateway");
        Self {
            gateways: urls,
            concurrency,
            retry,
            // Beyond the gateway's own 30 s limit: a request still open then is stuck.
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(40))
                .build()
                .unwrap(),
            answered: Arc::default(),
        }
    }

    /// How many requests have had an answer (or failed) so far.
    pub fn answered(&self) -> usize {
        self.answered.load(Ordering::Relaxed)
    }

    /// Sends every job, the copies of a key at the same moment; every request, in no order.
    pub async fn run(&self, jobs: Vec<Job>) -> Vec<Sent> {
        futures::stream::iter(jobs)
            .map(|job| async move {
                let copies = (0..job.copies).map(|copy| self.send_key(&job, copy));
                futures::future::join_all(copies)
                    .await
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
            })
            .buffer_unordered(self.concurrency)
            .collect::<Vec<Vec<Sent>>>()
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    async fn send_key(&self, job: &Job, copy: usize) -> Vec<Sent> {
        let give_up = Instant::now() + RETRY_FOR;
        let mut sent = Vec::new();
        loop {
            let gateway = &self.gateways[(copy + sent.len()) % self.gateways.len()];
            let one = self.send(gateway, job).await;
            let done = match &one.outcome {
                Ok(answer) => is_final(answer),
                Err(_) => false,
            };
            sent.push(one);
            if done || self.retry == Retry::Never || Instant::now() > give_up {
                return sent;
            }
            tokio::time::sleep(RETRY_AFTER).await;
        }
    }

    async fn send(&self, gateway: &str, job: &Job) -> Sent {
        let started = Instant::now();
        let response = self
            .http
            .post(gateway)
            .header("idempotency-key", &job.key)
            .json(&job.body)
            .send()
            .await;
        let outcome = match response {
            Ok(response) => Ok(Answer::read(response).await),
            Err(err) => Err(err.to_string()),
        };
        self.answered.fetch_add(1, Ordering::Relaxed);
        Sent {
            key: job.key.clone(),
            started,
            ended: Instant::now(),
            outcome,
        }
    }
}

/// A summary of `sent` to print: requests, answers by [`Sent::label`] and latency.
pub fn summary(sent: &[Sent]) -> String {
    let mut by_label = BTreeMap::<String, usize>::new();
    for one in sent {
        *by_label.entry(one.label()).or_default() += 1;
    }
    let mut latencies: Vec<Duration> = sent.iter().map(|s| s.ended - s.started).collect();
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    let keys: std::collections::BTreeSet<&str> = sent.iter().map(|s| s.key.as_str()).collect();
    let mut text = format!(
        "{} requests for {} keys; latency p50 {:?}, p99 {:?}, max {:?}\nanswers:",
        sent.len(),
        keys.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    );
    for (label, count) in by_label {
        text.push_str(&format!("\n  {count:>5}  {label}"));
    }
    text
}
