//! Store tests on SQLite (and PostgreSQL when `ORDERTRAIL_TEST_POSTGRES_URL` is set), and
//! router tests with the in-memory span exporter.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use ordertrail_shared::api::{OrderLine, ReservationStatus};
use ordertrail_testkit::{CapturedSpans, attribute, databases};
use tower::ServiceExt;

use crate::{AppState, MIGRATIONS, Store, router};

mod concurrency;
mod restock;

fn line(sku: &str, quantity: i64) -> OrderLine {
    OrderLine {
        sku: sku.into(),
        quantity,
    }
}

async fn stock(store: &Store, sku: &str) -> i64 {
    store
        .products()
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.sku == sku)
        .unwrap()
        .stock
}

#[tokio::test]
async fn releasing_a_reservation_puts_the_stock_back() {
    let _spans = CapturedSpans::start();
    for db in databases(&MIGRATIONS).await {
        let store = Store::new(db);
        let before = stock(&store, "TRAIL-MUG").await;

        let (reservation, created) = store.reserve("o-1", &[line("TRAIL-MUG", 3)]).await.unwrap();
        assert!(created);
        assert_eq!(reservation.total_cents, 3 * 1450);
        assert_eq!(stock(&store, "TRAIL-MUG").await, before - 3);

        assert_eq!(
            store.release("o-1").await.unwrap().status,
            ReservationStatus::Released
        );
        assert_eq!(stock(&store, "TRAIL-MUG").await, before);
        store.release("o-1").await.unwrap();
        assert_eq!(
            stock(&store, "TRAIL-MUG").await,
            before,
            "a second release gives nothing back twice"
        );
        assert!(
            store.commit("o-1").await.is_err(),
            "a released reservation cannot be committed"
        );
    }
}

#[tokio::test]
async fn reserving_twice_for_one_order_holds_the_stock_once() {
    let _spans = CapturedSpans::start();
    for db in databases(&MIGRATIONS).await {
        let store = Store::new(db);
        let before = stock(&store, "TRAIL-TEE").await;
        store.reserve("o-2", &[line("TRAIL-TEE", 2)]).await.unwrap();
        let (again, created) = store.reserve("o-2", &[line("TRAIL-TEE", 2)]).await.unwrap();
        assert!(!created);
        assert_eq!(again.items.len(), 1);
        assert_eq!(stock(&store, "TRAIL-TEE").await, before - 2);
    }
}

#[tokio::test]
async fn a_reservation_beyond_the_stock_takes_nothing() {
    let _spans = CapturedSpans::start();
    for db in databases(&MIGRATIONS).await {
        let store = Store::new(db);
        let mugs = stock(&store, "TRAIL-MUG").await;
        let maps = stock(&store, "TRAIL-MAP").await;
        let err = store
            .reserve("o-3", &[line("TRAIL-MUG", 1), line("TRAIL-MAP", maps + 1)])
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "out_of_stock");
        assert_eq!(
            stock(&store, "TRAIL-MUG").await,
            mugs,
            "the first line was rolled back"
        );
        assert!(
            store.reservation("o-3").await.is_err(),
            "no reservation remains"
        );
    }
}

#[tokio::test]
async fn the_products_route_continues_the_callers_trace_over_a_database_span() {
    let spans = CapturedSpans::start();
    let db = databases(&MIGRATIONS).await.remove(0);
    let app = router(AppState {
        store: Store::new(db),
    });

    let response = app
        .oneshot(
            Request::get("/products")
                .header(
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                )
                .header("baggage", "customer.id=c-7")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["traceresponse"]
            .to_str()
            .unwrap()
            .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-")
    );
    let server = spans.named("GET /products");
    assert_eq!(server.parent_span_id.to_string(), "00f067aa0ba902b7");
    assert_eq!(
        attribute(&server, "http.route").as_deref(),
        Some("/products")
    );
    assert_eq!(
        attribute(&server, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(attribute(&server, "customer.id").as_deref(), Some("c-7"));
    let select = spans.named("SELECT products");
    assert_eq!(select.parent_span_id, server.span_context.span_id());
    assert_eq!(
        attribute(&select, "db.system.name").as_deref(),
        Some("sqlite")
    );
    assert_eq!(
        attribute(&select, "db.query.text").as_deref(),
        Some("SELECT sku, name, price_cents, stock FROM products ORDER BY sku")
    );
}

#[tokio::test]
async fn a_request_for_more_than_the_stock_is_409_problem_json() {
    let _spans = CapturedSpans::start();
    let db = databases(&MIGRATIONS).await.remove(0);
    let app = router(AppState {
        store: Store::new(db),
    });
    let response = app
        .oneshot(
            Request::post("/reservations")
                .header("content-type", "application/json")
                .body(Body::from(
                    r#"{"order_id":"o-5","items":[{"sku":"TRAIL-MAP","quantity":99}]}"#,
                ))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
}

#[tokio::test]
async fn a_reserve_arriving_after_its_release_takes_no_stock() {
    let _spans = CapturedSpans::start();
    for db in databases(&MIGRATIONS).await {
        let store = Store::new(db);
        let before = stock(&store, "TRAIL-CAP").await;

        let released = store.release("o-late").await.unwrap();
        let (late, created) = store
            .reserve("o-late", &[line("TRAIL-CAP", 2)])
            .await
            .unwrap();

        assert_eq!(released.status, ReservationStatus::Released);
        assert!(!created);
        assert_eq!(late.status, ReservationStatus::Released);
        assert_eq!(stock(&store, "TRAIL-CAP").await, before);
    }
}
