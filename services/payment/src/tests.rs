//! Store tests on SQLite (and PostgreSQL when `ORDERTRAIL_TEST_POSTGRES_URL` is set), and
//! router tests with the in-memory span exporter.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use ordertrail_shared::faults::Faults;
use ordertrail_testkit::{CapturedSpans, attribute, databases, json_body};
use tower::ServiceExt;

use crate::{AppState, MIGRATIONS, Store, router};

fn charge(order_id: &str, card: &str) -> Request<Body> {
    let body = format!(
        r#"{{"order_id":"{order_id}","amount_cents":2900,"card":{{"card_number":"{card}","expiry":"12/30","cvc":"123"}}}}"#
    );
    Request::post("/payments")
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap()
}

#[tokio::test]
async fn a_second_charge_for_an_order_returns_the_first_payment() {
    let _spans = CapturedSpans::start();
    for db in databases(&MIGRATIONS).await {
        let app = router(AppState {
            store: Store::new(db),
        });
        let first = app
            .clone()
            .oneshot(charge("o-1", "4242424242424242"))
            .await
            .unwrap();
        assert_eq!(first.status(), StatusCode::CREATED);
        let first = json_body(first).await;
        let again = app
            .oneshot(charge("o-1", "4242424242424242"))
            .await
            .unwrap();
        assert_eq!(again.status(), StatusCode::OK);
        assert_eq!(json_body(again).await["payment_id"], first["payment_id"]);
        assert_eq!(
            first["card"],
            serde_json::json!({"brand": "visa", "last4": "4242"})
        );
    }
}

#[tokio::test]
async fn a_declined_card_is_402_with_the_reason_and_an_error_span() {
    let spans = CapturedSpans::start();
    let db = databases(&MIGRATIONS).await.remove(0);
    let app = router(AppState {
        store: Store::new(db),
    });

    let response = app
        .oneshot(charge("o-2", "4000000000009995"))
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::PAYMENT_REQUIRED);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem = json_body(response).await;
    assert_eq!(problem["reason"], "insufficient_funds");
    assert_eq!(problem["order_id"], "o-2");
    assert_eq!(problem["trace_id"].as_str().map(str::len), Some(32));
    let span = spans.named("payment.charge");
    assert_eq!(
        span.status,
        opentelemetry::trace::Status::error("payment declined: insufficient_funds")
    );
    assert!(span.events.iter().any(|e| e.name == "exception"));
    assert_eq!(
        attribute(&span, "payment.card.last4").as_deref(),
        Some("9995")
    );
    assert!(!spans.spans().iter().any(|s| {
        s.attributes
            .iter()
            .any(|kv| kv.value.to_string().contains("4000000000009995"))
    }));
}

#[tokio::test]
async fn a_card_number_failing_luhn_is_422_and_stores_nothing() {
    let _spans = CapturedSpans::start();
    let db = databases(&MIGRATIONS).await.remove(0);
    let store = Store::new(db);
    let app = router(AppState {
        store: store.clone(),
    });

    let response = app
        .oneshot(charge("o-3", "4242424242424241"))
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(store.get("o-3").await.is_err());
}

#[tokio::test]
async fn a_charge_arriving_after_its_refund_takes_no_money() {
    let _spans = CapturedSpans::start();
    for db in databases(&MIGRATIONS).await {
        let store = Store::new(db);
        let app = router(AppState {
            store: store.clone(),
        });

        let (refunded, _) = store.refund("o-late").await.unwrap();
        let late = app
            .oneshot(charge("o-late", "4242424242424242"))
            .await
            .unwrap();

        assert_eq!(
            refunded.status,
            ordertrail_shared::api::PaymentStatus::Refunded
        );
        assert_eq!(
            late.status(),
            StatusCode::OK,
            "the recorded refund is returned, nothing charged"
        );
        assert_eq!(json_body(late).await["status"], "refunded");
    }
}

#[tokio::test]
async fn a_provider_timeout_keeps_the_capture_answers_504_and_a_retry_gets_the_payment() {
    let spans = CapturedSpans::start();
    let rules = r#"[{"kind": "provider_timeout", "delay_ms": 10}]"#;
    let faults = Faults::new("payment", rules.parse().unwrap());
    let db = databases(&MIGRATIONS)
        .await
        .remove(0)
        .with_faults(faults.clone());
    let store = Store::new(db);
    let app = router(AppState {
        store: store.clone(),
    });

    let timed_out = app
        .clone()
        .oneshot(charge("o-t", "4242424242424242"))
        .await
        .unwrap();
    assert_eq!(timed_out.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        json_body(timed_out).await["title"],
        "payment provider timed out"
    );
    let taken = store.get("o-t").await.unwrap();
    assert_eq!(
        taken.status,
        ordertrail_shared::api::PaymentStatus::Captured
    );
    let span = spans.named("payment.charge");
    let flag = span
        .events
        .iter()
        .find(|e| e.name == "feature_flag.evaluation")
        .expect("a feature_flag.evaluation event on the charge span");
    let key = flag
        .attributes
        .iter()
        .find(|kv| kv.key.as_str() == "feature_flag.key")
        .map(|kv| kv.value.to_string());
    assert_eq!(key.as_deref(), Some("fault.provider_timeout"));

    faults.set(Default::default());
    let retried = app
        .oneshot(charge("o-t", "4242424242424242"))
        .await
        .unwrap();
    assert_eq!(
        retried.status(),
        StatusCode::OK,
        "the capture, taken before"
    );
    assert_eq!(json_body(retried).await["payment_id"], taken.payment_id);
}
