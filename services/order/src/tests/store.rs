//! The orders database on SQLite, and on PostgreSQL when `ORDERTRAIL_TEST_POSTGRES_URL` is
//! set: idempotency keys, prices, recorded failures and the sweep's query.

use std::time::Duration;

use ordertrail_shared::api::{OrderStatus, PricedLine};
use ordertrail_testkit::{CapturedSpans, databases};

use super::{create, create_claimed, held, visa};
use crate::domain::Failure;
use crate::store::KeyClaim;
use crate::{MIGRATIONS, Store};

#[tokio::test]
async fn an_idempotency_key_is_new_then_in_progress_then_replayed_and_never_reused() {
    let _spans = CapturedSpans::start();
    for db in databases(&MIGRATIONS).await {
        let store = Store::new(db);
        let checkout = held(create_claimed(&store, "o-1", Some(("k", "fp-1"))).await);
        let again = create(&store, "o-2", Some(("k", "fp-1"))).await;
        assert!(
            matches!(again, KeyClaim::InProgress { ref order_id } if order_id == "o-1"),
            "{again:?}"
        );
        assert!(
            store.get("o-2").await.unwrap().is_none(),
            "a claimed key creates no second order"
        );

        assert!(store.awaits_answer("o-1").await.unwrap());
        assert!(
            store
                .save_response(&checkout, 201, r#"{"order_id":"o-1"}"#)
                .await
                .unwrap()
        );
        assert!(
            !store.save_response(&checkout, 500, "later").await.unwrap(),
            "the first answer stays"
        );
        assert!(!store.awaits_answer("o-1").await.unwrap());
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
        let checkout = held(create_claimed(&store, "o-1", None).await);
        assert!(
            store
                .stalled_orders(Duration::ZERO)
                .await
                .unwrap()
                .is_empty(),
            "held by its checkout"
        );
        store.release_claim(&checkout).await.unwrap();
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
        let sweep = store
            .take_stalled("o-1", Duration::ZERO)
            .await
            .unwrap()
            .unwrap();
        store.set_reserved(&sweep, &priced, 2900).await.unwrap();
        let order = store.get("o-1").await.unwrap().unwrap();
        assert_eq!(
            (order.status, order.total_cents, order.items),
            (OrderStatus::Reserved, 2900, priced.to_vec())
        );
        assert_eq!(order.card, Some(visa()));

        assert_eq!(store.failure("o-1").await.unwrap(), None);
        store
            .set_failure(&sweep, &Failure::declined("insufficient_funds"))
            .await
            .unwrap();
        assert_eq!(
            store.failure("o-1").await.unwrap(),
            Some(Failure::declined("insufficient_funds"))
        );
        store
            .set_status(&sweep, OrderStatus::Failed, None)
            .await
            .unwrap();
        store.release_claim(&sweep).await.unwrap();
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
