//! The business instruments, counted by checkouts through the router to real inventory and
//! payment services, and by the sweep, on a meter of each test's own.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use ordertrail_shared::api::OrderStatus;
use ordertrail_shared::db::Sql;
use ordertrail_shared::faults::{Faults, Rules};
use ordertrail_shared::http::ServiceClient;
use ordertrail_testkit::{CapturedMetrics, CapturedSpans, databases};
use tower::ServiceExt;
use tracing::Instrument;

use super::proxy::{Pass, Proxy};
use super::{
    client, create, create_claimed, held, inventory, inventory_url, nowhere, payment, payment_url,
    reserve_mugs,
};
use crate::claim::{Stopped, hold};
use crate::metrics::OrderMetrics;
use crate::store::KeyClaim;
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

    assert_refunded_and_released_once(&metrics);
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
    assert_refunded_and_released_once(&metrics);
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

/// One failed order (`service_unavailable`), undone by one refund and one release.
fn assert_refunded_and_released_once(metrics: &CapturedMetrics) {
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

fn point(attributes: &[(&str, &str)], value: i64) -> ordertrail_testkit::captured_metrics::Point {
    ordertrail_testkit::captured_metrics::Point {
        attributes: attributes
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        value,
    }
}

const ABANDONED: &str = "ordertrail.saga.abandoned";

/// Waits, at most ten seconds, until `done` holds; whether it did.
async fn eventually(mut done: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// How many audit events `action` the finished spans hold.
fn audited(spans: &CapturedSpans, action: &str) -> usize {
    spans
        .spans()
        .iter()
        .flat_map(|span| span.events.iter())
        .filter(|event| {
            event
                .attributes
                .iter()
                .any(|kv| kv.key.as_str() == "event.action" && kv.value.as_str() == action)
        })
        .count()
}

/// Locks the row of `o-1`, changing nothing: every write of it waits behind the transaction
/// (on SQLite, for its one connection), renewals of its claim too.
const LOCK_ORDER: Sql = Sql {
    operation: "UPDATE",
    collection: "orders",
    text: "UPDATE orders SET claimed_by = claimed_by WHERE order_id = 'o-1'",
};

#[tokio::test]
async fn a_confirmation_in_flight_when_its_holder_gives_up_is_counted_and_audited_once_written() {
    let spans = CapturedSpans::start();
    let metrics = CapturedMetrics::start();
    // Seconds long, so that only the lock below, not a loaded machine, makes the holder give up.
    let lease = Duration::from_secs(3);
    let mut confirmed = 0;
    for db in databases(&MIGRATIONS).await {
        confirmed += 1;
        let inventory = inventory().await;
        let store = Store::new(db).with_lease(lease);
        let saga = Saga::new(store.clone(), inventory.clone(), nowhere())
            .with_metrics(OrderMetrics::new(&metrics.meter()));
        let claim = held(create_claimed(&store, "o-1", None).await);
        reserve_mugs(&inventory, "o-1").await;
        store
            .set_status(&claim, OrderStatus::Paid, None)
            .await
            .unwrap();
        let mut lock = store.database().begin().await.unwrap();
        lock.query(&LOCK_ORDER).execute().await.unwrap();

        // The stock is committed, and the write that confirms the order waits on the lock; so
        // do the renewals, and the holder gives up its work two thirds of a lease in, while
        // that write is in flight (on PostgreSQL, sent: it commits once the lock goes).
        let holding = tokio::spawn({
            let (saga, claim) = (saga.clone(), claim.clone());
            async move {
                let work = saga
                    .confirm(&claim, 2900)
                    .instrument(tracing::info_span!("confirm"));
                hold(&saga, &claim, work).await
            }
        });
        assert!(
            eventually(
                || metrics.sum(ABANDONED, &[("error.type", "claim_lost")]) == Some(confirmed)
            )
            .await,
            "the holder gave up"
        );
        lock.rollback().await.unwrap();
        let held = holding.await.unwrap();

        assert!(matches!(held, Err(Stopped::ClaimLost)), "{held:?}");
        assert!(
            eventually(|| metrics.sum(ORDERS, &[("order.status", "confirmed")]) == Some(confirmed))
                .await,
            "the confirmation is counted: {:?}",
            metrics.points(ORDERS)
        );
        assert_eq!(
            store.get("o-1").await.unwrap().unwrap().status,
            OrderStatus::Confirmed,
            "the write queued first, before the release of the claim, and took effect"
        );
    }
    assert_eq!(metrics.sum(REVENUE, &[]), Some(2900 * confirmed));
    let events = usize::try_from(confirmed).unwrap();
    assert!(
        eventually(|| audited(&spans, "order-confirmed") == events).await,
        "one order-confirmed audit event per confirmed order, got {}",
        audited(&spans, "order-confirmed")
    );
}

/// The claim on `o-1` runs out, as when its holder stopped for longer than a lease.
const RUN_OUT: Sql = Sql {
    operation: "UPDATE",
    collection: "orders",
    text: "UPDATE orders SET claimed_by = NULL, claimed_until = NULL WHERE order_id = 'o-1'",
};

#[tokio::test]
async fn a_recovery_that_lost_its_claim_before_keeping_the_answer_leaves_the_count_to_the_next() {
    let _spans = CapturedSpans::start();
    let metrics = CapturedMetrics::start();
    let mut recovered = 0;
    for db in databases(&MIGRATIONS).await {
        recovered += 1;
        let inventory = inventory().await;
        let store = Store::new(db.clone());
        // The service stopped with the order paid, its stock not committed.
        let checkout = held(create_claimed(&store, "o-1", Some(("k-1", "fp"))).await);
        reserve_mugs(&inventory, "o-1").await;
        store
            .set_status(&checkout, OrderStatus::Paid, None)
            .await
            .unwrap();
        store.release_claim(&checkout).await.unwrap();
        // The first sweep keeps answers two seconds late: its claim runs out meanwhile, and a
        // second sweep takes the order.
        let late: Rules = r#"[{"kind":"slow_query","table":"idempotency_keys","operation":"UPDATE","delay_ms":2000}]"#
            .parse()
            .unwrap();
        let slow = Store::new(db.with_faults(Faults::new("order", late)));
        let counted = OrderMetrics::new(&metrics.meter());
        let first = Recovery::new(
            Saga::new(slow, inventory.clone(), nowhere()).with_metrics(counted.clone()),
        );
        let second =
            Recovery::new(Saga::new(store.clone(), inventory, nowhere()).with_metrics(counted));

        let sweeping =
            tokio::spawn(async move { first.recover_stalled_orders(Duration::ZERO).await });
        let mut confirmed = false;
        for _ in 0..500 {
            confirmed = store.get("o-1").await.unwrap().unwrap().status == OrderStatus::Confirmed;
            if confirmed {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(confirmed, "the first sweep confirmed the order");
        store.database().query(&RUN_OUT).execute().await.unwrap();
        second.recover_stalled_orders(Duration::ZERO).await;
        sweeping.await.unwrap();

        match create(&store, "o-2", Some(("k-1", "fp"))).await {
            KeyClaim::Replay { status, .. } => assert_eq!(status, 201),
            other => panic!("the second sweep kept the answer, not {other:?}"),
        }
    }
    assert_eq!(
        metrics.points(RECOVERIES),
        [point(&[("order.status", "confirmed")], recovered)],
        "counted by the sweep that kept the answer only"
    );
    assert_eq!(
        metrics.points(ORDERS),
        [point(&[("order.status", "confirmed")], recovered)],
        "confirmed once, by the first sweep"
    );
}
