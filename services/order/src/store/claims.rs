//! Claims on orders: at most one worker (a live checkout or a recovery sweep, on any replica)
//! holds an order at a time, for a lease it renews while it works.
//!
//! A claim is two columns of the order (`claimed_by`, `claimed_until`), taken by one
//! conditional `UPDATE` that succeeds only when no live claim is there, so that the database
//! decides between two replicas, in SQLite and PostgreSQL alike. Every time a claim is
//! compared with is the database's own clock, read in the statement that compares it, so that
//! the replicas' clocks need not agree. The order's state is written only under its claim
//! ([`Fenced`]): a holder that lost it changes nothing. Why a lease and not a row lock or an
//! advisory lock is in `crate::claim`.

use std::time::Duration;

use ordertrail_shared::db::{DbSystem, Sql};
use tokio::time::Instant;

use super::Store;

/// The database's clock, now, in the stored timestamp format (`shared::db::now`: RFC 3339 in
/// UTC, six fractional digits, so that text order is time order). SQLite's `%f` gives
/// milliseconds: three zeros pad it to six digits.
macro_rules! sqlite_now {
    () => {
        "(strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z')"
    };
}
macro_rules! postgres_now {
    () => {
        "to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
    };
}
/// The database's clock `$n` milliseconds from now (one statement reads one `now` in SQLite,
/// and `clock_timestamp()` once per call in PostgreSQL), as [`sqlite_now`] and [`postgres_now`].
macro_rules! sqlite_in {
    ($n:literal) => {
        concat!(
            "(strftime('%Y-%m-%dT%H:%M:%f', 'now', '+' || ($",
            $n,
            " / 1000.0) || ' seconds') || '000Z')"
        )
    };
}
macro_rules! postgres_in {
    ($n:literal) => {
        concat!(
            "to_char((clock_timestamp() + $",
            $n,
            " * interval '1 millisecond') AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
        )
    };
}
pub(super) use {postgres_in, postgres_now, sqlite_in, sqlite_now};

/// A statement in the two dialects, which differ only in how they read the database's clock.
#[derive(Debug)]
pub(super) struct Dialects {
    pub(super) sqlite: Sql,
    pub(super) postgres: Sql,
}

impl Dialects {
    /// The statement for `system`.
    pub(super) fn of(&'static self, system: DbSystem) -> &'static Sql {
        match system {
            DbSystem::Sqlite => &self.sqlite,
            DbSystem::Postgresql => &self.postgres,
        }
    }
}

/// Whether no live claim is on the order, by the database's clock.
macro_rules! unclaimed {
    ($now:expr) => {
        concat!("(claimed_until IS NULL OR claimed_until < ", $now, ")")
    };
}
pub(super) use unclaimed;

/// Whether the order is one the sweep must finish (`Store::stalled_orders`), untouched since
/// `$2`: open, or finished without the answer to its idempotency key kept.
macro_rules! stalled {
    () => {
        "updated_at < $2 AND (status NOT IN ('confirmed', 'failed') OR EXISTS (SELECT 1 FROM idempotency_keys WHERE idempotency_keys.order_id = orders.order_id AND idempotency_keys.response_status IS NULL))"
    };
}

static TAKE_STALLED: Dialects = Dialects {
    sqlite: Sql {
        operation: "UPDATE",
        collection: "orders",
        text: concat!(
            "UPDATE orders SET claimed_by = $3, claimed_until = ",
            sqlite_in!("4"),
            " WHERE order_id = $1 AND ",
            stalled!(),
            " AND ",
            unclaimed!(sqlite_now!())
        ),
    },
    postgres: Sql {
        operation: "UPDATE",
        collection: "orders",
        text: concat!(
            "UPDATE orders SET claimed_by = $3, claimed_until = ",
            postgres_in!("4"),
            " WHERE order_id = $1 AND ",
            stalled!(),
            " AND ",
            unclaimed!(postgres_now!())
        ),
    },
};
static RENEW: Dialects = Dialects {
    sqlite: Sql {
        operation: "UPDATE",
        collection: "orders",
        text: concat!(
            "UPDATE orders SET claimed_until = ",
            sqlite_in!("3"),
            " WHERE order_id = $1 AND claimed_by = $2"
        ),
    },
    postgres: Sql {
        operation: "UPDATE",
        collection: "orders",
        text: concat!(
            "UPDATE orders SET claimed_until = ",
            postgres_in!("3"),
            " WHERE order_id = $1 AND claimed_by = $2"
        ),
    },
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

    /// When it was taken, by this process's monotonic clock: no later than the moment the
    /// database computed its expiry, so that the lease runs from no earlier than this.
    pub fn taken_at(&self) -> Instant {
        self.taken_at
    }

    /// The token stored in `claimed_by`.
    pub(super) fn token(&self) -> &str {
        &self.token
    }
}

/// What a write of the order's state under its claim fails with.
#[derive(Debug, thiserror::Error)]
pub enum Fenced {
    /// The write changed nothing: the claim is no longer held (its lease ran out and another
    /// worker may hold the order now), so its holder must stop.
    #[error("the claim on the order was lost before the work on it ended")]
    ClaimLost,
    /// The database failed. Not `transparent`: `shared::db::retry_transaction` looks for the
    /// `sqlx::Error` among the sources.
    #[error("database error")]
    Database(#[from] sqlx::Error),
}

/// `Ok` when a write under a claim changed a row, [`Fenced::ClaimLost`] when it changed none.
pub(super) fn fenced(changed: u64) -> Result<(), Fenced> {
    if changed == 0 {
        return Err(Fenced::ClaimLost);
    }
    Ok(())
}

/// A lease as bound to the statements: whole milliseconds.
pub(super) fn millis(lease: Duration) -> i64 {
    i64::try_from(lease.as_millis()).unwrap_or(i64::MAX)
}

impl Store {
    /// How long a claim lasts unless it is renewed.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// Claims `order_id` for [`Store::lease`] if it is still stalled (untouched for
    /// `idle_for`, and open or finished without its answer kept, as
    /// [`Store::stalled_orders`] says) and no other worker holds a claim on it that has not
    /// run out. The list the sweep works through is read before: another replica may have
    /// finished the order since, and this takes it only if it still needs the sweep. Without a
    /// span: the sweep tries this for every stalled order.
    pub async fn take_stalled(
        &self,
        order_id: &str,
        idle_for: Duration,
    ) -> Result<Option<Claim>, sqlx::Error> {
        let claim = Claim::new(order_id);
        let taken = self
            .db
            .query(TAKE_STALLED.of(self.db.system()))
            .bind(order_id)
            .bind(super::cutoff(idle_for))
            .bind(claim.token())
            .bind(millis(self.lease))
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
            .query(RENEW.of(self.db.system()))
            .bind(claim.order_id())
            .bind(claim.token())
            .bind(millis(self.lease))
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
