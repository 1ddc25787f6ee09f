//! Why a checkout did not go through, as the client is told and as the order keeps it.

use axum::http::StatusCode;

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
