//! Claims on orders, on SQLite and on PostgreSQL when `ORDERTRAIL_TEST_POSTGRES_URL` is set:
//! one holder at a time, a dead holder's claim runs out, a live one is renewed, and work whose
//! claim is lost stops.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ordertrail_shared::db::Sql;
use ordertrail_testkit::{CapturedSpans, databases};

use super::{mugs, visa};
use crate::claim::{ClaimLost, hold};
use crate::store::{Claim, KeyClaim, NewOrder};
use crate::{MIGRATIONS, Store};

/// Creates `order_id` as a live checkout does; the claim it holds.
async fn create_claimed(store: &Store, order_id: &str) -> Claim {
    let (card, lines) = (visa(), mugs(1));
    let order = NewOrder {
        order_id,
        customer_id: "c-1",
        lines: &lines,
        card: &card,
        trace_id: None,
    };
    match store.create(&order, None).await.unwrap() {
        KeyClaim::New(claim) => claim,
        other => panic!("a new order, not {other:?}"),
    }
}

#[tokio::test]
async fn an_order_is_held_by_its_checkout_until_released_and_then_by_one_sweep_only() {
    let _spans = CapturedSpans::start();
    for db in databases(&MIGRATIONS).await {
        let store = Store::new(db);
        let checkout = create_claimed(&store, "o-1").await;

        assert_eq!(store.take_claim("o-1").await.unwrap(), None, "held");
        assert!(
            store
                .stalled_orders(Duration::ZERO)
                .await
                .unwrap()
                .is_empty(),
            "an order under a live claim is not stalled, however old"
        );
        assert!(store.renew_claim(&checkout).await.unwrap());

        store.release_claim(&checkout).await.unwrap();
        assert_eq!(store.stalled_orders(Duration::ZERO).await.unwrap(), ["o-1"]);
        let sweep = store.take_claim("o-1").await.unwrap().expect("free");
        assert_eq!(store.take_claim("o-1").await.unwrap(), None);
        assert!(
            !store.renew_claim(&checkout).await.unwrap(),
            "a released claim is not renewed"
        );
        store.release_claim(&checkout).await.unwrap();
        assert_eq!(
            store.take_claim("o-1").await.unwrap(),
            None,
            "releasing a claim no longer held frees nothing"
        );
        assert!(store.renew_claim(&sweep).await.unwrap());
    }
}

#[tokio::test]
async fn the_claim_of_a_holder_that_died_runs_out_after_its_lease() {
    let _spans = CapturedSpans::start();
    for db in databases(&MIGRATIONS).await {
        let store = Store::new(db).with_lease(Duration::from_millis(200));
        let dead = create_claimed(&store, "o-1").await;
        assert_eq!(store.take_claim("o-1").await.unwrap(), None);

        tokio::time::sleep(Duration::from_millis(300)).await;

        let sweep = store.take_claim("o-1").await.unwrap();
        assert!(sweep.is_some(), "the lease ran out");
        assert!(
            !store.renew_claim(&dead).await.unwrap(),
            "a holder back from the dead finds its claim gone"
        );
    }
}

#[tokio::test]
async fn of_many_workers_claiming_one_order_at_once_exactly_one_gets_it() {
    let _spans = CapturedSpans::start();
    for db in databases(&MIGRATIONS).await {
        let store = Store::new(db);
        let checkout = create_claimed(&store, "o-1").await;
        store.release_claim(&checkout).await.unwrap();

        let mut attempts = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let store = store.clone();
            attempts.spawn(async move { store.take_claim("o-1").await.unwrap() });
        }
        let taken = attempts
            .join_all()
            .await
            .into_iter()
            .filter(Option::is_some)
            .count();

        assert_eq!(taken, 1);
    }
}

#[tokio::test]
async fn work_longer_than_a_lease_keeps_its_claim_and_releases_it_at_the_end() {
    let _spans = CapturedSpans::start();
    for db in databases(&MIGRATIONS).await {
        let store = Store::new(db).with_lease(Duration::from_millis(300));
        let claim = create_claimed(&store, "o-1").await;

        let probe = store.clone();
        let work = async move {
            for _ in 0..4 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                assert_eq!(probe.take_claim("o-1").await.unwrap(), None, "still held");
            }
            "done"
        };
        assert_eq!(hold(&store, claim, work).await, Ok("done"));

        assert!(store.take_claim("o-1").await.unwrap().is_some(), "released");
    }
}

/// Gives the claim on `o-1` to someone else, as a sweep would after the lease ran out.
const STEAL: Sql = Sql {
    operation: "UPDATE",
    collection: "orders",
    text: "UPDATE orders SET claimed_by = 'another' WHERE order_id = 'o-1'",
};

#[tokio::test]
async fn work_whose_claim_was_taken_over_stops_and_leaves_the_new_holder_alone() {
    let _spans = CapturedSpans::start();
    for db in databases(&MIGRATIONS).await {
        let store = Store::new(db).with_lease(Duration::from_millis(300));
        let claim = create_claimed(&store, "o-1").await;
        let finished = Arc::new(AtomicBool::new(false));

        let work = {
            let finished = finished.clone();
            async move {
                tokio::time::sleep(Duration::from_secs(2)).await;
                finished.store(true, Ordering::SeqCst);
            }
        };
        let stolen = async {
            store.database().query(&STEAL).execute().await.unwrap();
        };
        let (held, ()) = tokio::join!(hold(&store, claim, work), stolen);

        assert_eq!(held, Err(ClaimLost));
        assert!(!finished.load(Ordering::SeqCst), "the work was dropped");
        assert_eq!(
            store.take_claim("o-1").await.unwrap(),
            None,
            "the new holder's claim was not released"
        );
    }
}
