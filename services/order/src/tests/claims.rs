//! Claims on orders, on SQLite and on PostgreSQL when `ORDERTRAIL_TEST_POSTGRES_URL` is set:
//! one holder at a time, by the database's clock; a dead holder's claim runs out; a live one
//! is renewed, and given up with a margin before it runs out; a holder that lost its claim
//! writes nothing and stops; work that runs too long is given up.
//!
//! Leases here are seconds long, so that a loaded machine's pauses (a few hundred
//! milliseconds) cannot make a claim run out where a test means it to be held.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ordertrail_shared::api::OrderStatus;
use ordertrail_shared::db::{Sql, now, timestamp};
use ordertrail_testkit::{CapturedMetrics, CapturedSpans, databases};
use sqlx::Row;
use tokio::time::Instant;

use super::{create_claimed, held, nowhere};
use crate::claim::{Stopped, hold};
use crate::domain::Failure;
use crate::metrics::OrderMetrics;
use crate::store::{Claim, Fenced, KeyClaim};
use crate::{MIGRATIONS, Saga, Store};

/// A lease long enough that no pause of a loaded machine runs it out by chance.
const LEASE: Duration = Duration::from_secs(3);

/// Creates `order_id` as a live checkout does; the claim it holds.
async fn create_held(store: &Store, order_id: &str) -> Claim {
    held(create_claimed(store, order_id, None).await)
}

/// A saga over `store` that calls nothing, counting on `metrics`.
fn saga(store: &Store, metrics: &CapturedMetrics) -> Saga {
    Saga::new(store.clone(), nowhere(), nowhere()).with_metrics(OrderMetrics::new(&metrics.meter()))
}

/// Whether a sweep could take `order_id` now.
async fn free(store: &Store, order_id: &str) -> bool {
    match store.take_stalled(order_id, Duration::ZERO).await.unwrap() {
        Some(claim) => {
            store.release_claim(&claim).await.unwrap();
            true
        }
        None => false,
    }
}

#[tokio::test]
async fn an_order_is_held_by_its_checkout_until_released_and_then_by_one_sweep_only() {
    let _spans = CapturedSpans::start();
    for db in databases(&MIGRATIONS).await {
        let store = Store::new(db);
        let checkout = create_held(&store, "o-1").await;

        assert_eq!(
            store.take_stalled("o-1", Duration::ZERO).await.unwrap(),
            None,
            "held"
        );
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
        let sweep = store
            .take_stalled("o-1", Duration::ZERO)
            .await
            .unwrap()
            .expect("free");
        assert_eq!(
            store.take_stalled("o-1", Duration::ZERO).await.unwrap(),
            None
        );
        assert!(
            !store.renew_claim(&checkout).await.unwrap(),
            "a released claim is not renewed"
        );
        store.release_claim(&checkout).await.unwrap();
        assert_eq!(
            store.take_stalled("o-1", Duration::ZERO).await.unwrap(),
            None,
            "releasing a claim no longer held frees nothing"
        );
        assert!(store.renew_claim(&sweep).await.unwrap());
    }
}

/// The stored expiry of the claim on `o-1`.
const CLAIMED_UNTIL: Sql = Sql {
    operation: "SELECT",
    collection: "orders",
    text: "SELECT claimed_until FROM orders WHERE order_id = 'o-1'",
};

#[tokio::test]
async fn a_claim_runs_out_one_lease_from_now_by_the_database_clock_in_the_stored_format() {
    let _spans = CapturedSpans::start();
    for db in databases(&MIGRATIONS).await {
        let store = Store::new(db).with_lease(LEASE);
        let before = timestamp(time::OffsetDateTime::now_utc() + LEASE);
        let checkout = create_held(&store, "o-1").await;
        assert!(store.renew_claim(&checkout).await.unwrap());
        let after = timestamp(time::OffsetDateTime::now_utc() + LEASE);

        let row = store
            .database()
            .query(&CLAIMED_UNTIL)
            .fetch_one()
            .await
            .unwrap();
        let until: String = row.try_get("claimed_until").unwrap();

        // The database and the test share one machine, and so one clock: the expiry the
        // database computed lies between the two this process computed around it, and in the
        // same text format, or claims and `updated_at` would not compare as times.
        assert_eq!(until.len(), now().len(), "{until}");
        assert!(
            until.ends_with('Z') && until.as_bytes()[10] == b'T',
            "{until}"
        );
        assert!(
            before[..23] <= until[..23] && until[..23] <= after[..23],
            "{before} <= {until} <= {after}"
        );
    }
}

#[tokio::test]
async fn the_claim_of_a_holder_that_died_runs_out_after_its_lease() {
    let _spans = CapturedSpans::start();
    for db in databases(&MIGRATIONS).await {
        let store = Store::new(db).with_lease(Duration::from_secs(2));
        let dead = create_held(&store, "o-1").await;
        assert!(!free(&store, "o-1").await);

        tokio::time::sleep(Duration::from_millis(2500)).await;

        let sweep = store.take_stalled("o-1", Duration::ZERO).await.unwrap();
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
        let checkout = create_held(&store, "o-1").await;
        store.release_claim(&checkout).await.unwrap();

        let mut attempts = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let store = store.clone();
            attempts.spawn(async move { store.take_stalled("o-1", Duration::ZERO).await.unwrap() });
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
async fn the_sweep_does_not_take_an_order_finished_or_touched_since_it_listed_it() {
    let _spans = CapturedSpans::start();
    for db in databases(&MIGRATIONS).await {
        let store = Store::new(db);
        let checkout = held(create_claimed(&store, "o-1", Some(("k-1", "fp"))).await);
        store.release_claim(&checkout).await.unwrap();
        assert_eq!(store.stalled_orders(Duration::ZERO).await.unwrap(), ["o-1"]);

        // Another replica's sweep takes the order, finishes it and keeps its answer.
        let other = store
            .take_stalled("o-1", Duration::ZERO)
            .await
            .unwrap()
            .unwrap();
        store
            .set_status(&other, OrderStatus::Confirmed, None)
            .await
            .unwrap();
        assert!(store.save_response(&other, 201, "{}").await.unwrap());
        store.release_claim(&other).await.unwrap();

        assert_eq!(
            store.take_stalled("o-1", Duration::ZERO).await.unwrap(),
            None,
            "finished, with its answer kept: nothing left for a sweep"
        );

        let checkout = create_held(&store, "o-2").await;
        store.release_claim(&checkout).await.unwrap();
        assert_eq!(
            store
                .take_stalled("o-2", Duration::from_secs(60))
                .await
                .unwrap(),
            None,
            "written within the stall time"
        );
    }
}

#[tokio::test]
async fn a_holder_whose_claim_was_taken_writes_nothing() {
    let _spans = CapturedSpans::start();
    for db in databases(&MIGRATIONS).await {
        let store = Store::new(db);
        let stale = held(create_claimed(&store, "o-1", Some(("k-1", "fp"))).await);
        // Its lease ran out and a sweep took the order.
        store.release_claim(&stale).await.unwrap();
        let sweep = store
            .take_stalled("o-1", Duration::ZERO)
            .await
            .unwrap()
            .unwrap();

        let lost = |written: Result<(), Fenced>| matches!(written, Err(Fenced::ClaimLost));
        assert!(lost(store.set_reserved(&stale, &[], 2900).await));
        assert!(lost(
            store
                .set_failure(&stale, &Failure::declined("card_declined"))
                .await
        ));
        assert!(lost(
            store.set_status(&stale, OrderStatus::Confirmed, None).await
        ));
        assert!(
            !store.save_response(&stale, 201, "{}").await.unwrap(),
            "an answer is not kept under a lost claim"
        );

        let order = store.get("o-1").await.unwrap().unwrap();
        assert_eq!((order.status, order.total_cents), (OrderStatus::Pending, 0));
        assert_eq!(store.failure("o-1").await.unwrap(), None);
        assert!(
            matches!(
                create_claimed(&store, "o-2", Some(("k-1", "fp"))).await,
                KeyClaim::InProgress { .. }
            ),
            "no answer kept"
        );
        store
            .set_status(&sweep, OrderStatus::Failed, Some("interrupted"))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn work_longer_than_a_lease_keeps_its_claim_and_releases_it_at_the_end() {
    let _spans = CapturedSpans::start();
    let metrics = CapturedMetrics::start();
    for db in databases(&MIGRATIONS).await {
        let store = Store::new(db).with_lease(LEASE);
        let claim = create_held(&store, "o-1").await;

        let probe = store.clone();
        let work = async move {
            for _ in 0..4 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                assert!(!free(&probe, "o-1").await, "still held");
            }
            Ok("done")
        };
        let done = hold(&saga(&store, &metrics), &claim, work).await;

        assert_eq!(done.unwrap(), "done");
        assert!(free(&store, "o-1").await, "released");
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
    let metrics = CapturedMetrics::start();
    let mut stopped = 0;
    for db in databases(&MIGRATIONS).await {
        stopped += 1;
        let store = Store::new(db).with_lease(LEASE);
        let claim = create_held(&store, "o-1").await;
        let finished = Arc::new(AtomicBool::new(false));

        let work = {
            let finished = finished.clone();
            async move {
                tokio::time::sleep(Duration::from_secs(60)).await;
                finished.store(true, Ordering::SeqCst);
                Ok(())
            }
        };
        let stolen = async {
            store.database().query(&STEAL).execute().await.unwrap();
        };
        let saga = saga(&store, &metrics);
        let (held, ()) = tokio::join!(hold(&saga, &claim, work), stolen);

        assert!(matches!(held, Err(Stopped::ClaimLost)), "{held:?}");
        assert!(!finished.load(Ordering::SeqCst), "the work was dropped");
        assert!(
            !free(&store, "o-1").await,
            "the new holder's claim was not released"
        );
    }
    assert_eq!(
        metrics.sum("ordertrail.saga.abandoned", &[("error.type", "claim_lost")]),
        Some(stopped)
    );
}

/// Records when it is dropped.
struct DropClock(Arc<std::sync::Mutex<Option<Instant>>>);

impl Drop for DropClock {
    fn drop(&mut self) {
        *self.0.lock().unwrap() = Some(Instant::now());
    }
}

#[tokio::test]
async fn a_holder_that_cannot_renew_drops_its_work_well_before_the_lease_runs_out() {
    let _spans = CapturedSpans::start();
    let metrics = CapturedMetrics::start();
    for db in databases(&MIGRATIONS).await {
        let store = Store::new(db).with_lease(LEASE);
        let claim = create_held(&store, "o-1").await;
        // The order's row is locked (and, on SQLite, the one connection taken) by a
        // transaction that stays open: every renewal waits.
        let mut blocker = store.database().begin().await.unwrap();
        blocker.query(&STEAL_NOTHING).execute().await.unwrap();
        let dropped = Arc::new(std::sync::Mutex::new(None));

        let work = {
            let clock = DropClock(dropped.clone());
            async move {
                let _clock = clock;
                std::future::pending::<Result<(), Fenced>>().await
            }
        };
        let holding = tokio::spawn({
            let (saga, claim) = (saga(&store, &metrics), claim.clone());
            async move { hold(&saga, &claim, work).await }
        });
        let deadline = Instant::now() + 2 * LEASE;
        while dropped.lock().unwrap().is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let dropped_at = dropped.lock().unwrap().expect("the work was dropped");
        blocker.rollback().await.unwrap();
        let held = holding.await.unwrap();

        assert!(matches!(held, Err(Stopped::ClaimLost)), "{held:?}");
        let after = dropped_at - claim.taken_at();
        assert!(
            after >= LEASE / 3 && after < LEASE * 5 / 6,
            "dropped {after:?} after the claim was taken, with a lease of {LEASE:?}"
        );
    }
}

/// Locks the row of `o-1`, changing nothing.
const STEAL_NOTHING: Sql = Sql {
    operation: "UPDATE",
    collection: "orders",
    text: "UPDATE orders SET claimed_by = claimed_by WHERE order_id = 'o-1'",
};

#[tokio::test]
async fn a_holder_dropped_by_its_caller_stops_renewing_and_its_claim_runs_out() {
    let _spans = CapturedSpans::start();
    let metrics = CapturedMetrics::start();
    for db in databases(&MIGRATIONS).await {
        let lease = Duration::from_secs(2);
        let store = Store::new(db).with_lease(lease);
        let claim = create_held(&store, "o-1").await;

        let work = std::future::pending::<Result<(), Fenced>>();
        let given_up = tokio::time::timeout(
            Duration::from_millis(100),
            hold(&saga(&store, &metrics), &claim, work),
        )
        .await;
        assert!(given_up.is_err());

        tokio::time::sleep(lease + Duration::from_millis(500)).await;
        assert!(free(&store, "o-1").await, "no renewal outlived the holder");
    }
}

#[tokio::test]
async fn work_past_the_time_limit_is_dropped_counted_and_its_claim_released() {
    let _spans = CapturedSpans::start();
    let metrics = CapturedMetrics::start();
    let store = Store::new(databases(&MIGRATIONS).await.remove(0)).with_lease(LEASE);
    let claim = create_held(&store, "o-1").await;
    let saga = saga(&store, &metrics).with_time_limit(Duration::from_secs(1));

    let work = std::future::pending::<Result<(), Fenced>>();
    let held = tokio::time::timeout(Duration::from_secs(30), hold(&saga, &claim, work))
        .await
        .expect("hung work is given up");

    assert!(matches!(held, Err(Stopped::TimedOut)), "{held:?}");
    assert!(free(&store, "o-1").await, "released for the sweep");
    assert_eq!(
        metrics.sum("ordertrail.saga.abandoned", &[("error.type", "timeout")]),
        Some(1)
    );
}
