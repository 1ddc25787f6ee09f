//! Store tests on SQLite (and PostgreSQL when `ORDERTRAIL_TEST_POSTGRES_URL` is set), router
//! tests with the in-memory span exporter, and recovery tests against real inventory and
//! payment services on local ports. `checkout` sends orders through the router to those
//! services behind a fault-injecting `proxy`.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use ordertrail_shared::api::{OrderLine, OrderStatus, Payment, PaymentStatus, PricedLine, Product};
use ordertrail_shared::card::MaskedCard;
use ordertrail_shared::http::ServiceClient;
use ordertrail_shared::testing::{CapturedSpans, databases, json_body};
use serde_json::json;
use tower::ServiceExt;

use crate::saga::Failure;
use crate::store::{KeyClaim, NewOrder};
use crate::{AppState, MIGRATIONS, Saga, Store, router};

mod checkout;
mod proxy;

fn visa() -> MaskedCard {
    MaskedCard {
        brand: "visa".into(),
        last4: "4242".into(),
    }
}

fn mugs(quantity: i64) -> Vec<OrderLine> {
    vec![OrderLine {
        sku: "TRAIL-MUG".into(),
        quantity,
    }]
}

async fn create(store: &Store, order_id: &str, key: Option<(&str, &str)>) -> KeyClaim {
    let (card, lines) = (visa(), mugs(2));
    let order = NewOrder {
        order_id,
        customer_id: "c-1",
        lines: &lines,
        card: &card,
        trace_id: None,
    };
    store.create(&order, key).await.unwrap()
}

/// A client of nothing: every call is refused.
fn nowhere() -> ServiceClient {
    ServiceClient::new("http://127.0.0.1:9").unwrap()
}

#[tokio::test]
async fn an_idempotency_key_is_new_then_in_progress_then_replayed_and_never_reused() {
    let _spans = CapturedSpans::start();
    for db in databases(&MIGRATIONS).await {
        let store = Store::new(db);
        assert!(matches!(
            create(&store, "o-1", Some(("k", "fp-1"))).await,
            KeyClaim::New
        ));
        let again = create(&store, "o-2", Some(("k", "fp-1"))).await;
        assert!(
            matches!(again, KeyClaim::InProgress { ref order_id } if order_id == "o-1"),
            "{again:?}"
        );
        assert!(
            store.get("o-2").await.unwrap().is_none(),
            "a claimed key creates no second order"
        );

        store
            .save_response("o-1", 201, r#"{"order_id":"o-1"}"#)
            .await
            .unwrap();
        store.save_response("o-1", 500, "later").await.unwrap();
        match create(&store, "o-3", Some(("k", "fp-1"))).await {
            KeyClaim::Replay { status, body } => {
                assert_eq!((status, body.as_str()), (201, r#"{"order_id":"o-1"}"#))
            }
            other => panic!("expected the first answer, got {other:?}"),
        }
        assert!(matches!(
            create(&store, "o-4", Some(("k", "fp-2"))).await,
            KeyClaim::Mismatch
        ));
    }
}

#[tokio::test]
async fn an_order_keeps_its_prices_and_its_recorded_failure() {
    let _spans = CapturedSpans::start();
    for db in databases(&MIGRATIONS).await {
        let store = Store::new(db);
        create(&store, "o-1", None).await;
        assert_eq!(store.stalled_orders(Duration::ZERO).await.unwrap(), ["o-1"]);
        assert!(
            store
                .stalled_orders(Duration::from_secs(60))
                .await
                .unwrap()
                .is_empty(),
            "not stalled yet"
        );

        let priced = [PricedLine {
            sku: "TRAIL-MUG".into(),
            quantity: 2,
            unit_price_cents: 1450,
        }];
        store.set_reserved("o-1", &priced, 2900).await.unwrap();
        let order = store.get("o-1").await.unwrap().unwrap();
        assert_eq!(
            (order.status, order.total_cents, order.items),
            (OrderStatus::Reserved, 2900, priced.to_vec())
        );
        assert_eq!(order.card, Some(visa()));

        assert_eq!(store.failure("o-1").await.unwrap(), None);
        store
            .set_failure("o-1", &Failure::declined("insufficient_funds"))
            .await
            .unwrap();
        assert_eq!(
            store.failure("o-1").await.unwrap(),
            Some(Failure::declined("insufficient_funds"))
        );
        store
            .set_status("o-1", OrderStatus::Failed, None)
            .await
            .unwrap();
        let order = store.get("o-1").await.unwrap().unwrap();
        assert_eq!(
            order.failure_reason.as_deref(),
            Some("payment declined: insufficient_funds")
        );
        assert!(
            store
                .stalled_orders(Duration::ZERO)
                .await
                .unwrap()
                .is_empty()
        );
    }
}

/// The order service with upstreams that refuse every connection.
async fn app() -> (axum::Router, Store) {
    let store = Store::new(databases(&MIGRATIONS).await.remove(0));
    let saga = Saga::new(store.clone(), nowhere(), nowhere());
    (
        router(AppState {
            store: store.clone(),
            saga,
        }),
        store,
    )
}

#[tokio::test]
async fn an_unknown_order_is_404_problem_json_with_the_trace_id() {
    let _spans = CapturedSpans::start();
    let (app, _) = app().await;
    let response = app
        .oneshot(Request::get("/orders/nope").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert_eq!(
        json_body(response).await["trace_id"].as_str().map(str::len),
        Some(32)
    );
}

#[tokio::test]
async fn with_inventory_refusing_connections_the_order_fails_503_and_the_checkout_span_is_an_error()
{
    let spans = CapturedSpans::start();
    let (app, store) = app().await;
    let body = r#"{"customer_id":"c-1","items":[{"sku":"TRAIL-MUG","quantity":1}],"payment":{"card_number":"4242424242424242","expiry":"12/30","cvc":"123"}}"#;

    let response = app
        .oneshot(
            Request::post("/orders")
                .header("content-type", "application/json")
                .body(Body::from(body))
                .unwrap(),
        )
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let problem = json_body(response).await;
    assert_eq!(problem["reason"], "service_unavailable");
    // No connection was made, so nothing was reserved: nothing to release, the order is failed.
    let order = store
        .get(problem["order_id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(order.status, OrderStatus::Failed);
    let checkout = spans.named("checkout");
    assert!(matches!(
        checkout.status,
        opentelemetry::trace::Status::Error { .. }
    ));
    assert!(checkout.events.iter().any(|e| e.name == "exception"));
    assert!(
        spans
            .spans()
            .iter()
            .all(|s| s.name != "POST /reservations/{order_id}/release")
    );
}

/// A real service on a free local port; its base URL.
async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn client(url: &str) -> ServiceClient {
    ServiceClient::new(url).unwrap()
}

/// A real inventory service with a fresh database; its base URL.
async fn inventory_url() -> String {
    let db = databases(&ordertrail_inventory::MIGRATIONS).await.remove(0);
    let store = ordertrail_inventory::Store::new(db);
    serve(ordertrail_inventory::router(
        ordertrail_inventory::AppState { store },
    ))
    .await
}

/// A real payment service with a fresh database; its base URL.
async fn payment_url() -> String {
    let db = databases(&ordertrail_payment::MIGRATIONS).await.remove(0);
    let store = ordertrail_payment::Store::new(db);
    serve(ordertrail_payment::router(ordertrail_payment::AppState {
        store,
    }))
    .await
}

async fn inventory() -> ServiceClient {
    client(&inventory_url().await)
}

async fn payment() -> ServiceClient {
    client(&payment_url().await)
}

async fn mug_stock(inventory: &ServiceClient) -> i64 {
    let products: Vec<Product> = inventory
        .get("/products", "/products")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    products
        .iter()
        .find(|p| p.sku == "TRAIL-MUG")
        .unwrap()
        .stock
}

async fn reserve_mugs(inventory: &ServiceClient, order_id: &str) {
    let reserve = json!({"order_id": order_id, "items": mugs(2)});
    let response = inventory
        .post("/reservations", "/reservations")
        .json(&reserve)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
}

#[tokio::test]
async fn an_order_stalled_before_payment_is_released_and_failed_by_the_sweep() {
    let _spans = CapturedSpans::start();
    let inventory = inventory().await;
    let store = Store::new(databases(&MIGRATIONS).await.remove(0));
    let saga = Saga::new(store.clone(), inventory.clone(), nowhere());
    let before = mug_stock(&inventory).await;
    // The service stopped right after the stock was reserved.
    create(&store, "o-9", Some(("k-9", "fp"))).await;
    reserve_mugs(&inventory, "o-9").await;

    saga.recover_stalled_orders(Duration::ZERO).await;

    let order = store.get("o-9").await.unwrap().unwrap();
    assert_eq!(order.status, OrderStatus::Failed);
    assert_eq!(
        order.failure_reason.as_deref(),
        Some("checkout interrupted before it finished")
    );
    assert_eq!(
        mug_stock(&inventory).await,
        before,
        "the reservation was released"
    );
    match create(&store, "o-10", Some(("k-9", "fp"))).await {
        KeyClaim::Replay { status, body } => {
            assert_eq!(status, 503);
            assert!(
                body.contains("o-9") && body.contains("interrupted"),
                "{body}"
            );
        }
        other => panic!("a retry with the key gets the recovered answer, not {other:?}"),
    }
}

#[tokio::test]
async fn a_charge_that_may_have_been_taken_is_refunded_by_the_sweep_before_the_order_fails() {
    let _spans = CapturedSpans::start();
    let (inventory, payment) = (inventory().await, payment().await);
    let store = Store::new(databases(&MIGRATIONS).await.remove(0));
    let saga = Saga::new(store.clone(), inventory.clone(), payment.clone());
    let before = mug_stock(&inventory).await;
    // Reserved and charged, but the charge's answer never came back before the service stopped.
    create(&store, "o-7", None).await;
    reserve_mugs(&inventory, "o-7").await;
    store.set_reserved("o-7", &[], 2900).await.unwrap();
    let charge = json!({"order_id": "o-7", "amount_cents": 2900, "card": {"card_number": "4242424242424242", "expiry": "12/30", "cvc": "123"}});
    assert_eq!(
        payment
            .post("/payments", "/payments")
            .json(&charge)
            .send()
            .await
            .unwrap()
            .status(),
        201
    );

    saga.recover_stalled_orders(Duration::ZERO).await;

    assert_eq!(
        store.get("o-7").await.unwrap().unwrap().status,
        OrderStatus::Failed
    );
    let refunded: Payment = payment
        .get("/payments/{order_id}", "/payments/o-7")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(refunded.status, PaymentStatus::Refunded);
    assert_eq!(mug_stock(&inventory).await, before);
}

#[tokio::test]
async fn a_paid_order_stays_paid_while_inventory_is_down_and_the_sweep_confirms_it() {
    let _spans = CapturedSpans::start();
    let inventory = inventory().await;
    let store = Store::new(databases(&MIGRATIONS).await.remove(0));
    create(&store, "o-8", None).await;
    reserve_mugs(&inventory, "o-8").await;
    store
        .set_status("o-8", OrderStatus::Paid, None)
        .await
        .unwrap();

    Saga::new(store.clone(), nowhere(), nowhere())
        .recover_stalled_orders(Duration::ZERO)
        .await;
    assert_eq!(
        store.get("o-8").await.unwrap().unwrap().status,
        OrderStatus::Paid,
        "never failed while paid"
    );

    Saga::new(store.clone(), inventory, nowhere())
        .recover_stalled_orders(Duration::ZERO)
        .await;
    assert_eq!(
        store.get("o-8").await.unwrap().unwrap().status,
        OrderStatus::Confirmed
    );
}

#[tokio::test]
async fn a_finished_order_whose_answer_was_not_kept_gets_it_from_the_sweep() {
    let _spans = CapturedSpans::start();
    let store = Store::new(databases(&MIGRATIONS).await.remove(0));
    // The process stopped after confirming the order and before keeping the key's answer.
    create(&store, "o-5", Some(("k-5", "fp"))).await;
    store
        .set_status("o-5", OrderStatus::Confirmed, None)
        .await
        .unwrap();

    Saga::new(store.clone(), nowhere(), nowhere())
        .recover_stalled_orders(Duration::ZERO)
        .await;

    match create(&store, "o-6", Some(("k-5", "fp"))).await {
        KeyClaim::Replay { status, body } => {
            assert_eq!(status, 201);
            assert!(body.contains("\"status\":\"confirmed\""), "{body}");
        }
        other => panic!("the retry gets the confirmed order, not {other:?}"),
    }
    assert!(
        store
            .stalled_orders(Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );
}
