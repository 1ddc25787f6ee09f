//! The business instruments, counted by checkouts through the router to real inventory and
//! payment services, and by the sweep, on a meter of each test's own.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use ordertrail_shared::api::OrderStatus;
use ordertrail_shared::db::Sql;
use ordertrail_shared::http::ServiceClient;
use ordertrail_testkit::{CapturedMetrics, CapturedSpans, databases};
use tower::ServiceExt;

use super::proxy::{Pass, Proxy};
use super::{
    client, create, inventory, inventory_url, nowhere, payment, payment_url, reserve_mugs,
};
use crate::metrics::OrderMetrics;
use crate::{AppState, MIGRATIONS, Recovery, Saga, Store, router};

const ORDERS: &str = "ordertrail.orders";
const REVENUE: &str = "ordertrail.revenue";
const COMPENSATIONS: &str = "ordertrail.saga.compensations";
const RECOVERIES: &str = "ordertrail.saga.recoveries";

/// An order of `quantity` mugs (14.50 each) paid with `card`.
fn order(quantity: u32, card: &str) -> String {
    format!(
        r#"{{"customer_id":"c-1","items":[{{"sku":"TRAIL-MUG","quantity":{quantity}}}],"payment":{{"card_number":"{card}","expiry":"12/30","cvc":"123"}}}}"#
    )
}

/// The order service's router over a fresh database, counting on `metrics`.
async fn orders(
    inventory: ServiceClient,
    payment: ServiceClient,
    metrics: &CapturedMetrics,
) -> axum::Router {
    let store = Store::new(databases(&MIGRATIONS).await.remove(0));
    let saga = Saga::new(store.clone(), inventory, payment)
        .with_metrics(OrderMetrics::new(&metrics.meter()));
    router(AppState { store, saga })
}

async fn place(app: &axum::Router, body: String) -> StatusCode {
    let request = Request::post("/orders")
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    app.clone().oneshot(request).await.unwrap().status()
}

#[tokio::test]
async fn a_confirmed_order_is_counted_and_its_total_added_to_revenue() {
    let _spans = CapturedSpans::start();
    let metrics = CapturedMetrics::start();
    let app = orders(inventory().await, payment().await, &metrics).await;

    assert_eq!(
        place(&app, order(3, "4242424242424242")).await,
        StatusCode::CREATED
    );
    assert_eq!(
        place(&app, order(1, "4242424242424242")).await,
        StatusCode::CREATED
    );

    assert_eq!(
        metrics.sum(ORDERS, &[("order.status", "confirmed")]),
        Some(2)
    );
    assert_eq!(metrics.sum(REVENUE, &[]), Some(4 * 1450));
    assert_eq!(metrics.unit(ORDERS).as_deref(), Some("{order}"));
    assert_eq!(metrics.unit(REVENUE).as_deref(), Some("{cent}"));
    assert!(metrics.points(COMPENSATIONS).is_empty());
}

#[tokio::test]
async fn a_declined_card_counts_a_failed_order_with_its_reason_and_the_release_that_undid_it() {
    let _spans = CapturedSpans::start();
    let metrics = CapturedMetrics::start();
    let app = orders(inventory().await, payment().await, &metrics).await;

    assert_eq!(
        place(&app, order(1, "4000000000009995")).await,
        StatusCode::PAYMENT_REQUIRED
    );

    assert_eq!(
        metrics.points(ORDERS),
        [point(
            &[
                ("order.status", "failed"),
                ("error.type", "insufficient_funds")
            ],
            1
        )]
    );
    // A refused charge took nothing: only the reservation is undone.
    assert_eq!(
        metrics.points(COMPENSATIONS),
        [point(&[("saga.compensation", "release")], 1)]
    );
    assert!(metrics.points(REVENUE).is_empty());
}

#[tokio::test]
async fn a_charge_whose_answer_was_lost_counts_its_refund_and_release() {
    let _spans = CapturedSpans::start();
    let metrics = CapturedMetrics::start();
    // Every charge is taken and its answer lost on the way back: it may have been applied.
    let proxy = Proxy::start(&payment_url().await, |method, path| {
        if method == Method::POST && path == "/payments" {
            Pass::Lost
        } else {
            Pass::Through
        }
    })
    .await;
    let app = orders(inventory().await, proxy.client(), &metrics).await;

    assert_eq!(
        place(&app, order(1, "4242424242424242")).await,
        StatusCode::SERVICE_UNAVAILABLE
    );

    assert_eq!(
        metrics.points(COMPENSATIONS),
        [
            point(&[("saga.compensation", "refund")], 1),
            point(&[("saga.compensation", "release")], 1)
        ]
    );
    assert_eq!(
        metrics.points(ORDERS),
        [point(
            &[
                ("order.status", "failed"),
                ("error.type", "service_unavailable")
            ],
            1
        )]
    );
}

#[tokio::test]
async fn an_order_out_of_stock_fails_with_its_reason_and_undoes_nothing() {
    let _spans = CapturedSpans::start();
    let metrics = CapturedMetrics::start();
    let app = orders(inventory().await, nowhere(), &metrics).await;

    assert_eq!(
        place(&app, order(1000, "4242424242424242")).await,
        StatusCode::CONFLICT
    );

    assert_eq!(
        metrics.points(ORDERS),
        [point(
            &[("order.status", "failed"), ("error.type", "out_of_stock")],
            1
        )]
    );
    assert!(metrics.points(COMPENSATIONS).is_empty());
}

#[tokio::test]
async fn an_order_the_sweep_finishes_is_counted_as_a_recovery_once() {
    let _spans = CapturedSpans::start();
    let metrics = CapturedMetrics::start();
    let inventory = inventory().await;
    let store = Store::new(databases(&MIGRATIONS).await.remove(0));
    let saga = Saga::new(store.clone(), inventory.clone(), nowhere())
        .with_metrics(OrderMetrics::new(&metrics.meter()));
    let sweep = Recovery::new(saga);
    // The service stopped right after the stock was reserved.
    create(&store, "o-1", None).await;
    reserve_mugs(&inventory, "o-1").await;

    sweep.recover_stalled_orders(Duration::ZERO).await;
    sweep.recover_stalled_orders(Duration::ZERO).await;

    assert_eq!(
        store.get("o-1").await.unwrap().unwrap().status,
        OrderStatus::Failed
    );
    assert_eq!(
        metrics.points(RECOVERIES),
        [point(&[("order.status", "failed")], 1)]
    );
    assert_eq!(
        metrics.points(ORDERS),
        [point(
            &[("order.status", "failed"), ("error.type", "interrupted")],
            1
        )]
    );
    assert_eq!(
        metrics.points(COMPENSATIONS),
        [point(&[("saga.compensation", "release")], 1)]
    );
}

#[tokio::test]
async fn an_undo_finished_by_the_sweep_counts_each_compensation_once_with_the_failure() {
    let _spans = CapturedSpans::start();
    let metrics = CapturedMetrics::start();
    let inventory_url = inventory_url().await;
    // Every charge is taken and its answer lost, so it is refunded; inventory cannot release
    // until the sweep runs: the undo is left half done, for the sweep to run again whole.
    let payment = Proxy::start(&payment_url().await, |method, path| {
        if method == Method::POST && path == "/payments" {
            Pass::Lost
        } else {
            Pass::Through
        }
    })
    .await;
    let inventory = Proxy::start(&inventory_url, |_, path| {
        if path.ends_with("/release") {
            Pass::Unavailable
        } else {
            Pass::Through
        }
    })
    .await;
    let store = Store::new(databases(&MIGRATIONS).await.remove(0));
    let counted = OrderMetrics::new(&metrics.meter());
    let saga = Saga::new(store.clone(), inventory.client(), payment.client())
        .with_metrics(counted.clone());
    let app = router(AppState {
        store: store.clone(),
        saga,
    });

    assert_eq!(
        place(&app, order(1, "4242424242424242")).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert!(
        metrics.points(COMPENSATIONS).is_empty() && metrics.points(ORDERS).is_empty(),
        "nothing counted while the order is open"
    );
    let sweep = Recovery::new(
        Saga::new(store, client(&inventory_url), payment.client()).with_metrics(counted),
    );
    sweep.recover_stalled_orders(Duration::ZERO).await;
    sweep.recover_stalled_orders(Duration::ZERO).await;

    // The refund was answered `refunded` by both undos: counted once.
    assert_eq!(
        metrics.points(COMPENSATIONS),
        [
            point(&[("saga.compensation", "refund")], 1),
            point(&[("saga.compensation", "release")], 1)
        ]
    );
    assert_eq!(
        metrics.points(ORDERS),
        [point(
            &[
                ("order.status", "failed"),
                ("error.type", "service_unavailable")
            ],
            1
        )]
    );
}

#[tokio::test]
async fn a_refund_that_finds_nothing_charged_is_not_counted() {
    let _spans = CapturedSpans::start();
    let metrics = CapturedMetrics::start();
    // Every charge is answered 503 without reaching payment: it may have been taken, so it is
    // refunded, and payment finds nothing to give back.
    let payment = Proxy::start(&payment_url().await, |method, path| {
        if method == Method::POST && path == "/payments" {
            Pass::Unavailable
        } else {
            Pass::Through
        }
    })
    .await;
    let app = orders(inventory().await, payment.client(), &metrics).await;

    assert_eq!(
        place(&app, order(1, "4242424242424242")).await,
        StatusCode::SERVICE_UNAVAILABLE
    );

    assert_eq!(
        metrics.points(COMPENSATIONS),
        [point(&[("saga.compensation", "release")], 1)]
    );
}

/// Renames the column the answers of idempotency keys are kept in, so that keeping one fails
/// while everything else works.
const HIDE_ANSWERS: Sql = Sql {
    operation: "ALTER",
    collection: "idempotency_keys",
    text: "ALTER TABLE idempotency_keys RENAME COLUMN response_body TO hidden_body",
};
const SHOW_ANSWERS: Sql = Sql {
    operation: "ALTER",
    collection: "idempotency_keys",
    text: "ALTER TABLE idempotency_keys RENAME COLUMN hidden_body TO response_body",
};

#[tokio::test]
async fn a_recovery_whose_answer_was_not_kept_is_counted_once_when_it_is() {
    let _spans = CapturedSpans::start();
    let metrics = CapturedMetrics::start();
    let inventory = inventory().await;
    let store = Store::new(databases(&MIGRATIONS).await.remove(0));
    let saga = Saga::new(store.clone(), inventory.clone(), nowhere())
        .with_metrics(OrderMetrics::new(&metrics.meter()));
    let sweep = Recovery::new(saga);
    // The service stopped right after the stock was reserved.
    create(&store, "o-1", Some(("k-1", "fp"))).await;
    reserve_mugs(&inventory, "o-1").await;
    let db = store.database();

    db.query(&HIDE_ANSWERS).execute().await.unwrap();
    sweep.recover_stalled_orders(Duration::ZERO).await;
    assert_eq!(
        store.get("o-1").await.unwrap().unwrap().status,
        OrderStatus::Failed
    );
    assert!(
        metrics.points(RECOVERIES).is_empty(),
        "no answer kept: not recovered yet"
    );
    db.query(&SHOW_ANSWERS).execute().await.unwrap();
    sweep.recover_stalled_orders(Duration::ZERO).await;
    sweep.recover_stalled_orders(Duration::ZERO).await;

    assert_eq!(
        metrics.points(RECOVERIES),
        [point(&[("order.status", "failed")], 1)]
    );
    assert_eq!(
        metrics.points(ORDERS),
        [point(
            &[("order.status", "failed"), ("error.type", "interrupted")],
            1
        )]
    );
}

fn point(attributes: &[(&str, &str)], value: i64) -> ordertrail_testkit::captured_metrics::Point {
    ordertrail_testkit::captured_metrics::Point {
        attributes: attributes
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        value,
    }
}
