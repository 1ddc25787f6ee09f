//! The recovery sweep: finishes the checkouts that stood still (the service stopped mid-way, a
//! compensation or a commit waited for a service) and keeps their final answers.

use std::time::Duration;

use ordertrail_shared::api::{Order, OrderStatus};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::claim;
use crate::domain::{Failure, Outcome};
use crate::idempotency::Answer;
use crate::saga::{self, Saga};
use crate::store::{Claim, Fenced, Store};

/// The sweep, driving the saga of each stalled order to its end.
#[derive(Debug, Clone)]
pub struct Recovery {
    saga: Saga,
}

impl Recovery {
    /// A sweep that finishes orders with `saga`, over the saga's store.
    pub fn new(saga: Saga) -> Self {
        Self { saga }
    }

    fn store(&self) -> &Store {
        self.saga.store()
    }

    /// Every `every`, finishes the sagas that have stood still for `stalled_after`, until
    /// `stop` is cancelled. A sweep under way runs on (the service's drain timeout bounds it; an
    /// order it does not finish is finished by the next start's sweep).
    pub async fn keep_recovering(
        self,
        every: Duration,
        stalled_after: Duration,
        stop: CancellationToken,
    ) {
        let mut sweep = tokio::time::interval(every);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = sweep.tick() => {}
            }
            self.recover_stalled_orders(stalled_after).await;
        }
    }

    /// Finishes the orders untouched for `stalled_after` (see `Store::stalled_orders`), each
    /// under its claim (`crate::claim`), so that no other replica's sweep and no live checkout
    /// works on it meanwhile; an order another worker holds is left to it. A
    /// finished order gets its answer kept, a failure already recorded is
    /// compensated to its end, a paid order is committed, and an order stopped earlier (the
    /// service crashed) is undone as far as it may have got and fails `interrupted`. An order
    /// whose services are still unreachable stays open for the next sweep. Each recovered
    /// order's answer is kept for its idempotency key.
    pub(crate) async fn recover_stalled_orders(&self, stalled_after: Duration) {
        let open = match self.store().stalled_orders(stalled_after).await {
            Ok(open) => open,
            Err(err) => {
                tracing::error!(
                    error = &err as &dyn std::error::Error,
                    "cannot list open orders"
                );
                return;
            }
        };
        for order_id in open {
            // Another replica's sweep may have taken it, or finished it, since the list was
            // read: the take checks again that it is stalled.
            let claim = match self.store().take_stalled(&order_id, stalled_after).await {
                Ok(Some(claim)) => claim,
                Ok(None) => continue,
                Err(err) => {
                    tracing::error!(
                        error = &err as &dyn std::error::Error,
                        order.id = %order_id,
                        "cannot claim an open order"
                    );
                    continue;
                }
            };
            // The span covers the work only: it starts once the order is held and ends before
            // the claim is released, so that a recovery never overlaps other work on it.
            let span = tracing::info_span!("order.recover", order.id = %order_id);
            let recovery = async {
                let recovered = self.recover(&claim).await;
                if let Err(Fenced::Database(err)) = &recovered {
                    tracing::error!(
                        error = err as &dyn std::error::Error,
                        "open order not recovered"
                    );
                }
                recovered
            }
            .instrument(span);
            // A database error is logged in the span above; a lost claim or a timeout by
            // `hold`. The order is the next sweep's either way.
            let _ = claim::hold(&self.saga, &claim, recovery).await;
        }
    }

    /// Finishes the order under `claim` as far as it goes, keeps its answer when it is final,
    /// and counts it recovered if this sweep gave it its final answer: kept the answer for its
    /// idempotency key, or, for an order with none to keep, ended it. An answer not kept
    /// (a database error, or the claim lost and the order another worker's) leaves the count to
    /// whoever keeps it.
    async fn recover(&self, claim: &Claim) -> Result<(), Fenced> {
        let order = self.store().order(claim.order_id()).await?;
        // Asked before any write: while the claim is held no one else keeps the answer, and an
        // order ended since by someone else (the claim lost) fails the writes below.
        let answer_due = self.store().awaits_answer(claim.order_id()).await?;
        let ended_before = order.status.is_terminal();
        let outcome = self.finish(claim, order).await?;
        if !outcome.is_final() {
            return Ok(());
        }
        // An order found ended was ended by an earlier worker; one that ends now was ended by
        // this sweep's own fenced write (`Saga::still_open`).
        let ended_here = !ended_before;
        // A client retrying with its idempotency key now gets this answer instead of 409.
        let answer = Answer::to(&outcome);
        let status = outcome.order().status;
        let (store, metrics, claim) = (
            self.store().clone(),
            self.saga.metrics().clone(),
            claim.clone(),
        );
        // The answer and the count together, or neither, whatever stops the work (`settle`).
        saga::settle(async move {
            let kept = answer.keep(&store, &claim).await?;
            if kept || (ended_here && !answer_due) {
                metrics.recovered(status);
                tracing::info!(order.status = status.as_str(), "open order recovered");
            }
            Ok(())
        })
        .await
    }

    /// Drives the saga of `order`, under `claim`, as far as it goes from where it stood.
    async fn finish(&self, claim: &Claim, order: Order) -> Result<Outcome, Fenced> {
        let failure = self.store().failure(claim.order_id()).await?;
        match (order.status, failure) {
            // Finished, but its answer was never kept: keep it now.
            (OrderStatus::Confirmed, _) => Ok(Outcome::Confirmed(order)),
            (OrderStatus::Failed, failure) => Ok(Outcome::Failed {
                order,
                failure: failure.unwrap_or_else(Failure::interrupted),
            }),
            (OrderStatus::Paid, None) => self.saga.confirm(claim, order.total_cents).await,
            // A failure recorded is compensated to its end; an order stopped without one
            // fails `interrupted`.
            (status, failure) => {
                let failure = failure.unwrap_or_else(Failure::interrupted);
                self.saga.fail_stalled(claim, status, failure).await
            }
        }
    }
}
