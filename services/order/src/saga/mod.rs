//! The checkout saga: reserve stock, charge the card, commit the stock; compensate in reverse.
//!
//! Every step is idempotent on the order id at its service, so a step whose answer was lost is
//! simply retried. A failure is recorded with the order before compensation runs; when a
//! compensation cannot be sent (its service is down) the order stays open and the recovery
//! sweep finishes it later with the same failure. A paid order whose stock cannot be committed
//! yet stays `paid` and is committed by the sweep: it is never failed while its payment stands.

mod failure;
mod steps;

use std::time::Duration;

use ordertrail_shared::api::{
    ChargeRequest, Order, OrderStatus, Payment, PaymentStatus, Reservation, ReservationStatus,
    ReserveRequest, ValidOrder,
};
use ordertrail_shared::http::ServiceClient;
use ordertrail_shared::problem::Problem;
use ordertrail_shared::telemetry::record_error;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing::field::Empty;

pub use failure::Failure;
use steps::{StepError, retry};

use crate::store::Store;

/// What must be undone when a checkout fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Undo {
    /// Nothing was done anywhere.
    Nothing,
    /// Stock may be reserved.
    Release,
    /// A charge may have been taken and stock may be reserved.
    RefundAndRelease,
}

/// A checkout's end, short of confirmation.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    /// The order failed: `failed`, or still open while its compensation waits for a service.
    #[error("{failure}")]
    Failed {
        /// The order.
        order: Box<Order>,
        /// Why.
        failure: Failure,
    },
    /// The order is paid, and its stock will be committed once inventory answers.
    #[error("order {} is paid; its stock is committed once inventory answers", .0.order_id)]
    Pending(Box<Order>),
    /// The orders database failed.
    #[error("database error")]
    Database(#[from] sqlx::Error),
}

/// The saga and the clients of the services it orchestrates.
#[derive(Debug, Clone)]
pub struct Saga {
    store: Store,
    inventory: ServiceClient,
    payment: ServiceClient,
}

impl Saga {
    /// A saga over `store`, calling `inventory` and `payment`.
    pub fn new(store: Store, inventory: ServiceClient, payment: ServiceClient) -> Self {
        Self {
            store,
            inventory,
            payment,
        }
    }

    /// Runs the saga for the pending order `order_id`.
    #[tracing::instrument(name = "checkout", skip_all, fields(order.id = %order_id, order.total_cents = Empty))]
    pub async fn checkout(
        &self,
        order_id: &str,
        request: ValidOrder,
    ) -> Result<Order, CheckoutError> {
        let reserve = ReserveRequest {
            order_id: order_id.to_owned(),
            items: request.items.into_inner(),
        };
        let reservation: Reservation = match retry::<Reservation>(|| {
            self.inventory
                .post("/reservations", "/reservations")
                .json(&reserve)
        })
        .await
        {
            Ok(reservation) if reservation.status == ReservationStatus::Reserved => reservation,
            // A released reservation here means this order was already given up.
            Ok(_) => {
                return self
                    .fail(order_id, Failure::interrupted(), Undo::Nothing)
                    .await;
            }
            Err(StepError::Refused {
                problem,
                maybe_applied,
            }) => {
                // An earlier attempt that timed out may still reserve: release to be sure.
                let undo = if maybe_applied {
                    Undo::Release
                } else {
                    Undo::Nothing
                };
                let failure = if problem.status == 409 {
                    Failure::out_of_stock(&detail(&problem))
                } else {
                    Failure::unknown_product(&detail(&problem))
                };
                return self.fail(order_id, failure, undo).await;
            }
            Err(StepError::Unreachable { maybe_applied }) => {
                let undo = if maybe_applied {
                    Undo::Release
                } else {
                    Undo::Nothing
                };
                return self
                    .fail(order_id, Failure::unavailable("inventory"), undo)
                    .await;
            }
        };
        tracing::Span::current().record("order.total_cents", reservation.total_cents);
        self.store
            .set_reserved(order_id, &reservation.items, reservation.total_cents)
            .await?;

        let charge = ChargeRequest {
            order_id: order_id.to_owned(),
            amount_cents: reservation.total_cents,
            card: request.payment,
        };
        let charged: Result<Payment, StepError> =
            retry(|| self.payment.post("/payments", "/payments").json(&charge)).await;
        drop(charge);
        match charged {
            Ok(payment) if payment.status == PaymentStatus::Captured => {
                self.store
                    .set_status(order_id, OrderStatus::Paid, None)
                    .await?;
            }
            // Captured before and refunded since: this order has been given up.
            Ok(_) => {
                return self
                    .fail(order_id, Failure::interrupted(), Undo::Release)
                    .await;
            }
            Err(StepError::Refused {
                problem,
                maybe_applied,
            }) => {
                let reason = problem
                    .extensions
                    .get("reason")
                    .and_then(|r| r.as_str())
                    .unwrap_or("payment_refused");
                let undo = if maybe_applied {
                    Undo::RefundAndRelease
                } else {
                    Undo::Release
                };
                return self.fail(order_id, Failure::declined(reason), undo).await;
            }
            Err(StepError::Unreachable { maybe_applied }) => {
                let undo = if maybe_applied {
                    Undo::RefundAndRelease
                } else {
                    Undo::Release
                };
                return self
                    .fail(order_id, Failure::unavailable("payment"), undo)
                    .await;
            }
        }
        self.confirm(order_id).await
    }

    /// Commits the stock of a paid order and confirms it. If inventory cannot be reached the
    /// order stays `paid` for the sweep; if the reservation is gone, the payment is refunded.
    async fn confirm(&self, order_id: &str) -> Result<Order, CheckoutError> {
        let path = format!("/reservations/{order_id}/commit");
        match retry::<Reservation>(|| {
            self.inventory
                .post("/reservations/{order_id}/commit", &path)
        })
        .await
        {
            Ok(_) => {
                self.store
                    .set_status(order_id, OrderStatus::Confirmed, None)
                    .await?;
                tracing::info!(order.status = "confirmed", "order confirmed");
                Ok(self.order(order_id).await?)
            }
            Err(StepError::Refused { .. }) => {
                self.fail(
                    order_id,
                    Failure::reservation_lost(),
                    Undo::RefundAndRelease,
                )
                .await
            }
            Err(StepError::Unreachable { .. }) => {
                tracing::warn!(
                    order.status = "paid",
                    "stock not committed yet; the recovery sweep will"
                );
                Err(CheckoutError::Pending(Box::new(
                    self.order(order_id).await?,
                )))
            }
        }
    }

    /// Records `failure`, undoes what may have been done, and marks the order failed. When an
    /// undo cannot be sent the order stays open, failure recorded, for the sweep.
    async fn fail(
        &self,
        order_id: &str,
        failure: Failure,
        undo: Undo,
    ) -> Result<Order, CheckoutError> {
        record_error(&tracing::Span::current(), &failure.code, &failure);
        self.store.set_failure(order_id, &failure).await?;
        if self.undo(order_id, undo).await {
            self.store
                .set_status(order_id, OrderStatus::Failed, Some(&failure.detail))
                .await?;
            tracing::warn!(
                order.status = "failed",
                event.outcome = "failure",
                error.type = failure.code.as_str(),
                error.message = %failure,
                "order failed"
            );
        } else {
            tracing::error!(error.type = "compensation_pending", error.message = %failure, "order failed, compensation waits for a service");
        }
        Err(CheckoutError::Failed {
            order: Box::new(self.order(order_id).await?),
            failure,
        })
    }

    /// Refunds and releases as `undo` says. False unless each step is known to be done (a
    /// service that cannot be reached, or an answer showing money still taken or stock still
    /// held, leaves the order to the sweep).
    async fn undo(&self, order_id: &str, undo: Undo) -> bool {
        if undo == Undo::RefundAndRelease {
            let path = format!("/payments/{order_id}/refund");
            match retry::<Payment>(|| self.payment.post("/payments/{order_id}/refund", &path)).await
            {
                Ok(payment) if payment.status == PaymentStatus::Refunded => {}
                // 409: the charge was declined, so nothing was taken.
                Err(StepError::Refused { problem, .. }) if problem.status == 409 => {}
                _ => return false,
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
                Ok(reservation) if reservation.status == ReservationStatus::Released => {}
                _ => return false,
            }
        }
        true
    }

    async fn order(&self, order_id: &str) -> Result<Order, sqlx::Error> {
        self.store
            .get(order_id)
            .await?
            .ok_or(sqlx::Error::RowNotFound)
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

    /// Finishes the orders untouched for `stalled_after` (see `Store::stalled_orders`): a
    /// finished order gets its answer kept, a failure already recorded is
    /// compensated to its end, a paid order is committed, and an order stopped earlier (the
    /// service crashed) is undone as far as it may have got and fails `interrupted`. An order
    /// whose services are still unreachable stays open for the next sweep. Each recovered
    /// order's answer is kept for its idempotency key.
    pub(crate) async fn recover_stalled_orders(&self, stalled_after: Duration) {
        let open = match self.store.stalled_orders(stalled_after).await {
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
            let span = tracing::info_span!("order.recover", order.id = %order_id);
            self.recover(&order_id).instrument(span).await;
        }
    }

    async fn recover(&self, order_id: &str) {
        let outcome = async {
            let order = self.order(order_id).await?;
            let failure = self.store.failure(order_id).await?;
            match (order.status, failure) {
                // Finished, but its answer was never kept: keep it now.
                (OrderStatus::Confirmed, _) => Ok(order),
                (OrderStatus::Failed, failure) => Err(CheckoutError::Failed {
                    order: Box::new(order),
                    failure: failure.unwrap_or_else(Failure::interrupted),
                }),
                (status, Some(failure)) => self.fail(order_id, failure, undo_after(status)).await,
                (OrderStatus::Paid, None) => self.confirm(order_id).await,
                (status, None) => {
                    self.fail(order_id, Failure::interrupted(), undo_after(status))
                        .await
                }
            }
        }
        .await;
        let status = match &outcome {
            Ok(order) => order.status,
            Err(CheckoutError::Failed { order, .. } | CheckoutError::Pending(order)) => {
                order.status
            }
            Err(err) => {
                tracing::error!(
                    error = err as &dyn std::error::Error,
                    "open order not recovered"
                );
                return;
            }
        };
        if !status.is_terminal() {
            return;
        }
        // A client retrying with its idempotency key now gets this answer instead of 409.
        let answer = crate::error::checkout_answer(outcome);
        if let Err(err) = self
            .store
            .save_response(order_id, answer.status.as_u16(), &answer.body)
            .await
        {
            tracing::error!(
                error = &err as &dyn std::error::Error,
                "answer of a recovered order not kept"
            );
        }
        tracing::info!(order.status = status.as_str(), "open order recovered");
    }
}

/// What an order may have done by the time it reached `status`.
fn undo_after(status: OrderStatus) -> Undo {
    match status {
        OrderStatus::Pending => Undo::Release,
        _ => Undo::RefundAndRelease,
    }
}

/// The problem's detail, else its title.
fn detail(problem: &Problem) -> String {
    problem
        .detail
        .clone()
        .unwrap_or_else(|| problem.title.clone())
}
