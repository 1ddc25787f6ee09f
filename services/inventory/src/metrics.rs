//! The inventory service's business instrument: the stock of each product, as an observable
//! gauge.
//!
//! The SDK calls a gauge's callback synchronously, on its reader's thread, at each collection:
//! it must not wait for the database. So the callback reads a small view of the stock held in
//! memory, and asks [`StockGauge::keep_fresh`], a background job, to read the database again
//! for the next collection. The value exported is therefore as old as one export interval
//! (`OTEL_METRIC_EXPORT_INTERVAL`, 60 s by default), or the service's start for the first. When
//! metrics are off, the callback never runs and the database is read once, at start.
//!
//! Asking on collection, rather than updating the view on each reserve, release or restock,
//! keeps the view right when several replicas share the database, and costs a request nothing.

use std::sync::{Arc, Mutex, PoisonError};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Meter, ObservableGauge};
use ordertrail_shared::telemetry;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// The most products the gauge reports (the first by SKU): one series each, so that a large
/// catalogue cannot flood the metrics backend. The seeded catalogue has six.
const MAX_PRODUCTS: i64 = 500;

/// The product of a stock level.
const PRODUCT_SKU: &str = "product.sku";

/// The stock as last read, and the callback's request for a fresh reading.
#[derive(Debug, Default)]
struct StockView {
    levels: Mutex<Vec<(String, i64)>>,
    wanted: Notify,
}

/// The `ordertrail.inventory.stock` gauge and the view it reports.
#[derive(Debug)]
pub(crate) struct StockGauge {
    view: Arc<StockView>,
    store: Store,
    // Held for as long as the view is kept fresh, the life of the service.
    _gauge: ObservableGauge<i64>,
}

impl StockGauge {
    /// The gauge on the global meter provider; made once per process, at start, after
    /// telemetry is installed (a meter taken from the no-op provider before stays a no-op).
    pub(crate) fn global(store: Store) -> Self {
        Self::new(&telemetry::meter(), store)
    }

    /// The gauge on `meter`, reporting the stock of `store`.
    pub(crate) fn new(meter: &Meter, store: Store) -> Self {
        let view = Arc::new(StockView::default());
        let observed = Arc::clone(&view);
        // `{item}`: a count of units in stock, as a UCUM annotation (the conventions' form for
        // a count of things).
        let gauge = meter
            .i64_observable_gauge("ordertrail.inventory.stock")
            .with_unit("{item}")
            .with_description("Units in stock per product, as read from the inventory database")
            .with_callback(move |observer| {
                let levels = observed
                    .levels
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                for (sku, stock) in levels.iter() {
                    observer.observe(*stock, &[KeyValue::new(PRODUCT_SKU, sku.clone())]);
                }
                observed.wanted.notify_one();
            })
            .build();
        Self {
            view,
            store,
            _gauge: gauge,
        }
    }

    /// Reads the stock now, and again after each collection, until `stop` is cancelled.
    pub(crate) async fn keep_fresh(self, stop: CancellationToken) {
        loop {
            self.refresh().await;
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.view.wanted.notified() => {}
            }
        }
    }

    async fn refresh(&self) {
        match self.store.stock_levels(MAX_PRODUCTS).await {
            Ok(levels) => {
                *self
                    .view
                    .levels
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = levels;
            }
            // The gauge keeps the last reading; the next collection asks again.
            Err(err) => tracing::warn!(
                error = &err as &dyn std::error::Error,
                "stock not read for the stock gauge"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ordertrail_shared::api::OrderLine;
    use ordertrail_testkit::{CapturedMetrics, databases};

    use super::*;
    use crate::MIGRATIONS;

    /// The gauge's points as (SKU, stock), by SKU.
    fn reported(captured: &CapturedMetrics) -> Vec<(String, i64)> {
        let mut points: Vec<(String, i64)> = captured
            .points("ordertrail.inventory.stock")
            .into_iter()
            .map(|point| (point.attributes[PRODUCT_SKU].clone(), point.value))
            .collect();
        points.sort();
        points
    }

    async fn in_database(store: &Store) -> Vec<(String, i64)> {
        let mut levels: Vec<(String, i64)> = store
            .products()
            .await
            .unwrap()
            .into_iter()
            .map(|p| (p.sku, p.stock))
            .collect();
        levels.sort();
        levels
    }

    /// Collects until the gauge reports the database's stock; panics with both after 5 s.
    async fn assert_reports_the_database(captured: &CapturedMetrics, store: &Store) {
        let expected = in_database(store).await;
        let mut last = Vec::new();
        for _ in 0..100 {
            last = reported(captured);
            if last == expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the gauge reports {last:?}, the database holds {expected:?}");
    }

    #[tokio::test]
    async fn the_gauge_reports_each_products_stock_and_follows_a_reservation() {
        for db in databases(&MIGRATIONS).await {
            let store = Store::new(db);
            let captured = CapturedMetrics::start();
            let stop = CancellationToken::new();
            let gauge = StockGauge::new(&captured.meter(), store.clone());
            tokio::spawn(gauge.keep_fresh(stop.clone()));

            assert_reports_the_database(&captured, &store).await;
            assert_eq!(reported(&captured).len(), 6, "one series per product");
            assert_eq!(
                captured.unit("ordertrail.inventory.stock").as_deref(),
                Some("{item}")
            );

            let mugs = OrderLine {
                sku: "TRAIL-MUG".into(),
                quantity: 7,
            };
            store.reserve("o-1", &[mugs]).await.unwrap();
            assert_reports_the_database(&captured, &store).await;
            stop.cancel();
        }
    }
}
