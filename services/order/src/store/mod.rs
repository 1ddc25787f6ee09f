//! The orders database: orders and their lines here, idempotency keys and their answers in
//! `keys`, the claims that keep two workers off one order in `claims`.
//!
//! Every method returns database errors as they come (`sqlx::Error`); a write of an order's
//! state is made under its claim, and returns [`Fenced`], which adds `ClaimLost` when the
//! claim is no longer held and nothing was written. What they mean to a client is for the
//! routes to say.

mod claims;
mod keys;

use std::time::Duration;

use ordertrail_shared::api::{Order, OrderLine, OrderStatus, PricedLine};
use ordertrail_shared::card::MaskedCard;
use ordertrail_shared::db::{Database, Sql, now, timestamp};
use sqlx::Row;

pub use self::claims::{Claim, Fenced};
use self::claims::{
    Dialects, fenced, millis, postgres_in, postgres_now, sqlite_in, sqlite_now, unclaimed,
};
pub use self::keys::KeyClaim;
use crate::domain::Failure;

/// The order, claimed by its creator until the database's clock says `$8` ms from now.
static INSERT_ORDER: Dialects = Dialects {
    sqlite: Sql {
        operation: "INSERT",
        collection: "orders",
        text: concat!(
            "INSERT INTO orders (order_id, customer_id, status, total_cents, card_brand, card_last4, trace_id, created_at, updated_at, claimed_by, claimed_until) VALUES ($1, $2, 'pending', 0, $3, $4, $5, $6, $6, $7, ",
            sqlite_in!("8"),
            ")"
        ),
    },
    postgres: Sql {
        operation: "INSERT",
        collection: "orders",
        text: concat!(
            "INSERT INTO orders (order_id, customer_id, status, total_cents, card_brand, card_last4, trace_id, created_at, updated_at, claimed_by, claimed_until) VALUES ($1, $2, 'pending', 0, $3, $4, $5, $6, $6, $7, ",
            postgres_in!("8"),
            ")"
        ),
    },
};
const INSERT_ITEM: Sql = Sql {
    operation: "INSERT",
    collection: "order_items",
    text: "INSERT INTO order_items (order_id, sku, quantity) VALUES ($1, $2, $3)",
};
const SET_STATUS: Sql = Sql {
    operation: "UPDATE",
    collection: "orders",
    text: "UPDATE orders SET status = $1, failure_reason = COALESCE($2, failure_reason), updated_at = $3 WHERE order_id = $4 AND claimed_by = $5",
};
const SET_TOTAL: Sql = Sql {
    operation: "UPDATE",
    collection: "orders",
    text: "UPDATE orders SET status = 'reserved', total_cents = $1, updated_at = $2 WHERE order_id = $3 AND claimed_by = $4",
};
const SET_PRICE: Sql = Sql {
    operation: "UPDATE",
    collection: "order_items",
    text: "UPDATE order_items SET unit_price_cents = $1 WHERE order_id = $2 AND sku = $3",
};
const SET_FAILURE: Sql = Sql {
    operation: "UPDATE",
    collection: "orders",
    text: "UPDATE orders SET failure_status = $1, failure_code = $2, failure_reason = $3, updated_at = $4 WHERE order_id = $5 AND claimed_by = $6",
};
const GET_FAILURE: Sql = Sql {
    operation: "SELECT",
    collection: "orders",
    text: "SELECT failure_status, failure_code, failure_reason FROM orders WHERE order_id = $1",
};
const GET_ORDER: Sql = Sql {
    operation: "SELECT",
    collection: "orders",
    text: "SELECT order_id, customer_id, status, total_cents, card_brand, card_last4, failure_reason, trace_id FROM orders WHERE order_id = $1",
};
const GET_ITEMS: Sql = Sql {
    operation: "SELECT",
    collection: "order_items",
    text: "SELECT sku, quantity, unit_price_cents FROM order_items WHERE order_id = $1 ORDER BY sku",
};
// Two halves, each answered by a partial index (migration 0003) in both databases; with the
// `OR` inside one query, both read every row. An order under a live claim is being worked on
// (`claims`), however long ago it was last written. `$1` is the cutoff.
macro_rules! open_orders {
    ($now:expr) => {
        concat!(
            "SELECT order_id, created_at FROM orders WHERE updated_at < $1 AND status NOT IN ('confirmed', 'failed') AND ",
            unclaimed!($now),
            " UNION SELECT orders.order_id, orders.created_at FROM idempotency_keys JOIN orders ON orders.order_id = idempotency_keys.order_id WHERE idempotency_keys.response_status IS NULL AND orders.updated_at < $1 AND ",
            unclaimed!($now),
            " ORDER BY created_at"
        )
    };
}
static OPEN_ORDERS: Dialects = Dialects {
    sqlite: Sql {
        operation: "SELECT",
        collection: "orders",
        text: open_orders!(sqlite_now!()),
    },
    postgres: Sql {
        operation: "SELECT",
        collection: "orders",
        text: open_orders!(postgres_now!()),
    },
};

/// A new order, as the request gave it.
#[derive(Debug)]
pub struct NewOrder<'a> {
    /// Its id.
    pub order_id: &'a str,
    /// Who orders.
    pub customer_id: &'a str,
    /// What, not yet priced.
    pub lines: &'a [OrderLine],
    /// Brand and last four digits of the card.
    pub card: &'a MaskedCard,
    /// The trace of the request that placed it.
    pub trace_id: Option<&'a str>,
}

/// How long a claim lasts unless renewed, when [`Store::with_lease`] does not say: the
/// default of `RECOVERY_STALLED_AFTER`.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(120);

/// Orders over SQLite or PostgreSQL.
#[derive(Debug, Clone)]
pub struct Store {
    db: Database,
    lease: Duration,
}

impl Store {
    /// A store over `db`, already migrated, whose claims last [`DEFAULT_LEASE`].
    pub fn new(db: Database) -> Self {
        Self {
            db,
            lease: DEFAULT_LEASE,
        }
    }

    /// This store with claims that last `lease` unless renewed.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// The database, for health checks.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Creates a pending order with its (not yet priced) lines, claimed for the caller, and, in
    /// the same transaction, claims its idempotency key (`key`, `fingerprint`), so that a key
    /// never points at an order that does not exist and no sweep can take the order before its
    /// checkout starts. Anything but [`KeyClaim::New`] creates nothing.
    pub async fn create(
        &self,
        order: &NewOrder<'_>,
        key: Option<(&str, &str)>,
    ) -> Result<KeyClaim, sqlx::Error> {
        let mut tx = self.db.begin().await?;
        if let Some((key, fingerprint)) = key
            && !self
                .claim(&mut tx, key, fingerprint, order.order_id)
                .await?
        {
            tx.rollback().await?;
            return self.existing_claim(key, fingerprint).await;
        }
        let claim = Claim::new(order.order_id);
        tx.query(INSERT_ORDER.of(self.db.system()))
            .bind(order.order_id)
            .bind(order.customer_id)
            .bind(&order.card.brand)
            .bind(&order.card.last4)
            .bind(order.trace_id)
            .bind(now())
            .bind(claim.token())
            .bind(millis(self.lease))
            .execute()
            .await?;
        for line in order.lines {
            tx.query(&INSERT_ITEM)
                .bind(order.order_id)
                .bind(&line.sku)
                .bind(line.quantity)
                .execute()
                .await?;
        }
        tx.commit().await?;
        Ok(KeyClaim::New(claim))
    }

    /// Records why the order under `claim` failed, before its compensation runs.
    pub async fn set_failure(&self, claim: &Claim, failure: &Failure) -> Result<(), Fenced> {
        let changed = self
            .db
            .query(&SET_FAILURE)
            .bind(i64::from(failure.status.as_u16()))
            .bind(&failure.code)
            .bind(&failure.detail)
            .bind(now())
            .bind(claim.order_id())
            .bind(claim.token())
            .execute()
            .await?;
        fenced(changed)
    }

    /// The failure recorded for `order_id`, if any.
    pub async fn failure(&self, order_id: &str) -> Result<Option<Failure>, sqlx::Error> {
        let row = self
            .db
            .query(&GET_FAILURE)
            .bind(order_id)
            .fetch_one()
            .await?;
        let status: Option<i64> = row.try_get("failure_status")?;
        let code: Option<String> = row.try_get("failure_code")?;
        let detail: Option<String> = row.try_get("failure_reason")?;
        Ok(status
            .zip(code)
            .map(|(status, code)| Failure::stored(status, code, detail.unwrap_or_default())))
    }

    /// Records the reservation of the order under `claim`: it is `reserved`, its lines priced
    /// and its total set.
    pub async fn set_reserved(
        &self,
        claim: &Claim,
        items: &[PricedLine],
        total_cents: i64,
    ) -> Result<(), Fenced> {
        let order_id = claim.order_id();
        let mut tx = self.db.begin().await?;
        let changed = tx
            .query(&SET_TOTAL)
            .bind(total_cents)
            .bind(now())
            .bind(order_id)
            .bind(claim.token())
            .execute()
            .await?;
        if let Err(lost) = fenced(changed) {
            tx.rollback().await?;
            return Err(lost);
        }
        for item in items {
            tx.query(&SET_PRICE)
                .bind(item.unit_price_cents)
                .bind(order_id)
                .bind(&item.sku)
                .execute()
                .await?;
        }
        Ok(tx.commit().await?)
    }

    /// Moves the order under `claim` to `status`, with a reason when it failed.
    pub async fn set_status(
        &self,
        claim: &Claim,
        status: OrderStatus,
        reason: Option<&str>,
    ) -> Result<(), Fenced> {
        let changed = self
            .db
            .query(&SET_STATUS)
            .bind(status.as_str())
            .bind(reason)
            .bind(now())
            .bind(claim.order_id())
            .bind(claim.token())
            .execute()
            .await?;
        fenced(changed)
    }

    /// The order `order_id`, if there is one.
    pub async fn get(&self, order_id: &str) -> Result<Option<Order>, sqlx::Error> {
        let Some(row) = self
            .db
            .query(&GET_ORDER)
            .bind(order_id)
            .fetch_optional()
            .await?
        else {
            return Ok(None);
        };
        let items = self
            .db
            .query(&GET_ITEMS)
            .bind(order_id)
            .fetch_all_as()
            .await?;
        let status: String = row.try_get("status")?;
        let brand: Option<String> = row.try_get("card_brand")?;
        let last4: Option<String> = row.try_get("card_last4")?;
        Ok(Some(Order {
            order_id: row.try_get("order_id")?,
            customer_id: row.try_get("customer_id")?,
            status: OrderStatus::parse(&status)
                .ok_or_else(|| sqlx::Error::Decode(format!("order status {status}").into()))?,
            total_cents: row.try_get("total_cents")?,
            items,
            card: brand
                .zip(last4)
                .map(|(brand, last4)| MaskedCard { brand, last4 }),
            failure_reason: row.try_get("failure_reason")?,
            trace_id: row.try_get("trace_id")?,
        }))
    }

    /// The order `order_id`, which exists: `RowNotFound` otherwise.
    pub async fn order(&self, order_id: &str) -> Result<Order, sqlx::Error> {
        self.get(order_id).await?.ok_or(sqlx::Error::RowNotFound)
    }

    /// Ids of the orders untouched for `idle_for` and claimed by no one, oldest first, that the
    /// sweep must finish: those neither confirmed nor failed, and finished ones whose
    /// idempotency key has no answer stored (the process stopped between the two).
    pub async fn stalled_orders(&self, idle_for: Duration) -> Result<Vec<String>, sqlx::Error> {
        // No span: the recovery sweep asks every half minute, and a one-span trace each time
        // would bury the real ones. The orders it finds are recovered in spans of their own.
        self.db
            .query(OPEN_ORDERS.of(self.db.system()))
            .bind(cutoff(idle_for))
            .without_span()
            .fetch_all()
            .await?
            .iter()
            .map(|row| row.try_get("order_id"))
            .collect()
    }
}

/// The stored time `idle_for` ago, for `updated_at`: by this process's clock, as `updated_at`
/// is written. It decides only when an order looks stalled; whether another worker holds it
/// is the claim's to say, by the database's clock.
fn cutoff(idle_for: Duration) -> String {
    timestamp(time::OffsetDateTime::now_utc() - idle_for)
}
