//! Compensation: what a failed checkout must undo, and the undoing, in reverse order.
//!
//! [`Undo::after`] is the one rule that picks what to undo, from the step that failed and
//! whether it may have been applied; the checkout and the recovery sweep both go through it.

use ordertrail_shared::api::{OrderStatus, Payment, PaymentStatus, Reservation, ReservationStatus};
use ordertrail_shared::telemetry::record_error;

use super::Saga;
use super::steps::{StepError, retry};
use crate::domain::{Failure, Outcome};
use crate::metrics::Compensation;
use crate::store::{Claim, Fenced};

/// A step of the checkout, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Inventory reserves the stock.
    Reserve,
    /// Payment charges the card.
    Charge,
    /// Inventory commits the stock.
    Commit,
}

impl Step {
    /// The step an order in `status` was at: the one after the last it recorded.
    pub(crate) fn at(status: OrderStatus) -> Self {
        match status {
            OrderStatus::Pending => Self::Reserve,
            OrderStatus::Reserved => Self::Charge,
            OrderStatus::Paid | OrderStatus::Confirmed | OrderStatus::Failed => Self::Commit,
        }
    }
}

/// What must be undone when a checkout fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Undo {
    /// Nothing was done anywhere.
    Nothing,
    /// Stock may be reserved.
    Release,
    /// A charge may have been taken and stock may be reserved.
    RefundAndRelease,
}

impl Undo {
    /// What to undo when `step` failed: every step before it, and `step` itself when it
    /// `maybe_applied` (an attempt timed out, or answered 5xx). A commit is never undone: it
    /// fails only when the reservation is gone, and then the payment is refunded.
    pub(crate) fn after(step: Step, maybe_applied: bool) -> Self {
        match (step, maybe_applied) {
            (Step::Reserve, false) => Self::Nothing,
            (Step::Reserve, true) | (Step::Charge, false) => Self::Release,
            (Step::Charge, true) | (Step::Commit, _) => Self::RefundAndRelease,
        }
    }
}

/// What an undo gave back: only these are counted, so that a refund that found nothing
/// charged (payment records it refunded, with nothing taken) or a release that found nothing
/// reserved is not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Undone {
    /// Money taken was returned, by this undo or an earlier one of the same order.
    refunded: bool,
    /// Stock held was put back, by this undo or an earlier one of the same order.
    released: bool,
}

impl Saga {
    /// Records `failure`, undoes what may have been done, and marks the order under `claim`
    /// failed. When an undo cannot be sent the order stays open, failure recorded, for the
    /// sweep.
    ///
    /// The failure and what its undo gave back are counted once the order is marked failed,
    /// and only then: an undo that did not finish runs again, whole, when the sweep finishes
    /// the order, and payment and inventory answer a repeated refund or release as if it were
    /// the first.
    pub(crate) async fn fail(
        &self,
        claim: &Claim,
        failure: Failure,
        undo: Undo,
    ) -> Result<Outcome, Fenced> {
        let order_id = claim.order_id();
        record_error(&tracing::Span::current(), &failure.code, &failure);
        self.store.set_failure(claim, &failure).await?;
        if let Some(undone) = self.undo(order_id, undo).await {
            let (failed, failed_id) = (failure.clone(), order_id.to_owned());
            let reason = Some(failure.detail.clone());
            self.end(claim, OrderStatus::Failed, reason, move |metrics| {
                metrics.failed(&failed.code);
                if undone.refunded {
                    metrics.compensated(Compensation::Refund);
                }
                if undone.released {
                    metrics.compensated(Compensation::Release);
                }
                tracing::warn!(
                    order.status = "failed",
                    event.outcome = "failure",
                    error.type = failed.code.as_str(),
                    error.message = %failed,
                    "order failed"
                );
                // The audit event beside it, as `order-confirmed` for a confirmed order.
                ordertrail_shared::audit!(
                    "order-failed",
                    order.id = %failed_id,
                    order.status = "failed",
                    error.type = failed.code.as_str(),
                    "order failed"
                );
            })
            .await?;
        } else {
            tracing::error!(error.type = "compensation_pending", error.message = %failure, "order failed, compensation waits for a service");
            return Ok(Outcome::Failed {
                order: self.still_open(claim).await?,
                failure,
            });
        }
        Ok(Outcome::Failed {
            order: self.store.order(order_id).await?,
            failure,
        })
    }

    /// Refunds and releases as `undo` says; what that gave back, or `None` unless each step
    /// is known to be done (a service that cannot be reached, or an answer showing money
    /// still taken or stock still held, leaves the order to the sweep).
    async fn undo(&self, order_id: &str, undo: Undo) -> Option<Undone> {
        let mut undone = Undone::default();
        if undo == Undo::RefundAndRelease {
            let path = format!("/payments/{order_id}/refund");
            match retry::<Payment>(|| self.payment.post("/payments/{order_id}/refund", &path)).await
            {
                // A payment recorded refunded with nothing charged has no amount.
                Ok(payment) if payment.status == PaymentStatus::Refunded => {
                    undone.refunded = payment.amount_cents > 0;
                }
                // 409: the charge was declined, so nothing was taken.
                Err(StepError::Refused { problem, .. }) if problem.status == 409 => {}
                _ => return None,
            }
        }
        if undo != Undo::Nothing {
            let path = format!("/reservations/{order_id}/release");
            match retry::<Reservation>(|| {
                self.inventory
                    .post("/reservations/{order_id}/release", &path)
            })
            .await
            {
                // A release of what was never reserved is recorded with no lines.
                Ok(reservation) if reservation.status == ReservationStatus::Released => {
                    undone.released = !reservation.items.is_empty();
                }
                _ => return None,
            }
        }
        Some(undone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_step_undoes_the_steps_before_it_and_itself_when_it_may_have_been_applied() {
        let cases = [
            (Step::Reserve, false, Undo::Nothing),
            (Step::Reserve, true, Undo::Release),
            (Step::Charge, false, Undo::Release),
            (Step::Charge, true, Undo::RefundAndRelease),
            (Step::Commit, false, Undo::RefundAndRelease),
            (Step::Commit, true, Undo::RefundAndRelease),
        ];
        for (step, maybe_applied, undo) in cases {
            assert_eq!(
                Undo::after(step, maybe_applied),
                undo,
                "{step:?} {maybe_applied}"
            );
        }
    }

    #[test]
    fn an_order_is_at_the_step_after_the_last_it_recorded() {
        assert_eq!(Step::at(OrderStatus::Pending), Step::Reserve);
        assert_eq!(Step::at(OrderStatus::Reserved), Step::Charge);
        assert_eq!(Step::at(OrderStatus::Paid), Step::Commit);
    }
}
