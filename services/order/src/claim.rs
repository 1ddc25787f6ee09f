//! Work on an order under its claim, so that no two workers drive one order's saga at once:
//! not two replicas' recovery sweeps, and not a sweep and the live checkout of another replica
//! (or of this one). The live checkout takes the claim in the transaction that creates the
//! order (`Store::create`); the sweep takes it for each stalled order (`Store::take_stalled`,
//! which takes it only if the order still needs the sweep) and skips an order someone else
//! holds.
//!
//! # Why a lease
//!
//! A claim is a lease: `claimed_by` (a token unique to the claim) and `claimed_until`, columns
//! of the order, taken by one conditional `UPDATE … WHERE claimed_until IS NULL OR
//! claimed_until < now`, renewed every third of the lease while the work runs ([`hold`]), and
//! cleared when it ends. The lease is `RECOVERY_STALLED_AFTER`: a worker that dies (SIGKILL,
//! a lost node) stops renewing, and its orders become stalled, for the sweep, one lease later.
//! The alternatives, and why not:
//!
//! - `SELECT … FOR UPDATE SKIP LOCKED` locks the row only while its transaction is open. To
//!   keep other workers off the order for the whole saga, the transaction (and a pooled
//!   connection) would stay open across the HTTP calls to inventory and payment, seconds at
//!   worst: ten connections would bound the service to ten checkouts at once, and an idle
//!   transaction holds back PostgreSQL's vacuum. SQLite has no row locks at all.
//! - A PostgreSQL advisory lock (`pg_try_advisory_lock`) is held by a session, so the saga
//!   would pin a pooled connection for as long as it runs, as above; a transaction-level one
//!   (`pg_try_advisory_xact_lock`) ends with its transaction. It has no SQLite counterpart,
//!   so the code would differ by database.
//! - A lease is the same two statements on SQLite and PostgreSQL, holds no connection between
//!   them, and a dead holder's claim runs out by itself. Its cost: a renewal every third of a
//!   lease for a checkout that runs that long, and the holder must stop before the lease runs
//!   out, which [`hold`] does by dropping the work (as a crash would: every step is idempotent
//!   and the sweep finishes the order).
//!
//! # Safety margins
//!
//! - The holder gives up when it has not renewed its claim for two thirds of a lease (measured
//!   by its monotonic clock from before the statement that set the expiry), not at the expiry
//!   itself: the last third covers a loaded node that drops the work late.
//! - Expiries are computed, and compared, by the database's clock, in the statements that take
//!   and renew a claim: the replicas' clocks need not agree.
//! - Every write of the order's state is fenced by the claim (`AND claimed_by = token`): should
//!   a holder still run past its lease all the same, its writes change nothing and it stops
//!   at the first one.
//! - Work that holds a claim longer than the saga's time limit (`saga::TIME_LIMIT`, far beyond
//!   the slowest checkout whose calls all time out) is hung: it is dropped and its claim
//!   released, so that the sweep takes the order over.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;

use crate::metrics::Abandoned;
use crate::saga::Saga;
use crate::store::{Claim, Fenced, Store};

/// Why the work on an order ended without its value.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Stopped {
    /// The claim ran out or was taken (found when renewing it, or by a write it fenced out)
    /// before the work ended; the work was dropped, and the order is the next holder's.
    #[error("the claim on the order was lost before the work on it ended")]
    ClaimLost,
    /// The work held the claim longer than the saga's time limit; it was dropped and the claim
    /// released, for the sweep.
    #[error("the work on the order ran past its time limit")]
    TimedOut,
    /// The database failed. Not `transparent`, so that the `sqlx::Error` stays a source.
    #[error("database error")]
    Database(#[source] sqlx::Error),
}

impl From<Fenced> for Stopped {
    fn from(err: Fenced) -> Self {
        match err {
            Fenced::ClaimLost => Self::ClaimLost,
            Fenced::Database(err) => Self::Database(err),
        }
    }
}

/// Runs `work` while holding `claim`, just taken: renews it every third of the store's lease,
/// drops `work` if the claim cannot be renewed in time (see "Safety margins"), if a write of
/// the work finds it lost, or if the work runs past the saga's time limit, and releases the
/// claim at the end either way. A work dropped is logged and counted here.
///
/// A final write of the order under way when the work is dropped runs to its end, with what
/// is counted and logged of it (`saga::settle`): fenced, it changes nothing if the claim is
/// gone by then.
///
/// If this future is itself dropped, the renewals stop with it and the claim runs out.
pub(crate) async fn hold<T>(
    saga: &Saga,
    claim: &Claim,
    work: impl Future<Output = Result<T, Fenced>>,
) -> Result<T, Stopped> {
    let store = saga.store();
    let lost = CancellationToken::new();
    let heartbeat = AbortOnDropHandle::new(tokio::spawn(
        keep_renewing(store.clone(), claim.clone(), lost.clone()).in_current_span(),
    ));
    let outcome = tokio::select! {
        biased;
        () = lost.cancelled() => Err(Stopped::ClaimLost),
        () = tokio::time::sleep_until(claim.taken_at() + saga.time_limit()) => {
            Err(Stopped::TimedOut)
        }
        value = work => value.map_err(Stopped::from),
    };
    drop(heartbeat);
    match outcome {
        Err(Stopped::ClaimLost) => {
            saga.metrics().abandoned(Abandoned::ClaimLost);
            tracing::warn!(
                order.id = claim.order_id(),
                "claim on the order lost; the work on it stopped, the sweep finishes it"
            );
        }
        Err(Stopped::TimedOut) => {
            saga.metrics().abandoned(Abandoned::TimedOut);
            tracing::error!(
                order.id = claim.order_id(),
                error.type = "timeout",
                time_limit = ?saga.time_limit(),
                "work on the order ran past its time limit; dropped, the sweep finishes it"
            );
        }
        _ => {}
    }
    if let Err(err) = store.release_claim(claim).await {
        // It runs out by itself after a lease.
        tracing::warn!(
            error = &err as &dyn std::error::Error,
            "claim on the order not released"
        );
    }
    outcome
}

/// How long a claim is taken to be held, by this process's clock, after the statement that
/// set its expiry was sent: two thirds of the lease, the rest being the margin.
fn held_for(lease: Duration) -> Duration {
    lease * 2 / 3
}

/// Renews `claim` every third of the lease until aborted; cancels `lost` when it could not be
/// renewed within [`held_for`] of the last renewal, or another worker holds it now.
async fn keep_renewing(store: Store, claim: Claim, lost: CancellationToken) {
    let lease = store.lease();
    let mut held_until = claim.taken_at() + held_for(lease);
    let mut next = claim.taken_at() + lease / 3;
    loop {
        tokio::time::sleep_until(next).await;
        let at = Instant::now();
        if at >= held_until {
            break;
        }
        match tokio::time::timeout_at(held_until, store.renew_claim(&claim)).await {
            Ok(Ok(true)) => {
                held_until = at + held_for(lease);
                next = at + lease / 3;
            }
            Ok(Ok(false)) | Err(_) => break,
            Ok(Err(err)) => {
                tracing::warn!(
                    error = &err as &dyn std::error::Error,
                    "claim on the order not renewed; trying again"
                );
                next = (at + retry_pause(lease)).min(held_until);
            }
        }
    }
    lost.cancel();
}

/// The pause before renewing again after a database error: a tenth of the lease, at most a
/// second.
fn retry_pause(lease: Duration) -> Duration {
    (lease / 10).min(Duration::from_secs(1))
}
