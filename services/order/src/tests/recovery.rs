//! The recovery sweep against real inventory and payment services on local ports: orders the
//! service left open when it stopped, or whose answer it did not keep.

use std::time::Duration;

use ordertrail_shared::api::{OrderStatus, Payment, PaymentStatus};
use ordertrail_testkit::{CapturedSpans, databases};
use serde_json::json;

use super::{create, create_claimed, held, inventory, mug_stock, nowhere, payment, reserve_mugs};
use crate::store::KeyClaim;
use crate::{MIGRATIONS, Recovery, Saga, Store};

#[tokio::test]
async fn an_order_stalled_before_payment_is_released_and_failed_by_the_sweep() {
    let _spans = CapturedSpans::start();
    let inventory = inventory().await;
    let store = Store::new(databases(&MIGRATIONS).await.remove(0));
    let sweep = Recovery::new(Saga::new(store.clone(), inventory.clone(), nowhere()));
    let before = mug_stock(&inventory).await;
    // The service stopped right after the stock was reserved.
    create(&store, "o-9", Some(("k-9", "fp"))).await;
    reserve_mugs(&inventory, "o-9").await;

    sweep.recover_stalled_orders(Duration::ZERO).await;

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
    let sweep = Recovery::new(Saga::new(store.clone(), inventory.clone(), payment.clone()));
    let before = mug_stock(&inventory).await;
    // Reserved and charged, but the charge's answer never came back before the service stopped.
    let checkout = held(create_claimed(&store, "o-7", None).await);
    reserve_mugs(&inventory, "o-7").await;
    store.set_reserved(&checkout, &[], 2900).await.unwrap();
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
    store.release_claim(&checkout).await.unwrap();

    sweep.recover_stalled_orders(Duration::ZERO).await;

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
    let checkout = held(create_claimed(&store, "o-8", None).await);
    reserve_mugs(&inventory, "o-8").await;
    store
        .set_status(&checkout, OrderStatus::Paid, None)
        .await
        .unwrap();
    store.release_claim(&checkout).await.unwrap();

    Recovery::new(Saga::new(store.clone(), nowhere(), nowhere()))
        .recover_stalled_orders(Duration::ZERO)
        .await;
    assert_eq!(
        store.get("o-8").await.unwrap().unwrap().status,
        OrderStatus::Paid,
        "never failed while paid"
    );

    Recovery::new(Saga::new(store.clone(), inventory, nowhere()))
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
    let checkout = held(create_claimed(&store, "o-5", Some(("k-5", "fp"))).await);
    store
        .set_status(&checkout, OrderStatus::Confirmed, None)
        .await
        .unwrap();
    store.release_claim(&checkout).await.unwrap();

    Recovery::new(Saga::new(store.clone(), nowhere(), nowhere()))
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
