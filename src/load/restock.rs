//! Keeping the captured products in stock, so that a long load never runs out: before the
//! run each product of [`POOL`] is raised to [`TARGET`], and during it what orders may have
//! taken is put back in batches through inventory's internal `POST /restock`. [`SCARCE`]
//! is never restocked.
//!
//! [`SCARCE`]: super::scenario::SCARCE

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::ProgressBar;
use ordertrail_inventory::Restock;
use ordertrail_shared::api::{MAX_QUANTITY, OrderLine, Product};
use reqwest::Url;
use serde::Serialize;

use super::root_cause;
use super::scenario::POOL;

/// The stock each product of [`POOL`] is raised to before the run.
pub const TARGET: i64 = 500;
/// How often what was sold is put back.
pub const EVERY: Duration = Duration::from_millis(500);

/// What restocking did during a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RestockSummary {
    /// Whether the run restocked at all.
    pub enabled: bool,
    /// `POST /restock` requests that succeeded.
    pub requests: u64,
    /// Units added in all.
    pub units: i64,
    /// Why restocking stopped or failed, when it did.
    pub note: Option<String>,
}

impl RestockSummary {
    /// One line for the text report.
    pub fn describe(&self) -> String {
        let mut line = if self.enabled {
            format!("{} units in {} requests", self.units, self.requests)
        } else {
            "off".to_owned()
        };
        if let Some(note) = &self.note {
            line.push_str(&format!(" ({note})"));
        }
        line
    }
}

/// Puts back what the load's orders took.
#[derive(Debug)]
pub struct Restocker {
    http: reqwest::Client,
    url: Mutex<Option<Url>>,
    pending: Mutex<BTreeMap<String, i64>>,
    summary: Mutex<RestockSummary>,
    progress: ProgressBar,
}

impl Restocker {
    /// A restocker calling `POST /restock` at `inventory`, or doing nothing when `None`. Notes
    /// are printed once each, above `progress`.
    pub fn new(http: reqwest::Client, inventory: Option<Url>, progress: ProgressBar) -> Self {
        let url = inventory.map(|base| base.join("/restock").expect("a path joins any URL"));
        Self {
            http,
            summary: Mutex::new(RestockSummary {
                enabled: url.is_some(),
                ..RestockSummary::default()
            }),
            url: Mutex::new(url),
            pending: Mutex::default(),
            progress,
        }
    }

    /// Raises each product of [`POOL`] to [`TARGET`], reading the stock from `products` (the
    /// gateway's `GET /api/products`). When inventory cannot be reached, says so and turns
    /// restocking off for the run.
    pub async fn top_up(&self, products: Url) {
        if self.url.lock().expect("not poisoned").is_none() {
            return;
        }
        let catalogue = match self.catalogue(&products).await {
            Ok(catalogue) => catalogue,
            Err(err) => return self.note(err),
        };
        let short: Vec<OrderLine> = catalogue
            .into_iter()
            .filter(|p| POOL.contains(&p.sku.as_str()) && p.stock < TARGET)
            .map(|p| OrderLine {
                quantity: TARGET - p.stock,
                sku: p.sku,
            })
            .collect();
        // Pending like units sold, and put back the same way.
        self.sold(&short);
        if let Err(err) = self.put_back().await {
            self.url.lock().expect("not poisoned").take();
            self.pending.lock().expect("not poisoned").clear();
            self.summary.lock().expect("not poisoned").enabled = false;
            self.note(format!(
                "{err}: running without restocking, so captured products may run out \
                 (compose does not publish inventory; --inventory-url names where it is)"
            ));
        }
    }

    async fn catalogue(&self, products: &Url) -> Result<Vec<Product>, String> {
        let response = self
            .http
            .get(products.clone())
            .send()
            .await
            .map_err(|err| format!("cannot read {products}: {}", root_cause(&err)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("{products} answered {status}"));
        }
        response
            .json()
            .await
            .map_err(|err| format!("{products} sent no catalogue: {}", root_cause(&err)))
    }

    /// Notes that an order may have taken `lines`, to be put back at the next flush.
    pub fn sold(&self, lines: &[OrderLine]) {
        if self.url.lock().expect("not poisoned").is_none() {
            return;
        }
        let mut pending = self.pending.lock().expect("not poisoned");
        for line in lines {
            *pending.entry(line.sku.clone()).or_default() += line.quantity;
        }
    }

    /// Puts back everything sold so far. What could not be put back stays pending for the
    /// next flush; the first failure is noted.
    pub async fn flush(&self) {
        let Err(err) = self.put_back().await else {
            return;
        };
        let first = {
            let mut summary = self.summary.lock().expect("not poisoned");
            let first = summary.note.is_none();
            summary.note.get_or_insert_with(|| err.clone());
            first
        };
        if first {
            self.print(&format!("restocking failed: {err}"));
        }
    }

    /// Sends what is pending, [`MAX_QUANTITY`] units of a product per request at most; on a
    /// failure, what was not sent stays pending.
    async fn put_back(&self) -> Result<(), String> {
        let Some(url) = self.url.lock().expect("not poisoned").clone() else {
            return Ok(());
        };
        loop {
            let items: Vec<OrderLine> = {
                let mut pending = self.pending.lock().expect("not poisoned");
                let items = pending
                    .iter_mut()
                    .filter(|(_, units)| **units > 0)
                    .map(|(sku, units)| {
                        let quantity = (*units).min(MAX_QUANTITY);
                        *units -= quantity;
                        OrderLine {
                            sku: sku.clone(),
                            quantity,
                        }
                    })
                    .collect();
                pending.retain(|_, units| *units > 0);
                items
            };
            if items.is_empty() {
                return Ok(());
            }
            if let Err(err) = self.send(&url, &items).await {
                let mut pending = self.pending.lock().expect("not poisoned");
                for line in items {
                    *pending.entry(line.sku).or_default() += line.quantity;
                }
                return Err(err);
            }
        }
    }

    async fn send(&self, url: &Url, items: &[OrderLine]) -> Result<(), String> {
        let restock = Restock {
            items: items.to_vec(),
        };
        let response = self
            .http
            .post(url.clone())
            .json(&restock)
            .send()
            .await
            .map_err(|err| format!("cannot reach inventory at {url}: {}", root_cause(&err)))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(format!("{url} answered {status}: {body}"));
        }
        if let Err(err) = response.json::<Vec<Product>>().await {
            return Err(format!(
                "{url} answered {status} without the products: {}",
                root_cause(&err)
            ));
        }
        let mut summary = self.summary.lock().expect("not poisoned");
        summary.requests += 1;
        summary.units += items.iter().map(|l| l.quantity).sum::<i64>();
        Ok(())
    }

    /// Flushes every [`EVERY`] until `stop` is cancelled.
    pub async fn run(&self, stop: tokio_util::sync::CancellationToken) {
        let mut ticks = tokio::time::interval(EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => self.flush().await,
            }
        }
    }

    /// What restocking did.
    pub fn summary(&self) -> RestockSummary {
        self.summary.lock().expect("not poisoned").clone()
    }

    fn note(&self, note: String) {
        self.summary.lock().expect("not poisoned").note = Some(note.clone());
        self.print(&note);
    }

    fn print(&self, line: &str) {
        self.progress
            .suspend(|| eprintln!("ordertrail load: {line}"));
    }
}
