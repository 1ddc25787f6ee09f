//! The checkout saga: reserve stock, charge the card, commit the stock; compensate in reverse.
//!
//! Every step is idempotent on the order id at its service, so a step whose answer was lost
//! is simply retried, and an order interrupted by a crash is finished on the next start.

use std::time::Duration;

use axum::http::StatusCode;
use ordertrail_shared::api::{
    ChargeRequest, Order, OrderStatus, Payment, PlaceOrder, Reservation, ReserveRequest,
};
use ordertrail_shared::http::{Call, ServiceClient};
use ordertrail_shared::problem::Problem;
use ordertrail_shared::telemetry::record_error;
use serde::de::DeserializeOwned;
use tracing::Instrument;
use tracing::field::Empty;

use crate::store::Store;

/// How often an idempotent step is tried before the saga gives up on its service.
const ATTEMPTS: u32 = 3;
/// The pause before the first retry; it doubles each time.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// How often open orders are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(30);
/// An open order untouched this long is stalled, not running: well beyond the longest saga
/// (every step's attempts timing out).
const STALLED_AFTER: Duration = Duration::from_secs(120);

/// Why a checkout did not go through.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Failure {
    /// Not enough stock.
    #[error("out of stock: {0}")]
    OutOfStock(String),
    /// A line names no product in the catalogue.
    #[error("unknown product: {0}")]
    UnknownProduct(String),
    /// The card was declined, with the payment service's reason.
    #[error("payment declined: {0}")]
    Declined(String),
    /// A service did not answer (or answered 5xx) on every attempt.
    #[error("{0} service unavailable")]
    Unavailable(&'static str),
    /// The checkout stalled (the order service stopped, or a service stayed down) and was
    /// abandoned by the recovery sweep.
    #[error("checkout interrupted before it finished")]
    Interrupted,
}

impl Failure {
    /// The status the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::OutOfStock(_) => StatusCode::CONFLICT,
            Self::UnknownProduct(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Declined(_) => StatusCode::PAYMENT_REQUIRED,
            Self::Unavailable(_) | Self::Interrupted => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A short name for `error.type` and the problem's `reason`.
    pub fn kind(&self) -> &str {
        match self {
            Self::OutOfStock(_) => "out_of_stock",
            Self::UnknownProduct(_) => "unknown_product",
            Self::Declined(reason) => reason,
            Self::Unavailable(_) => "service_unavailable",
            Self::Interrupted => "interrupted",
        }
    }
}

/// What a call to another service came to, short of success.
enum StepError {
    /// The service said no (4xx), with its problem document.
    Refused(Problem),
    /// No usable answer: unreachable, timed out, or 5xx.
    Unreachable,
}

/// The saga and the clients of the services it orchestrates.
#[derive(Debug, Clone)]
pub struct Saga {
    store: Store,
    inventory: ServiceClient,
    payment: ServiceClient,
}

/// A checkout's end, short of confirmation.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    /// The order ended `failed`.
    #[error("{failure}")]
    Failed {
        /// The failed order.
        order: Box<Order>,
        /// Why.
        failure: Failure,
    },
    /// The orders database failed.
    #[error("database error")]
    Database(#[from] sqlx::Error),
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

    /// Runs the saga for the pending order `order_id`, to `confirmed` or `failed`.
    #[tracing::instrument(name = "checkout", skip_all, fields(order.id = %order_id, order.total_cents = Empty))]
    pub async fn checkout(
        &self,
        order_id: &str,
        request: PlaceOrder,
    ) -> Result<Order, CheckoutError> {
        let span = tracing::Span::current();
        let reserve = ReserveRequest {
            order_id: order_id.to_owned(),
            items: request.items,
        };
        let reservation: Reservation = match retry(|| {
            self.inventory
                .post("/reservations", "/reservations")
                .json(&reserve)
        })
        .await
        {
            Ok(reservation) => reservation,
            Err(StepError::Refused(problem)) if problem.status == 409 => {
                return self
                    .fail(order_id, Failure::OutOfStock(detail(&problem)), false)
                    .await;
            }
            Err(StepError::Refused(problem)) => {
                return self
                    .fail(order_id, Failure::UnknownProduct(detail(&problem)), false)
                    .await;
            }
            // The reservation may have been made with its answer lost: release to be sure.
            Err(StepError::Unreachable) => {
                return self
                    .fail(order_id, Failure::Unavailable("inventory"), true)
                    .await;
            }
        };
        span.record("order.total_cents", reservation.total_cents);
        self.store
            .set_reserved(order_id, &reservation.items, reservation.total_cents)
            .await?;

        let charge = ChargeRequest {
            order_id: order_id.to_owned(),
            amount_cents: reservation.total_cents,
            card: request.payment,
        };
        match retry(|| self.payment.post("/payments", "/payments").json(&charge)).await {
            Ok(Payment { .. }) => {
                self.store
                    .set_status(order_id, OrderStatus::Paid, None)
                    .await?
            }
            Err(StepError::Refused(problem)) => {
                let reason = problem
                    .extensions
                    .get("reason")
                    .and_then(|r| r.as_str())
                    .unwrap_or("card_declined");
                return self
                    .fail(order_id, Failure::Declined(reason.to_owned()), true)
                    .await;
            }
            Err(StepError::Unreachable) => {
                return self
                    .fail(order_id, Failure::Unavailable("payment"), true)
                    .await;
            }
        }
        drop(charge);
        self.confirm(order_id).await
    }

    /// Commits the stock of a paid order and confirms it; if the stock cannot be committed,
    /// refunds the payment and fails the order.
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
            Err(_) => {
                let refund = format!("/payments/{order_id}/refund");
                if retry::<Payment>(|| self.payment.post("/payments/{order_id}/refund", &refund))
                    .await
                    .is_err()
                {
                    tracing::error!(error.type = "refund_failed", "paid order could not be refunded; it needs a manual refund");
                }
                self.fail(order_id, Failure::Unavailable("inventory"), true)
                    .await
            }
        }
    }

    /// Compensates (releases the reservation when one may exist) and marks the order failed.
    async fn fail(
        &self,
        order_id: &str,
        failure: Failure,
        release: bool,
    ) -> Result<Order, CheckoutError> {
        let span = tracing::Span::current();
        record_error(&span, failure.kind(), &failure);
        if release {
            let path = format!("/reservations/{order_id}/release");
            match retry::<Reservation>(|| {
                self.inventory
                    .post("/reservations/{order_id}/release", &path)
            })
            .await
            {
                // 404: nothing was reserved, so there is nothing to give back.
                Ok(_) | Err(StepError::Refused(_)) => {}
                Err(StepError::Unreachable) => {
                    // The order stays open; the next start of this service releases it.
                    tracing::error!(error.type = "release_failed", "reservation could not be released");
                    return Err(CheckoutError::Failed {
                        order: Box::new(self.order(order_id).await?),
                        failure,
                    });
                }
            }
        }
        self.store
            .set_status(order_id, OrderStatus::Failed, Some(&failure.to_string()))
            .await?;
        tracing::warn!(order.status = "failed", error.type = failure.kind(), error.message = %failure, "order failed");
        Err(CheckoutError::Failed {
            order: Box::new(self.order(order_id).await?),
            failure,
        })
    }

    async fn order(&self, order_id: &str) -> Result<Order, sqlx::Error> {
        self.store
            .get(order_id)
            .await?
            .ok_or(sqlx::Error::RowNotFound)
    }

    /// Every [`SWEEP_EVERY`], finishes the sagas that have stood still for [`STALLED_AFTER`]
    /// (a crash, or a compensation whose service was down): paid orders are confirmed (or
    /// refunded), earlier ones have their reservation released and fail. An order whose
    /// services are still unreachable stays open for the next sweep.
    pub async fn keep_recovering(self) {
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        loop {
            sweep.tick().await;
            self.recover_stalled_orders(STALLED_AFTER).await;
        }
    }

    pub(crate) async fn recover_stalled_orders(&self, stalled_after: Duration) {
        let open = match self.store.open_orders(stalled_after).await {
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
            let outcome = async {
                match self.order(&order_id).await?.status {
                    OrderStatus::Paid => self.confirm(&order_id).await,
                    _ => self.fail(&order_id, Failure::Interrupted, true).await,
                }
            }
            .instrument(span)
            .await;
            let order = match &outcome {
                Ok(order) => order.status,
                Err(CheckoutError::Failed { order, .. }) => order.status,
                Err(err) => {
                    tracing::error!(order.id = %order_id, error = err as &dyn std::error::Error, "open order not finished");
                    continue;
                }
            };
            if !order.is_terminal() {
                continue;
            }
            // A client retrying with its idempotency key now gets this answer instead of 409.
            let (status, body) = crate::error::checkout_answer(outcome);
            if let Err(err) = self
                .store
                .save_response(&order_id, status.as_u16(), &body)
                .await
            {
                tracing::error!(order.id = %order_id, error = &err as &dyn std::error::Error, "answer of a recovered order not kept");
            }
            tracing::info!(order.id = %order_id, order.status = order.as_str(), "open order recovered");
        }
    }
}

/// The problem's detail, else its title.
fn detail(problem: &Problem) -> String {
    problem
        .detail
        .clone()
        .unwrap_or_else(|| problem.title.clone())
}

/// Sends the call built by `make` until it gets an answer that is not a 5xx, at most
/// [`ATTEMPTS`] times with exponential backoff. Only idempotent calls may be retried.
async fn retry<T: DeserializeOwned>(make: impl Fn() -> Call) -> Result<T, StepError> {
    let mut backoff = FIRST_BACKOFF;
    for attempt in 1..=ATTEMPTS {
        match send(make()).await {
            Err(StepError::Unreachable) if attempt < ATTEMPTS => {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            outcome => return outcome,
        }
    }
    Err(StepError::Unreachable)
}

async fn send<T: DeserializeOwned>(call: Call) -> Result<T, StepError> {
    let response = call.send().await.map_err(|_| StepError::Unreachable)?;
    let status = response.status();
    if status.is_success() {
        return response.json().await.map_err(|_| StepError::Unreachable);
    }
    if status.is_server_error() {
        return Err(StepError::Unreachable);
    }
    let problem = response
        .json::<Problem>()
        .await
        .unwrap_or_else(|_| Problem::new(status, status.canonical_reason().unwrap_or("error")));
    Err(StepError::Refused(problem))
}
