//! What a checkout comes to: an [`Outcome`], and the [`Failure`] of a failed one.
//!
//! Plain values, below everything else in the crate: the saga and the recovery sweep produce
//! them, the store keeps a failure with its order, and `idempotency` turns an outcome into the
//! answer a client gets. A checkout that went wrong is an outcome, not an error: the order exists
//! and says how it ended. Only a database failure is an error.

use axum::http::StatusCode;
use ordertrail_shared::api::Order;

/// How a checkout ended, for now.
#[derive(Debug)]
pub enum Outcome {
    /// Stock reserved, card charged, stock committed: the order is `confirmed` (201).
    Confirmed(Order),
    /// The order is `paid`, and its stock is committed once inventory answers (202): the
    /// recovery sweep will. A success, though not yet a final one.
    Pending(Order),
    /// The checkout failed: the order is `failed`, or still open while its compensation waits
    /// for a service (the sweep finishes it with the same failure).
    Failed {
        /// The order.
        order: Order,
        /// Why.
        failure: Failure,
    },
}

impl Outcome {
    /// The order, as the checkout left it.
    pub fn order(&self) -> &Order {
        match self {
            Self::Confirmed(order) | Self::Pending(order) | Self::Failed { order, .. } => order,
        }
    }

    /// True when the order is confirmed or failed, so this outcome will never change.
    pub fn is_final(&self) -> bool {
        self.order().status.is_terminal()
    }
}

/// A checkout's failure: the status the client gets, a machine-readable code (the problem's
/// `reason`) and a sentence for humans. It is stored with the order before compensation runs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct Failure {
    /// The HTTP status of the answer.
    pub status: StatusCode,
    /// `out_of_stock`, `unknown_product`, a decline reason such as `card_declined`,
    /// `service_unavailable`, `reservation_lost` or `interrupted`.
    pub code: String,
    /// What happened, for a human.
    pub detail: String,
}

impl Failure {
    fn new(status: StatusCode, code: &str, detail: String) -> Self {
        Self {
            status,
            code: code.to_owned(),
            detail,
        }
    }

    /// Not enough stock.
    pub fn out_of_stock(detail: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "out_of_stock",
            format!("out of stock: {detail}"),
        )
    }

    /// The inventory refused the lines (an unknown product, say).
    pub fn unknown_product(detail: &str) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_product",
            format!("unknown product: {detail}"),
        )
    }

    /// The card was declined, with the payment service's reason.
    pub fn declined(reason: &str) -> Self {
        Self::new(
            StatusCode::PAYMENT_REQUIRED,
            reason,
            format!("payment declined: {reason}"),
        )
    }

    /// A service did not answer (or answered 5xx) on every attempt.
    pub fn unavailable(service: &str) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            format!("{service} service unavailable"),
        )
    }

    /// The stock of a paid order was no longer reserved; the payment is refunded.
    pub fn reservation_lost() -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "reservation_lost",
            "the stock reservation was lost; the payment is refunded".to_owned(),
        )
    }

    /// The checkout stalled (the order service stopped mid-way) and the recovery sweep ended it.
    pub fn interrupted() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "interrupted",
            "checkout interrupted before it finished".to_owned(),
        )
    }

    /// A failure as stored with its order.
    pub fn stored(status: i64, code: String, detail: String) -> Self {
        let status = u16::try_from(status)
            .ok()
            .and_then(|s| StatusCode::from_u16(s).ok());
        Self {
            status: status.unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            code,
            detail,
        }
    }
}
