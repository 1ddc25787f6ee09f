//! Store tests on SQLite (and PostgreSQL when `ORDERTRAIL_TEST_POSTGRES_URL` is set), and
//! router tests with the in-memory span exporter.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use ordertrail_shared::api::{OrderLine, OrderStatus, PricedLine};
use ordertrail_shared::card::MaskedCard;
use ordertrail_shared::http::ServiceClient;
use ordertrail_shared::testing::{CapturedSpans, databases};
use tower::ServiceExt;

use crate::store::KeyClaim;
use crate::{AppState, MIGRATIONS, Saga, Store, router};

fn visa() -> MaskedCard {
    MaskedCard {
        brand: "visa".into(),
        last4: "4242".into(),
    }
}

#[tokio::test]
async fn an_idempotency_key_is_new_then_in_progress_then_replayed_and_never_reused() {
    let _spans = CapturedSpans::start();
    for db in databases(&MIGRATIONS).await {
        let store = Store::new(db);
        assert!(matches!(
            store.claim_key("k", "fp-1", "o-1").await.unwrap(),
            KeyClaim::New
        ));
        assert!(
            matches!(store.claim_key("k", "fp-1", "o-2").await.unwrap(), KeyClaim::InProgress { order_id } if order_id == "o-1")
        );
        store
            .save_response("o-1", 201, r#"{"order_id":"o-1"}"#)
            .await
            .unwrap();
        store.save_response("o-1", 500, "later").await.unwrap();
        match store.claim_key("k", "fp-1", "o-3").await.unwrap() {
            KeyClaim::Replay { status, body } => {
                assert_eq!((status, body.as_str()), (201, r#"{"order_id":"o-1"}"#))
            }
            other => panic!("expected a replay, got {other:?}"),
        }
        assert!(matches!(
            store.claim_key("k", "fp-2", "o-4").await.unwrap(),
            KeyClaim::Mismatch
        ));
    }
}

#[tokio::test]
async fn an_order_moves_from_pending_through_reserved_to_a_terminal_state() {
    let _spans = CapturedSpans::start();
    for db in databases(&MIGRATIONS).await {
        let store = Store::new(db);
        let lines = [OrderLine {
            sku: "TRAIL-MUG".into(),
            quantity: 2,
        }];
        store
            .create(
                "o-1",
                "c-1",
                &lines,
                &visa(),
                Some("4bf92f3577b34da6a3ce929d0e0e4736"),
            )
            .await
            .unwrap();
        assert_eq!(
            store.open_orders(std::time::Duration::ZERO).await.unwrap(),
            ["o-1"]
        );
        assert!(
            store
                .open_orders(std::time::Duration::from_secs(60))
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

        store
            .set_status(
                "o-1",
                OrderStatus::Failed,
                Some("payment declined: card_declined"),
            )
            .await
            .unwrap();
        let order = store.get("o-1").await.unwrap().unwrap();
        assert_eq!(
            order.failure_reason.as_deref(),
            Some("payment declined: card_declined")
        );
        assert!(
            store
                .open_orders(std::time::Duration::ZERO)
                .await
                .unwrap()
                .is_empty()
        );
    }
}

/// The order service with upstreams that listen nowhere.
async fn app() -> (axum::Router, Store) {
    let store = Store::new(databases(&MIGRATIONS).await.remove(0));
    let nowhere = ServiceClient::new("http://127.0.0.1:9").unwrap();
    let saga = Saga::new(store.clone(), nowhere.clone(), nowhere);
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
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap();
    let problem: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(problem["trace_id"].as_str().map(str::len), Some(32));
}

#[tokio::test]
async fn with_inventory_unreachable_the_order_fails_503_and_the_checkout_span_is_an_error() {
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
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap();
    let problem: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let order = store
        .get(problem["order_id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    // The release could not be sent either, so the order stays open for the next start.
    assert_eq!(order.status, OrderStatus::Pending);
    let checkout = spans.named("checkout");
    assert!(matches!(
        checkout.status,
        opentelemetry::trace::Status::Error { .. }
    ));
    assert!(checkout.events.iter().any(|e| e.name == "exception"));
}

/// A real inventory service on a free local port, and a client of it.
async fn inventory() -> ServiceClient {
    let db = databases(&ordertrail_inventory::MIGRATIONS).await.remove(0);
    let app = ordertrail_inventory::router(ordertrail_inventory::AppState {
        store: ordertrail_inventory::Store::new(db),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    ServiceClient::new(&url).unwrap()
}

async fn mug_stock(inventory: &ServiceClient) -> i64 {
    let products: Vec<ordertrail_shared::api::Product> = inventory
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

#[tokio::test]
async fn a_stalled_order_is_released_and_failed_by_the_recovery_sweep() {
    let _spans = CapturedSpans::start();
    let inventory = inventory().await;
    let store = Store::new(databases(&MIGRATIONS).await.remove(0));
    let saga = Saga::new(
        store.clone(),
        inventory.clone(),
        ServiceClient::new("http://127.0.0.1:9").unwrap(),
    );
    let before = mug_stock(&inventory).await;
    // An order that crashed right after its stock was reserved.
    let lines = [OrderLine {
        sku: "TRAIL-MUG".into(),
        quantity: 2,
    }];
    assert!(matches!(
        store.claim_key("k-9", "fp", "o-9").await.unwrap(),
        KeyClaim::New
    ));
    store
        .create("o-9", "c-1", &lines, &visa(), None)
        .await
        .unwrap();
    let reserve = serde_json::json!({"order_id": "o-9", "items": lines});
    assert_eq!(
        inventory
            .post("/reservations", "/reservations")
            .json(&reserve)
            .send()
            .await
            .unwrap()
            .status(),
        201
    );
    assert_eq!(mug_stock(&inventory).await, before - 2);

    saga.recover_stalled_orders(std::time::Duration::ZERO).await;

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
    match store.claim_key("k-9", "fp", "o-10").await.unwrap() {
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
