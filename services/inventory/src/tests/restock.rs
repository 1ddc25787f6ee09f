//! `POST /restock`: stock raised all or nothing, within bounds, and every refusal answered
//! with problem+json.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use ordertrail_shared::db::Sql;
use ordertrail_testkit::{CapturedSpans, databases};
use serde_json::Value;
use tower::ServiceExt;

use super::{line, stock};
use crate::{AppState, MAX_STOCK, MIGRATIONS, Store, router};

const SET_TEE_STOCK: Sql = Sql {
    operation: "UPDATE",
    collection: "products",
    text: "UPDATE products SET stock = $1 WHERE sku = 'TRAIL-TEE'",
};

#[tokio::test]
async fn restocking_raises_the_stock_of_every_line_and_returns_the_products() {
    let _spans = CapturedSpans::start();
    for db in databases(&MIGRATIONS).await {
        let store = Store::new(db);
        let mugs = stock(&store, "TRAIL-MUG").await;
        let lamps = stock(&store, "TRAIL-LAMP").await;

        let products = store
            .restock(&[line("TRAIL-MUG", 10), line("TRAIL-LAMP", 1000)])
            .await
            .unwrap();

        let skus: Vec<(&str, i64)> = products.iter().map(|p| (p.sku.as_str(), p.stock)).collect();
        assert_eq!(
            skus,
            [("TRAIL-LAMP", lamps + 1000), ("TRAIL-MUG", mugs + 10)]
        );
        assert_eq!(stock(&store, "TRAIL-MUG").await, mugs + 10);
        assert_eq!(stock(&store, "TRAIL-LAMP").await, lamps + 1000);
    }
}

#[tokio::test]
async fn a_restock_with_an_unknown_product_changes_nothing() {
    let _spans = CapturedSpans::start();
    for db in databases(&MIGRATIONS).await {
        let store = Store::new(db);
        let mugs = stock(&store, "TRAIL-MUG").await;

        let err = store
            .restock(&[line("TRAIL-MUG", 5), line("TRAIL-NOPE", 5)])
            .await
            .unwrap_err();

        assert_eq!(err.kind(), "unknown_product");
        assert_eq!(stock(&store, "TRAIL-MUG").await, mugs, "rolled back");
    }
}

#[tokio::test]
async fn a_restock_past_the_stock_limit_changes_nothing() {
    let _spans = CapturedSpans::start();
    for db in databases(&MIGRATIONS).await {
        db.query(&SET_TEE_STOCK)
            .bind(MAX_STOCK - 10)
            .execute()
            .await
            .unwrap();
        let store = Store::new(db);
        let caps = stock(&store, "TRAIL-CAP").await;

        store.restock(&[line("TRAIL-TEE", 10)]).await.unwrap();
        let err = store
            .restock(&[line("TRAIL-CAP", 1), line("TRAIL-TEE", 1)])
            .await
            .unwrap_err();

        assert_eq!(err.kind(), "invalid_request");
        assert_eq!(stock(&store, "TRAIL-TEE").await, MAX_STOCK);
        assert_eq!(stock(&store, "TRAIL-CAP").await, caps, "rolled back");
    }
}

async fn post_restock(body: &str) -> (StatusCode, String, Value) {
    let db = databases(&MIGRATIONS).await.remove(0);
    let app = router(AppState {
        store: Store::new(db),
    });
    let response = app
        .oneshot(
            Request::post("/restock")
                .header("content-type", "application/json")
                .body(Body::from(body.to_owned()))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        content_type,
        serde_json::from_slice(&bytes).unwrap(),
    )
}

#[tokio::test]
async fn the_restock_route_answers_the_products_as_they_are_now() {
    let spans = CapturedSpans::start();

    let (status, _, body) = post_restock(r#"{"items":[{"sku":"TRAIL-CAP","quantity":40}]}"#).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(body[0]["sku"], "TRAIL-CAP");
    assert_eq!(body[0]["stock"], 60 + 40);
    spans.named("inventory.restock");
}

#[tokio::test]
async fn the_restock_route_refuses_bad_input_with_problem_json() {
    let _spans = CapturedSpans::start();
    let refused = [
        (r#"{"items":[]}"#, StatusCode::UNPROCESSABLE_ENTITY),
        (
            r#"{"items":[{"sku":"TRAIL-CAP","quantity":0}]}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            r#"{"items":[{"sku":"TRAIL-CAP","quantity":-5}]}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            r#"{"items":[{"sku":"TRAIL-CAP","quantity":1001}]}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            r#"{"items":[{"sku":"TRAIL-CAP","quantity":1},{"sku":"TRAIL-CAP","quantity":1}]}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            r#"{"items":[{"sku":"TRAIL-NOPE","quantity":1}]}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            r#"{"items":[{"sku":"a b","quantity":1}]}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (r#"{"items":"#, StatusCode::BAD_REQUEST),
    ];
    for (body, expected) in refused {
        let (status, content_type, problem) = post_restock(body).await;
        assert_eq!(status, expected, "{body}: {problem}");
        assert_eq!(content_type, "application/problem+json", "{body}");
        assert_eq!(problem["status"], expected.as_u16(), "{body}");
        assert!(problem["trace_id"].is_string(), "{body}: {problem}");
    }
}
