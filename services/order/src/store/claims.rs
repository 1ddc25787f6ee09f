//! Claims on orders: at most one worker (a live checkout or a recovery sweep, on any replica)
//! holds an order at a time, for a lease it renews while it works.
//!
//! A claim is two columns of the order (`claimed_by`, `claimed_until`), taken by one
//! conditional `UPDATE` that succeeds only when no live claim is there, so that the database
//! decides between two replicas, in SQLite and PostgreSQL alike. Why a lease and not a row
//! lock or an advisory lock is in `crate::claim`.

use std::time::Duration;

use ordertrail_shared::db::{Sql, now, timestamp};
use tokio::time::Instant;

use super::Store;

const TAKE: Sql = Sql {
    operation: "UPDATE",
    collection: "orders",
    text: "UPDATE orders SET claimed_by = $1, claimed_until = $2 WHERE order_id = $3 AND (claimed_until IS NULL OR claimed_until < $4)",
};
const RENEW: Sql = Sql {
    operation: "UPDATE",
    collection: "orders",
    text: "UPDATE orders SET claimed_until = $1 WHERE order_id = $2 AND claimed_by = $3",
};
const RELEASE: Sql = Sql {
    operation: "UPDATE",
    collection: "orders",
    text: "UPDATE orders SET claimed_by = NULL, claimed_until = NULL WHERE order_id = $1 AND claimed_by = $2",
};

/// A claim on one order, held by whoever has this value: its token is unique to the claim, so
/// that two workers of one process are told apart as well as two replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    order_id: String,
    token: String,
    taken_at: Instant,
}

impl Claim {
    /// A claim on `order_id` with a fresh token, about to be taken: its expiry is computed
    /// after this.
    pub(super) fn new(order_id: &str) -> Self {
        Self {
            order_id: order_id.to_owned(),
            token: uuid::Uuid::new_v4().simple().to_string(),
            taken_at: Instant::now(),
        }
    }

    /// The order claimed.
    pub fn order_id(&self) -> &str {
        &self.order_id
    }

    /// When it was taken, by this process's monotonic clock: no later than the moment its
    /// expiry was computed, so that `taken_at + lease` is never past the stored expiry.
    pub fn taken_at(&self) -> Instant {
        self.taken_at
    }

    /// The token stored in `claimed_by`.
    pub(super) fn token(&self) -> &str {
        &self.token
    }
}

/// When a claim taken now for `lease` runs out, as stored.
pub(super) fn until(lease: Duration) -> String {
    timestamp(time::OffsetDateTime::now_utc() + lease)
}

impl Store {
    /// How long a claim lasts unless it is renewed.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// Claims `order_id` for [`Store::lease`] unless another worker holds a claim on it that
    /// has not run out. Without a span: the sweep tries this for every stalled order.
    pub async fn take_claim(&self, order_id: &str) -> Result<Option<Claim>, sqlx::Error> {
        let claim = Claim::new(order_id);
        let taken = self
            .db
            .query(&TAKE)
            .bind(claim.token())
            .bind(until(self.lease))
            .bind(order_id)
            .bind(now())
            .without_span()
            .execute()
            .await?;
        Ok((taken == 1).then_some(claim))
    }

    /// Extends `claim` to [`Store::lease`] from now; false when it is no longer held (it ran
    /// out and another worker took the order). Without a span: it runs beside the work, every
    /// third of a lease.
    pub async fn renew_claim(&self, claim: &Claim) -> Result<bool, sqlx::Error> {
        let renewed = self
            .db
            .query(&RENEW)
            .bind(until(self.lease))
            .bind(claim.order_id())
            .bind(claim.token())
            .without_span()
            .execute()
            .await?;
        Ok(renewed == 1)
    }

    /// Gives `claim` up, if it is still held, so that the order is free at once.
    pub async fn release_claim(&self, claim: &Claim) -> Result<(), sqlx::Error> {
        self.db
            .query(&RELEASE)
            .bind(claim.order_id())
            .bind(claim.token())
            .execute()
            .await?;
        Ok(())
    }
}
