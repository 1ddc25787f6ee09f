//! Checkouts sent through the order router to real inventory and payment services, with a
//! [`Proxy`] in front of one of them losing or holding answers, refusing connections or failing a
//! step.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use opentelemetry::trace::SpanKind;
use ordertrail_shared::api::{OrderStatus, Payment, PaymentStatus};
use ordertrail_shared::db::Sql;
use ordertrail_shared::faults::{Faults, Rules};
use ordertrail_shared::http::ServiceClient;
use ordertrail_testkit::{CapturedSpans, attribute, databases, json_body};
use serde_json::Value;
use tower::ServiceExt;

use super::proxy::{Pass, Proxy};
use super::{client, inventory, inventory_url, mug_stock, payment, payment_url, serve};
use crate::domain::Failure;
use crate::{AppState, MIGRATIONS, Recovery, Saga, Store, router};

const TWO_MUGS: &str = r#"{"customer_id":"c-1","items":[{"sku":"TRAIL-MUG","quantity":2}],"payment":{"card_number":"4242424242424242","expiry":"12/30","cvc":"123"}}"#;

/// The order service over a fresh database, calling `inventory` and `payment`.
struct OrderService {
    app: axum::Router,
    store: Store,
    sweep: Recovery,
}

/// An answer of the order service.
struct Answer {
    status: StatusCode,
    content_type: String,
    body: Value,
}

impl Answer {
    fn order_id(&self) -> &str {
        self.body["order_id"].as_str().expect("an order id")
    }
}

impl OrderService {
    async fn new(inventory: ServiceClient, payment: ServiceClient) -> Self {
        let store = Store::new(databases(&MIGRATIONS).await.remove(0));
        let saga = Saga::new(store.clone(), inventory, payment);
        let app = router(AppState {
            store: store.clone(),
            saga: saga.clone(),
        });
        let sweep = Recovery::new(saga);
        Self { app, store, sweep }
    }

    /// `POST /orders` of two mugs, with an optional `Idempotency-Key`.
    async fn place_order(&self, key: Option<&str>) -> Answer {
        let mut request = Request::post("/orders").header("content-type", "application/json");
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let response = self
            .app
            .clone()
            .oneshot(request.body(Body::from(TWO_MUGS)).unwrap())
            .await
            .unwrap();
        Answer {
            status: response.status(),
            content_type: response.headers()["content-type"]
                .to_str()
                .unwrap()
                .to_owned(),
            body: json_body(response).await,
        }
    }

    async fn status(&self, order_id: &str) -> OrderStatus {
        self.store.get(order_id).await.unwrap().unwrap().status
    }
}

/// The order's payment, as the payment service holds it.
async fn payment_of(payment: &ServiceClient, order_id: &str) -> PaymentStatus {
    let found: Payment = payment
        .get("/payments/{order_id}", &format!("/payments/{order_id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    found.status
}

fn is_charge(method: &Method, path: &str) -> bool {
    method == Method::POST && path == "/payments"
}

#[tokio::test]
async fn a_charge_answered_with_502_is_refunded_before_the_order_fails() {
    let _spans = CapturedSpans::start();
    let (inventory, payment_url) = (inventory().await, payment_url().await);
    // Every charge reaches payment and is taken; its answer is lost on the way back.
    let proxy = Proxy::start(&payment_url, |method, path| {
        if is_charge(method, path) {
            Pass::Lost
        } else {
            Pass::Through
        }
    })
    .await;
    let orders = OrderService::new(inventory.clone(), proxy.client()).await;
    let before = mug_stock(&inventory).await;

    let answer = orders.place_order(None).await;

    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.body
    );
    assert_eq!(answer.content_type, "application/problem+json");
    assert_eq!(answer.body["reason"], "service_unavailable");
    assert_eq!(answer.body["order_status"], "failed");
    let order_id = answer.order_id();
    assert_eq!(orders.status(order_id).await, OrderStatus::Failed);
    assert_eq!(
        payment_of(&client(&payment_url), order_id).await,
        PaymentStatus::Refunded,
        "the charge taken behind the 502 is refunded"
    );
    assert_eq!(
        mug_stock(&inventory).await,
        before,
        "the reservation is released"
    );
}

#[tokio::test]
async fn a_charge_answered_with_502_then_refused_is_still_refunded_once_payment_is_back() {
    let _spans = CapturedSpans::start();
    let (inventory, payment_url) = (inventory().await, payment_url().await);
    let payment = client(&payment_url);
    // The first charge is taken and its answer lost; then payment cannot be reached at all, so
    // the later attempts are refused: the charge may still have been taken.
    let mut charged = false;
    let proxy = Proxy::start(&payment_url, move |method, path| {
        if is_charge(method, path) && !charged {
            charged = true;
            Pass::LostThenRefuse
        } else {
            Pass::Through
        }
    })
    .await;
    let orders = OrderService::new(inventory.clone(), proxy.client()).await;
    let before = mug_stock(&inventory).await;

    let answer = orders.place_order(None).await;

    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.body
    );
    assert_eq!(answer.content_type, "application/problem+json");
    let order_id = answer.order_id().to_owned();
    // The refund could not be sent: the order stays open with its failure, the money and the
    // stock still held.
    assert_eq!(
        answer.body["order_status"], "reserved",
        "a charge answered 502 may have been taken, even if the next attempts were refused"
    );
    assert_eq!(orders.status(&order_id).await, OrderStatus::Reserved);
    assert_eq!(
        orders.store.failure(&order_id).await.unwrap(),
        Some(Failure::unavailable("payment"))
    );
    assert_eq!(
        payment_of(&payment, &order_id).await,
        PaymentStatus::Captured
    );
    assert_eq!(mug_stock(&inventory).await, before - 2);

    proxy.listen();
    orders.sweep.recover_stalled_orders(Duration::ZERO).await;

    assert_eq!(orders.status(&order_id).await, OrderStatus::Failed);
    assert_eq!(
        payment_of(&payment, &order_id).await,
        PaymentStatus::Refunded
    );
    assert_eq!(mug_stock(&inventory).await, before);
}

#[tokio::test]
async fn a_charge_that_timed_out_then_refused_is_still_refunded_once_payment_is_back() {
    let spans = CapturedSpans::start();
    let (inventory, payment_url) = (inventory().await, payment_url().await);
    let payment = client(&payment_url);
    // The first charge reaches payment and is taken, but its answer never comes back; from then
    // on payment cannot be reached at all, so the later attempts are refused: the charge may
    // still have been taken.
    let mut charged = false;
    let proxy = Proxy::start(&payment_url, move |method, path| {
        if is_charge(method, path) && !charged {
            charged = true;
            Pass::HeldThenRefuse
        } else {
            Pass::Through
        }
    })
    .await;
    // A short timeout keeps the test fast: the held charge times out after it.
    let orders = OrderService::new(
        inventory.clone(),
        ServiceClient::with_timeout(&proxy.url(), Duration::from_millis(400)).unwrap(),
    )
    .await;
    let before = mug_stock(&inventory).await;

    let answer = orders.place_order(None).await;

    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.body
    );
    assert_eq!(answer.content_type, "application/problem+json");
    assert_eq!(answer.body["reason"], "service_unavailable");
    let mut charges: Vec<_> = spans
        .spans()
        .into_iter()
        .filter(|s| s.name == "POST /payments" && s.span_kind == SpanKind::Client)
        .collect();
    charges.sort_by_key(|s| s.start_time);
    let errors: Vec<_> = charges.iter().map(|s| attribute(s, "error.type")).collect();
    assert_eq!(
        errors,
        [
            Some("timeout".to_owned()),
            Some("connect".to_owned()),
            Some("connect".to_owned())
        ],
        "the first charge timed out, the next two were refused"
    );
    let order_id = answer.order_id().to_owned();
    // The refund could not be sent: the order stays open with its failure, the money and the
    // stock still held.
    assert_eq!(
        answer.body["order_status"], "reserved",
        "a charge that timed out may have been taken, even if the next attempts were refused"
    );
    assert_eq!(orders.status(&order_id).await, OrderStatus::Reserved);
    assert_eq!(
        orders.store.failure(&order_id).await.unwrap(),
        Some(Failure::unavailable("payment"))
    );
    assert_eq!(
        payment_of(&payment, &order_id).await,
        PaymentStatus::Captured,
        "the charge behind the timeout was taken"
    );
    assert_eq!(mug_stock(&inventory).await, before - 2);

    proxy.listen();
    orders.sweep.recover_stalled_orders(Duration::ZERO).await;

    assert_eq!(orders.status(&order_id).await, OrderStatus::Failed);
    assert_eq!(
        payment_of(&payment, &order_id).await,
        PaymentStatus::Refunded
    );
    assert_eq!(mug_stock(&inventory).await, before);
}

#[tokio::test]
async fn a_202_is_never_kept_for_the_idempotency_key_and_the_sweep_keeps_the_confirmed_order() {
    let _spans = CapturedSpans::start();
    let (inventory_url, payment) = (inventory_url().await, payment().await);
    let commit_fails = Arc::new(AtomicBool::new(true));
    let proxy = Proxy::start(&inventory_url, {
        let commit_fails = commit_fails.clone();
        move |_, path| {
            if path.ends_with("/commit") && commit_fails.load(Ordering::SeqCst) {
                Pass::Unavailable
            } else {
                Pass::Through
            }
        }
    })
    .await;
    let orders = OrderService::new(proxy.client(), payment).await;

    let paid = orders.place_order(Some("k-1")).await;
    assert_eq!(paid.status, StatusCode::ACCEPTED, "{}", paid.body);
    assert_eq!(paid.body["status"], "paid");
    let order_id = paid.order_id();

    let retried = orders.place_order(Some("k-1")).await;
    assert_eq!(
        retried.status,
        StatusCode::CONFLICT,
        "a paid order's answer is not final: {}",
        retried.body
    );
    assert_eq!(retried.body["order_id"], order_id);

    commit_fails.store(false, Ordering::SeqCst);
    orders.sweep.recover_stalled_orders(Duration::ZERO).await;

    let replayed = orders.place_order(Some("k-1")).await;
    assert_eq!(replayed.status, StatusCode::CREATED, "{}", replayed.body);
    assert_eq!(replayed.body["order_id"], order_id);
    assert_eq!(replayed.body["status"], "confirmed");
    assert_eq!(orders.status(order_id).await, OrderStatus::Confirmed);
}

/// Takes the claim on the order whose stock is reserved, as another worker would once the
/// checkout's lease ran out.
const TAKE_RESERVED: Sql = Sql {
    operation: "UPDATE",
    collection: "orders",
    text: "UPDATE orders SET claimed_by = 'another' WHERE status = 'reserved'",
};

#[tokio::test]
async fn a_checkout_that_loses_its_claim_is_answered_409_checkout_unfinished_with_its_order() {
    let _spans = CapturedSpans::start();
    // Payment answers each charge 1.5 s late: another worker takes the order meanwhile.
    let slow: Rules = r#"[{"kind":"latency","route":"POST /payments","delay_ms":1500}]"#
        .parse()
        .unwrap();
    let db = databases(&ordertrail_payment::MIGRATIONS)
        .await
        .remove(0)
        .with_faults(Faults::new("payment", slow));
    let payment = serve(ordertrail_payment::router(ordertrail_payment::AppState {
        store: ordertrail_payment::Store::new(db),
    }))
    .await;
    let orders = OrderService::new(inventory().await, client(&payment)).await;

    let take_over = async {
        for _ in 0..500 {
            let taken = orders
                .store
                .database()
                .query(&TAKE_RESERVED)
                .execute()
                .await
                .unwrap();
            if taken == 1 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    };
    let (answer, taken) = tokio::join!(orders.place_order(Some("k-1")), take_over);

    assert!(taken, "the order was taken during the charge");
    assert_eq!(answer.status, StatusCode::CONFLICT, "{}", answer.body);
    assert_eq!(answer.content_type, "application/problem+json");
    assert_eq!(answer.body["type"], "/problems/checkout-unfinished");
    assert_eq!(answer.body["status"], 409);
    let order_id = answer.order_id();
    // The checkout wrote nothing after it lost the claim: the order is the new holder's.
    assert_eq!(orders.status(order_id).await, OrderStatus::Reserved);
    let retried = orders.place_order(Some("k-1")).await;
    assert_eq!(retried.status, StatusCode::CONFLICT, "{}", retried.body);
    assert_eq!(
        retried.body["order_id"], order_id,
        "the same order, in progress"
    );
}
