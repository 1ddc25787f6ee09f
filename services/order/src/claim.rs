//! Work on an order under its claim, so that no two workers drive one order's saga at once:
//! not two replicas' recovery sweeps, and not a sweep and the live checkout of another replica
//! (or of this one). The live checkout takes the claim in the transaction that creates the
//! order (`Store::create`); the sweep takes it for each stalled order (`Store::take_claim`) and
//! skips an order someone else holds.
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
//!   and the sweep finishes the order). The replicas' clocks must agree to well within a lease
//!   (`claimed_until` is written by the holder's clock and read by the others'); NTP does.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::store::{Claim, Store};

/// The claim ran out or was taken before the work ended; the work was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the claim on the order was lost before the work on it ended")]
pub(crate) struct ClaimLost;

/// Runs `work` while holding `claim`, just taken: renews it every third of the store's lease,
/// drops `work` (and answers [`ClaimLost`]) if the claim cannot be renewed before it runs out,
/// and releases it at the end either way.
pub(crate) async fn hold<T>(
    store: &Store,
    claim: Claim,
    work: impl Future<Output = T>,
) -> Result<T, ClaimLost> {
    let lost = CancellationToken::new();
    let heartbeat =
        tokio::spawn(keep_renewing(store.clone(), claim.clone(), lost.clone()).in_current_span());
    let outcome = tokio::select! {
        biased;
        value = work => Ok(value),
        () = lost.cancelled() => Err(ClaimLost),
    };
    heartbeat.abort();
    if outcome.is_err() {
        tracing::warn!(
            order.id = claim.order_id(),
            "claim on the order lost; the work on it stopped, the sweep finishes it"
        );
    }
    if let Err(err) = store.release_claim(&claim).await {
        // It runs out by itself after a lease.
        tracing::warn!(
            error = &err as &dyn std::error::Error,
            "claim on the order not released"
        );
    }
    outcome
}

/// Renews `claim` every third of the lease until aborted; cancels `lost` when it could not be
/// renewed before it ran out (by this process's clock) or another worker holds it now.
async fn keep_renewing(store: Store, claim: Claim, lost: CancellationToken) {
    let lease = store.lease();
    // Measured from before the claim's expiry was computed, so never later than it.
    let mut held_until = claim.taken_at() + lease;
    let mut next = claim.taken_at() + lease / 3;
    loop {
        tokio::time::sleep_until(next).await;
        let at = Instant::now();
        if at >= held_until {
            break;
        }
        match tokio::time::timeout_at(held_until, store.renew_claim(&claim)).await {
            Ok(Ok(true)) => {
                held_until = at + lease;
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
