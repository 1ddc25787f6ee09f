//! Orders that fail: every one ends `failed`, compensated, with the failure on its trace.

use crate::support::{
    DECLINED_CARD, GOOD_CARD, TestStack, assert_every_span_carries_the_customer, named, names,
    order,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_card_is_402_and_releases_the_reservation() {
    let mut stack = TestStack::start().await;
    let stock_before = stack.stock("TRAIL-CAP").await;

    let answer = stack
        .post_order(&order("TRAIL-CAP", 2, DECLINED_CARD), None, None)
        .await;

    assert_eq!(answer.status, 402, "{}", answer.body);
    assert_eq!(answer.body["reason"], "card_declined");
    assert_eq!(answer.body["trace_id"], answer.trace_id().as_str());
    let order_id = answer.body["order_id"]
        .as_str()
        .expect("the problem names the order");
    assert_eq!(
        stack.stock("TRAIL-CAP").await,
        stock_before,
        "the stock is back"
    );
    let stored = stack.get(&format!("/api/orders/{order_id}")).await;
    assert_eq!(stored.body["status"], "failed");
    assert_eq!(
        stack
            .get_from("payment", &format!("/payments/{order_id}"))
            .await
            .body["status"],
        "declined"
    );

    let spans = stack
        .trace(
            &answer.trace_id(),
            &["payment.charge", "inventory.release", "checkout"],
        )
        .await;
    let charge = named(&spans, "payment.charge");
    assert!(
        charge.is_error && charge.events.iter().any(|e| e == "exception"),
        "{charge:#?}"
    );
    assert!(named(&spans, "checkout").is_error);
    assert!(!named(&spans, "inventory.release").is_error);
    assert!(
        !spans.iter().any(|s| s.name == "inventory.commit"),
        "{:#?}",
        names(&spans)
    );
    assert_every_span_carries_the_customer(&spans, "c-42");
    // The failure is an audit event of its trace (what the checkout failure rate counts).
    let trace_id = answer.trace_id();
    let failed = stack
        .logs()
        .into_iter()
        .find(|l| l["event.action"] == "order-failed" && l["trace.id"] == trace_id.as_str())
        .expect("an order-failed audit event in the declined order's trace");
    assert_eq!(failed["event.dataset"], "ordertrail.audit");
    assert_eq!(failed["order.id"], order_id);
    assert_eq!(failed["error.type"], "card_declined");
    stack.assert_card_nowhere(DECLINED_CARD).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_stock_is_409_and_charges_nothing() {
    let mut stack = TestStack::start().await;
    let stock = stack.stock("TRAIL-MAP").await;

    let answer = stack
        .post_order(&order("TRAIL-MAP", stock + 1, GOOD_CARD), None, None)
        .await;

    assert_eq!(answer.status, 409, "{}", answer.body);
    assert_eq!(answer.body["reason"], "out_of_stock");
    let order_id = answer.body["order_id"].as_str().unwrap();
    assert_eq!(
        stack.get(&format!("/api/orders/{order_id}")).await.body["status"],
        "failed"
    );
    assert_eq!(
        stack
            .get_from("payment", &format!("/payments/{order_id}"))
            .await
            .status,
        404,
        "no payment row"
    );
    assert_eq!(stack.stock("TRAIL-MAP").await, stock);

    let spans = stack
        .trace(&answer.trace_id(), &["inventory.reserve", "checkout"])
        .await;
    assert!(named(&spans, "inventory.reserve").is_error);
    assert!(
        !spans.iter().any(|s| s.service_name == "payment"),
        "{:#?}",
        names(&spans)
    );
    assert_every_span_carries_the_customer(&spans, "c-42");
    stack.assert_card_nowhere(GOOD_CARD).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_payment_service_stopped_the_order_fails_and_the_stock_comes_back() {
    let mut stack = TestStack::start().await;
    let stock_before = stack.stock("TRAIL-LAMP").await;
    stack.stop("payment").await;

    let answer = stack
        .post_order(&order("TRAIL-LAMP", 1, GOOD_CARD), None, None)
        .await;

    assert_eq!(answer.status, 503, "{}", answer.body);
    let order_id = answer.body["order_id"].as_str().unwrap();
    assert_eq!(
        stack.get(&format!("/api/orders/{order_id}")).await.body["status"],
        "failed"
    );
    assert_eq!(stack.stock("TRAIL-LAMP").await, stock_before);

    let spans = stack
        .trace(&answer.trace_id(), &["inventory.release", "POST /payments"])
        .await;
    let calls: Vec<_> = spans
        .iter()
        .filter(|s| s.name == "POST /payments")
        .collect();
    assert_eq!(calls.len(), 3, "the idempotent charge is tried three times");
    assert!(
        calls.iter().all(|c| c.kind == "client"
            && c.is_error
            && c.attribute("error.type") == Some("connect"))
    );
    assert!(named(&spans, "checkout").is_error);
    assert_every_span_carries_the_customer(&spans, "c-42");
    stack.assert_card_nowhere(GOOD_CARD).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_order_is_a_problem_and_changes_nothing() {
    let stack = TestStack::start().await;
    let stock_before = stack.stock("TRAIL-MUG").await;

    let broken = stack
        .post_order(&serde_json::json!("not an order"), None, None)
        .await;
    let bad_luhn = stack
        .post_order(&order("TRAIL-MUG", 1, "4242424242424241"), None, None)
        .await;
    let zero = stack
        .post_order(&order("TRAIL-MUG", 0, GOOD_CARD), None, None)
        .await;

    for answer in [&broken, &bad_luhn, &zero] {
        assert_eq!(answer.status, 422, "{}", answer.body);
        assert_eq!(answer.body["trace_id"], answer.trace_id().as_str());
    }
    assert!(bad_luhn.body["detail"].as_str().unwrap().contains("Luhn"));
    assert!(!bad_luhn.body.to_string().contains("4242424242424241"));
    assert_eq!(stack.stock("TRAIL-MUG").await, stock_before);
}
