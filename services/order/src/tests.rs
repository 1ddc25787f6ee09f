//! Router tests with the in-memory span exporter here, and the helpers every test module
//! shares. `store` tests the database on SQLite (and PostgreSQL when
//! `ORDERTRAIL_TEST_POSTGRES_URL` is set); `recovery` runs the sweep against real inventory and
//! payment services on local ports; `checkout` sends orders through the router to those
//! services behind a fault-injecting `proxy`.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use ordertrail_shared::api::{OrderLine, OrderStatus, Product};
use ordertrail_shared::card::MaskedCard;
use ordertrail_shared::http::ServiceClient;
use ordertrail_testkit::{CapturedSpans, databases, json_body};
use serde_json::json;
use tower::ServiceExt;

use crate::store::{Claim, KeyClaim, NewOrder};
use crate::{AppState, MIGRATIONS, Saga, Store, router};

mod checkout;
mod claims;
mod metrics;
mod proxy;
mod recovery;
mod store;

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

/// Creates an order as a request would, its checkout holding its claim.
async fn create_claimed(store: &Store, order_id: &str, key: Option<(&str, &str)>) -> KeyClaim {
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

/// Creates an order as a request would, then lets its claim go, as when the process that
/// created it died and its lease ran out: the order is the sweep's to take.
async fn create(store: &Store, order_id: &str, key: Option<(&str, &str)>) -> KeyClaim {
    let created = create_claimed(store, order_id, key).await;
    if let KeyClaim::New(claim) = &created {
        store.release_claim(claim).await.unwrap();
    }
    created
}

/// The claim a new order's checkout holds.
fn held(created: KeyClaim) -> Claim {
    match created {
        KeyClaim::New(claim) => claim,
        other => panic!("a new order, not {other:?}"),
    }
}

/// A client of nothing: every call is refused.
fn nowhere() -> ServiceClient {
    ServiceClient::new("http://127.0.0.1:9").unwrap()
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
