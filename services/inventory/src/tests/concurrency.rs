//! Many orders reserving, releasing and committing the same few products at once, their lines
//! in every order: no request fails (no deadlock, no busy database) and the stock adds up.

use std::collections::BTreeMap;

use ordertrail_shared::api::{OrderLine, ReservationStatus};
use ordertrail_shared::db::Sql;
use ordertrail_testkit::{CapturedSpans, databases};
use sqlx::Row;
use tokio::task::JoinSet;

use super::stock;
use crate::{ApiError, MIGRATIONS, Store};

const SET_EVERY_STOCK: Sql = Sql {
    operation: "UPDATE",
    collection: "products",
    text: "UPDATE products SET stock = $1",
};
const COUNT_RESERVED: Sql = Sql {
    operation: "SELECT",
    collection: "reservations",
    text: "SELECT COUNT(*) AS reserved FROM reservations WHERE status = 'reserved'",
};

const ORDERS: usize = 200;
/// Enough of every product that no order runs out.
const STOCK: i64 = 10_000;

/// What an order does with its reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    /// Releases it right after reserving.
    Release,
    /// Releases it while the reserve is still under way (a saga that gave up waiting).
    ReleaseDuringReserve,
    /// Commits it right after reserving.
    Commit,
    /// Keeps it reserved until the end of the test.
    Hold,
}

#[tokio::test]
async fn concurrent_reserves_and_releases_in_any_line_order_all_succeed_and_keep_the_stock_exact() {
    let _spans = CapturedSpans::start();
    for db in databases(&MIGRATIONS).await {
        let system = db.system().as_str();
        db.query(&SET_EVERY_STOCK)
            .bind(STOCK)
            .execute()
            .await
            .unwrap();
        let store = Store::new(db);
        let skus: Vec<String> = store
            .products()
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.sku)
            .collect();
        let mut random = Random(0x5eed_1234_abcd);
        let orders: Vec<(String, Vec<OrderLine>, Then)> = (0..ORDERS)
            .map(|i| {
                let then = [
                    Then::Release,
                    Then::ReleaseDuringReserve,
                    Then::Commit,
                    Then::Hold,
                ];
                (format!("o-{i}"), random.lines(&skus), then[i % 4])
            })
            .collect();

        let mut tasks = JoinSet::new();
        for (order_id, lines, then) in orders.clone() {
            tasks.spawn(run(store.clone(), order_id, lines, then));
        }
        let errors: Vec<String> = tasks
            .join_all()
            .await
            .into_iter()
            .filter_map(Result::err)
            .collect();

        assert!(
            errors.is_empty(),
            "{} of {ORDERS} orders failed on {system}: {errors:#?}",
            errors.len()
        );
        let taken = |kept: &[Then]| {
            let mut taken: BTreeMap<&str, i64> = BTreeMap::new();
            for (_, lines, _) in orders.iter().filter(|(_, _, then)| kept.contains(then)) {
                for line in lines {
                    *taken.entry(line.sku.as_str()).or_default() += line.quantity;
                }
            }
            taken
        };
        let held_or_sold = taken(&[Then::Commit, Then::Hold]);
        for sku in &skus {
            let expected = STOCK - held_or_sold.get(sku.as_str()).unwrap_or(&0);
            assert_eq!(stock(&store, sku).await, expected, "{sku} on {system}");
        }

        for (order_id, _, _) in orders.iter().filter(|(_, _, then)| *then == Then::Hold) {
            store.release(order_id).await.unwrap();
        }
        let sold = taken(&[Then::Commit]);
        for sku in &skus {
            let expected = STOCK - sold.get(sku.as_str()).unwrap_or(&0);
            assert_eq!(stock(&store, sku).await, expected, "{sku} on {system}");
        }
        let still_reserved: i64 = store
            .database()
            .query(&COUNT_RESERVED)
            .fetch_one()
            .await
            .unwrap()
            .get("reserved");
        assert_eq!(still_reserved, 0, "nothing left reserved on {system}");
    }
}

/// One order's calls; the error names the order and the call that failed.
async fn run(
    store: Store,
    order_id: String,
    lines: Vec<OrderLine>,
    then: Then,
) -> Result<(), String> {
    let failed = |call: &str| {
        let order_id = order_id.clone();
        let call = call.to_owned();
        move |err: ApiError| format!("{order_id} {call}: {err:?}")
    };
    if then == Then::ReleaseDuringReserve {
        let (reserved, released) =
            tokio::join!(store.reserve(&order_id, &lines), store.release(&order_id));
        reserved.map_err(failed("reserve"))?;
        let released = released.map_err(failed("release"))?;
        assert_eq!(released.status, ReservationStatus::Released);
        return Ok(());
    }
    store
        .reserve(&order_id, &lines)
        .await
        .map_err(failed("reserve"))?;
    match then {
        Then::Release => drop(store.release(&order_id).await.map_err(failed("release"))?),
        Then::Commit => drop(store.commit(&order_id).await.map_err(failed("commit"))?),
        Then::Hold | Then::ReleaseDuringReserve => {}
    }
    Ok(())
}

/// A small deterministic generator (xorshift64), so that a failing run replays the same orders.
struct Random(u64);

impl Random {
    /// A number below `n`.
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }

    /// Three to five distinct products, shuffled (Fisher–Yates), one to three of each.
    fn lines(&mut self, skus: &[String]) -> Vec<OrderLine> {
        let mut skus = skus.to_vec();
        for i in (1..skus.len()).rev() {
            skus.swap(i, self.below(i + 1));
        }
        let count = 3 + self.below(3);
        skus.into_iter()
            .take(count)
            .map(|sku| OrderLine {
                sku,
                quantity: 1 + self.below(3) as i64,
            })
            .collect()
    }
}
