//! The checkout saga: reserve stock, charge the card, commit the stock; compensate in reverse.
//!
//! Every step is idempotent on the order id at its service, so a step whose answer was lost is
//! simply retried (`steps`). A failure is recorded with the order before compensation runs
//! (`compensation`); when a compensation cannot be sent (its service is down) the order stays
//! open and the recovery sweep finishes it later with the same failure. A paid order whose
//! stock cannot be committed yet stays `paid` and is committed by the sweep: it is never failed
//! while its payment stands.
//!
//! A checkout ends in an [`Outcome`]; only a database failure is an error.

mod compensation;
mod steps;

use ordertrail_shared::api::{
    ChargeRequest, OrderStatus, Payment, PaymentStatus, Reservation, ReservationStatus,
    ReserveRequest, ValidOrder,
};
use ordertrail_shared::http::ServiceClient;
use ordertrail_shared::problem::Problem;
use tracing::field::Empty;

use self::compensation::{Step, Undo};
use self::steps::{StepError, retry};
use crate::domain::{Failure, Outcome};
use crate::metrics::OrderMetrics;
use crate::store::Store;

/// The saga and the clients of the services it orchestrates.
#[derive(Debug, Clone)]
pub struct Saga {
    store: Store,
    inventory: ServiceClient,
    payment: ServiceClient,
    metrics: OrderMetrics,
}

impl Saga {
    /// A saga over `store`, calling `inventory` and `payment`.
    pub fn new(store: Store, inventory: ServiceClient, payment: ServiceClient) -> Self {
        Self {
            store,
            inventory,
            payment,
            metrics: OrderMetrics::global(),
        }
    }

    /// This saga, counting on `metrics` instead of the process's instruments.
    #[cfg(test)]
    pub(crate) fn with_metrics(self, metrics: OrderMetrics) -> Self {
        Self { metrics, ..self }
    }

    /// The orders database the saga records its progress in.
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// The business instruments the saga counts on.
    pub(crate) fn metrics(&self) -> &OrderMetrics {
        &self.metrics
    }

    /// Runs the saga for the pending order `order_id`.
    #[tracing::instrument(name = "checkout", skip_all, fields(order.id = %order_id, order.total_cents = Empty))]
    pub async fn checkout(
        &self,
        order_id: &str,
        order: ValidOrder,
    ) -> Result<Outcome, sqlx::Error> {
        let reserve = ReserveRequest {
            order_id: order_id.to_owned(),
            items: order.items.into_inner(),
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
                let undo = Undo::after(Step::Reserve, false);
                return self.fail(order_id, Failure::interrupted(), undo).await;
            }
            Err(err) => {
                // An earlier attempt that timed out may still reserve: release to be sure.
                let undo = Undo::after(Step::Reserve, err.maybe_applied());
                let failure = match err {
                    StepError::Refused { problem, .. } if problem.status == 409 => {
                        Failure::out_of_stock(&detail(&problem))
                    }
                    StepError::Refused { problem, .. } => {
                        Failure::unknown_product(&detail(&problem))
                    }
                    StepError::Unreachable { .. } => Failure::unavailable("inventory"),
                };
                return self.fail(order_id, failure, undo).await;
            }
        };
        tracing::Span::current().record("order.total_cents", reservation.total_cents);
        self.store
            .set_reserved(order_id, &reservation.items, reservation.total_cents)
            .await?;

        let charge = ChargeRequest {
            order_id: order_id.to_owned(),
            amount_cents: reservation.total_cents,
            card: order.payment,
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
                let undo = Undo::after(Step::Charge, false);
                return self.fail(order_id, Failure::interrupted(), undo).await;
            }
            Err(err) => {
                let undo = Undo::after(Step::Charge, err.maybe_applied());
                let failure = match err {
                    StepError::Refused { problem, .. } => Failure::declined(
                        problem
                            .extensions
                            .get("reason")
                            .and_then(|r| r.as_str())
                            .unwrap_or("payment_refused"),
                    ),
                    StepError::Unreachable { .. } => Failure::unavailable("payment"),
                };
                return self.fail(order_id, failure, undo).await;
            }
        }
        self.confirm(order_id).await
    }

    /// Commits the stock of a paid order and confirms it. If inventory cannot be reached the
    /// order stays `paid` for the sweep; if the reservation is gone, the payment is refunded.
    pub(crate) async fn confirm(&self, order_id: &str) -> Result<Outcome, sqlx::Error> {
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
                let order = self.store.order(order_id).await?;
                self.metrics.confirmed(order.total_cents);
                Ok(Outcome::Confirmed(order))
            }
            Err(err @ StepError::Refused { .. }) => {
                let undo = Undo::after(Step::Commit, err.maybe_applied());
                self.fail(order_id, Failure::reservation_lost(), undo).await
            }
            Err(StepError::Unreachable { .. }) => {
                tracing::warn!(
                    order.status = "paid",
                    "stock not committed yet; the recovery sweep will"
                );
                Ok(Outcome::Pending(self.store.order(order_id).await?))
            }
        }
    }

    /// Ends an order the checkout left in `status` (the service stopped, or a compensation
    /// could not be sent) with `failure`: whatever its next step may have done is undone with
    /// the rest, as [`Saga::fail`] does.
    pub(crate) async fn fail_stalled(
        &self,
        order_id: &str,
        status: OrderStatus,
        failure: Failure,
    ) -> Result<Outcome, sqlx::Error> {
        // The step may have been applied: its answer was never recorded.
        let undo = Undo::after(Step::at(status), true);
        self.fail(order_id, failure, undo).await
    }
}

/// The problem's detail, else its title.
fn detail(problem: &Problem) -> String {
    problem
        .detail
        .clone()
        .unwrap_or_else(|| problem.title.clone())
}
