//! The checkout saga: reserve stock, charge the card, commit the stock; compensate in reverse.
//!
//! Every step is idempotent on the order id at its service, so a step whose answer was lost is
//! simply retried (`steps`). A failure is recorded with the order before compensation runs
//! (`compensation`); when a compensation cannot be sent (its service is down) the order stays
//! open and the recovery sweep finishes it later with the same failure. A paid order whose
//! stock cannot be committed yet stays `paid` and is committed by the sweep: it is never failed
//! while its payment stands.
//!
//! The saga works on an order under its claim (`crate::claim`) and writes the order's state
//! only under it: a checkout ends in an [`Outcome`]; only a database failure, or the claim
//! found lost by a write, is an error.

mod compensation;
mod steps;

use std::time::Duration;

use ordertrail_shared::api::{
    ChargeRequest, Order, OrderStatus, Payment, PaymentStatus, Reservation, ReservationStatus,
    ReserveRequest, ValidOrder,
};
use ordertrail_shared::http::ServiceClient;
use ordertrail_shared::problem::Problem;
use tracing::Instrument;
use tracing::field::Empty;

use self::compensation::{Step, Undo};
use self::steps::{StepError, retry};
use crate::domain::{Failure, Outcome};
use crate::metrics::OrderMetrics;
use crate::store::{Claim, Fenced, Store};

/// How long the work on one order may hold its claim (`crate::claim::hold`), unless a test
/// says otherwise (`Saga::with_time_limit`). Well beyond the longest a saga can take while
/// every call it makes times out: five steps (reserve, charge, commit, refund, release) of
/// three attempts of at most 5 s each (`ServiceClient`'s timeout) with their backoffs, under
/// 80 s. Only work hung beyond those timeouts (a statement the database never answers, say)
/// reaches it, and is then given up for the sweep.
pub const TIME_LIMIT: Duration = Duration::from_secs(180);

/// The saga and the clients of the services it orchestrates.
#[derive(Debug, Clone)]
pub struct Saga {
    store: Store,
    inventory: ServiceClient,
    payment: ServiceClient,
    metrics: OrderMetrics,
    time_limit: Duration,
}

impl Saga {
    /// A saga over `store`, calling `inventory` and `payment`.
    pub fn new(store: Store, inventory: ServiceClient, payment: ServiceClient) -> Self {
        Self {
            store,
            inventory,
            payment,
            metrics: OrderMetrics::global(),
            time_limit: TIME_LIMIT,
        }
    }

    /// This saga, giving up the work on an order after `time_limit` instead of
    /// [`TIME_LIMIT`].
    #[cfg(test)]
    pub(crate) fn with_time_limit(self, time_limit: Duration) -> Self {
        Self { time_limit, ..self }
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

    /// How long the work on one order may hold its claim.
    pub(crate) fn time_limit(&self) -> Duration {
        self.time_limit
    }

    /// Runs the saga for the pending order under `claim`.
    #[tracing::instrument(name = "checkout", skip_all, fields(order.id = %claim.order_id(), order.total_cents = Empty))]
    pub async fn checkout(&self, claim: &Claim, order: ValidOrder) -> Result<Outcome, Fenced> {
        let order_id = claim.order_id();
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
                return self.fail(claim, Failure::interrupted(), undo).await;
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
                return self.fail(claim, failure, undo).await;
            }
        };
        tracing::Span::current().record("order.total_cents", reservation.total_cents);
        self.store
            .set_reserved(claim, &reservation.items, reservation.total_cents)
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
                    .set_status(claim, OrderStatus::Paid, None)
                    .await?;
            }
            // Captured before and refunded since: this order has been given up.
            Ok(_) => {
                let undo = Undo::after(Step::Charge, false);
                return self.fail(claim, Failure::interrupted(), undo).await;
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
                return self.fail(claim, failure, undo).await;
            }
        }
        self.confirm(claim, reservation.total_cents).await
    }

    /// Commits the stock of the paid order under `claim`, whose total is `total_cents`, and
    /// confirms it. If inventory cannot be reached the order stays `paid` for the sweep; if
    /// the reservation is gone, the payment is refunded.
    pub(crate) async fn confirm(&self, claim: &Claim, total_cents: i64) -> Result<Outcome, Fenced> {
        let order_id = claim.order_id();
        let path = format!("/reservations/{order_id}/commit");
        match retry::<Reservation>(|| {
            self.inventory
                .post("/reservations/{order_id}/commit", &path)
        })
        .await
        {
            Ok(_) => {
                let confirmed = order_id.to_owned();
                self.end(claim, OrderStatus::Confirmed, None, move |metrics| {
                    // Counted at once: the order is confirmed whether or not it can be read
                    // back, and no later worker counts a confirmed order.
                    metrics.confirmed(total_cents);
                    // An audit event: kept whatever the log sampling, so that confirmed and
                    // failed orders can be counted from the logs (the checkout failure rate
                    // alert).
                    ordertrail_shared::audit!(
                        "order-confirmed",
                        order.id = %confirmed,
                        order.status = "confirmed",
                        "order confirmed"
                    );
                })
                .await?;
                Ok(Outcome::Confirmed(self.store.order(order_id).await?))
            }
            Err(err @ StepError::Refused { .. }) => {
                let undo = Undo::after(Step::Commit, err.maybe_applied());
                self.fail(claim, Failure::reservation_lost(), undo).await
            }
            Err(StepError::Unreachable { .. }) => {
                tracing::warn!(
                    order.status = "paid",
                    "stock not committed yet; the recovery sweep will"
                );
                Ok(Outcome::Pending(self.still_open(claim).await?))
            }
        }
    }

    /// Moves the order under `claim` to its final `status` (with `reason` when it failed) and,
    /// once that took effect, runs `then`, which counts the order and writes its audit event:
    /// the two together, through [`settle`], or neither when the claim was lost.
    pub(crate) async fn end(
        &self,
        claim: &Claim,
        status: OrderStatus,
        reason: Option<String>,
        then: impl FnOnce(&OrderMetrics) + Send + 'static,
    ) -> Result<(), Fenced> {
        let (store, metrics, claim) = (self.store.clone(), self.metrics.clone(), claim.clone());
        settle(async move {
            store.set_status(&claim, status, reason.as_deref()).await?;
            then(&metrics);
            Ok(())
        })
        .await
    }

    /// The order under `claim`, which this worker leaves open. Should it read final, another
    /// worker ended it, which it could only do holding the claim: this one lost it. So a final
    /// [`Outcome`] always means that this worker's own write ended the order (the sweep counts
    /// its recoveries by that).
    async fn still_open(&self, claim: &Claim) -> Result<Order, Fenced> {
        let order = self.store.order(claim.order_id()).await?;
        if order.status.is_terminal() {
            return Err(Fenced::ClaimLost);
        }
        Ok(order)
    }

    /// Ends the order under `claim`, which the checkout left in `status` (the service
    /// stopped, or a compensation could not be sent), with `failure`: whatever its next step
    /// may have done is undone with the rest, as [`Saga::fail`] does.
    pub(crate) async fn fail_stalled(
        &self,
        claim: &Claim,
        status: OrderStatus,
        failure: Failure,
    ) -> Result<Outcome, Fenced> {
        // The step may have been applied: its answer was never recorded.
        let undo = Undo::after(Step::at(status), true);
        self.fail(claim, failure, undo).await
    }
}

/// Runs `write` (a final write under a claim, and what is counted and logged once it took
/// effect) to its end, in a task of its own that the caller awaits, within the current span.
///
/// `crate::claim::hold` drops the work on an order when its claim is lost or its time runs
/// out, at whatever await the work has reached. Were a final write dropped after the database
/// committed it and before its answer came back, the order would end uncounted and without its
/// audit event, and no later worker counts an order that has ended. Dropping the caller does
/// not cancel a spawned task, so a write and what follows it happen together or not at all; the
/// write is still fenced, so that a claim lost before it ran makes it change, and count,
/// nothing. (A `counted` flag kept with the status, and a sweep counting the orders that ended
/// uncounted, would also cover a crash between the two, for a column, a write per order and a
/// query per sweep; a crash loses its process's unexported counts anyway.)
pub(crate) async fn settle<T: Send + 'static>(
    write: impl Future<Output = T> + Send + 'static,
) -> T {
    match tokio::spawn(write.in_current_span()).await {
        Ok(value) => value,
        // Nothing aborts the task: a join error is its panic, passed on.
        Err(err) => std::panic::resume_unwind(err.into_panic()),
    }
}

/// The problem's detail, else its title.
fn detail(problem: &Problem) -> String {
    problem
        .detail
        .clone()
        .unwrap_or_else(|| problem.title.clone())
}
